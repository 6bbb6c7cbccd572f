// Aggregator apply rate per replica, scale-out and failover (issues #5, #19), end-to-end latency.
//
// Apply rate: replication batches from 16 gateways (2 in each of the 8 partitions) are put into
// TELEMETRY first (outside the measurement), then the target consumes them and applies them to the
// views; events/s is applied events over the time from the first to the last applied group. Every
// row gets its own nats-server (with the partition mapping) and the same backlog. In-process peers:
// a bare pull consumer that only decodes and acks (the ceiling set by JetStream and protobuf
// decoding), and the aggregator with the in-memory view store (what KV costs). Scale-out: 1, 2 and 4
// aggregator replicas, each its own process (aggregate-replicas.ts), partitioned by gateway as cloud
// replicas are: uncapped (the machine has the cores it has) and each held to the same CPU share with
// a cgroup v1 cpu quota (cpu-cgroup.ts; the targets are about these). Failover: aggregate-failover.ts.
//
// End-to-end latency: after each replica row has drained the backlog, fresh batches are published
// straight to iot.<gw>.telemetry (js.publish, as a gateway's uplink does) at a steady rate with
// ingestTsMs = now; the replicas report every observation of their own e2e latency histogram
// (cloud_aggregator_e2e_latency_seconds: newest event of a batch, ingest -> applied) and the
// quantiles are taken over those exact values.
import { cpus } from 'node:os'
import { jetstream, jetstreamManager, AckPolicy } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { Aggregator } from '../cloud/apply/aggregator.ts'
import { startNats } from '../devkit/index.ts'
import { openFleetStore } from '../cloud/apply/tiers/tier-store.ts'
import { createLogger } from '../cloud/log.ts'
import { createCloudMetrics } from '../cloud/metrics.ts'
import { provisionStreams } from '../cloud/provision.ts'
import { provisionViews } from '../cloud/provision.ts'
import { MemoryViewStore } from '../cloud/store/view-store.ts'
import { STREAMS, partitionMappingsConfig, v1 } from '../proto/index.ts'
import { cpuMeter } from './proc-cpu.ts'
import type { BenchOptions, BenchReport } from './bench-types.ts'
import { fillBacklog, settingsFor } from './aggregate-load.ts'
import { runFailover } from './aggregate-failover.ts'
import { OTHER_CPU_WARN_PCT, TARGET_PER_REPLICA, cpuShares, round, runReplicas, settle, type Result } from './aggregate-replicas.ts'
import { cgroupUnavailable } from './cpu-cgroup.ts'

export async function aggregate (opts: BenchOptions): Promise<BenchReport> {
  const s = settingsFor(opts.quick)
  const results: Result[] = []
  const failures: string[] = []
  const noCaps = cgroupUnavailable()
  if (noCaps) failures.push(`capped rows not run: ${noCaps}`)
  const targets = ['consumer only (decode + ack)', 'aggregator, memory store', 'aggregator, KV store', ...s.replicaCounts.map((n) => `replicas:${n}`), ...(noCaps ? [] : s.replicaCounts.map((n) => `capped:${n}`))]
  for (const target of targets) {
    const nats = await startNats({ config: partitionMappingsConfig(s.partitions) })
    try {
      // As the cloud connects (cloud/cloud.ts): no async stack trace per request.
      const nc = await connect({ servers: nats.url, noAsyncTraces: true })
      await provisionStreams(nc)
      await provisionViews(nc)
      const js = jetstream(nc)
      await fillBacklog(js, s)
      const total = s.backlogEvents
      if (target.startsWith('replicas:') || target.startsWith('capped:')) {
        const [kind, n] = target.split(':')
        results.push(await runReplicas(nats.url, nats.pid, js, Number(n), s, failures, kind === 'capped' ? s.capCores : null))
        await nc.close()
        continue
      }
      await settle({ nats: nats.pid, bench: process.pid })
      const meter = cpuMeter({ nats: nats.pid, bench: process.pid })
      const t0 = performance.now()
      let seconds: number
      let meanGroup: number | null = null
      let conflicts: number | null = null
      if (target.startsWith('consumer only')) {
        const jsm = await jetstreamManager(nc)
        await jsm.consumers.add(STREAMS.telemetry.name, { durable_name: 'bare', ack_policy: AckPolicy.Explicit })
        const c = await js.consumers.get(STREAMS.telemetry.name, 'bare')
        let seen = 0
        const iter = await c.consume({ max_messages: 64 })
        for await (const m of iter) {
          seen += v1.ReplicationBatch.decode(m.data).events.length
          m.ack()
          if (seen >= total) break
        }
        seconds = (performance.now() - t0) / 1000
      } else {
        const store = target.endsWith('memory store') ? new MemoryViewStore() : (await openFleetStore(nc, 'VIEWS')).store
        const metrics = createCloudMetrics({ defaultMetrics: false })
        const agg = new Aggregator(nc, store, metrics, createLogger('warn'), { streams: ['telemetry'], partitions: s.partitions })
        await agg.start()
        while (agg.stats().applied < total) await new Promise((resolve) => setTimeout(resolve, 5))
        seconds = (performance.now() - t0) / 1000
        const flush = (await metrics.flushSeconds.get()).values
        const count = flush.find((v) => v.metricName?.endsWith('_count'))?.value ?? 0
        const sum = flush.find((v) => v.metricName?.endsWith('_sum'))?.value ?? 0
        meanGroup = count ? Math.round(sum / count * 1e4) / 10 : null
        conflicts = agg.stats().conflicts
        await agg.close()
      }
      results.push({ target, replicas: 1, cpuCapCores: null, events: total, seconds: round(seconds, 3), eventsPerSec: Math.round(total / seconds), eventsPerSecPerReplica: Math.round(total / seconds), meanGroupApplyMs: meanGroup, conflicts, perReplica: null, latency: null, cpuPct: cpuShares(meter.stop(), ['nats', 'bench']) })
      await nc.close()
    } finally {
      await nats.cleanup()
    }
  }
  const failover = await runFailover(s)
  failures.push(...failover.failures)
  const bare = results[0].eventsPerSec
  const rowOf = (n: number, capped: boolean): Result | undefined => results.find((r) => r.perReplica && r.replicas === n && (r.cpuCapCores !== null) === capped)
  /** N replicas vs one, same caps: total events/s. */
  const scale = (n: number, capped: boolean): number | null => {
    const one = rowOf(1, capped)
    const r = rowOf(n, capped)
    return one && r ? round(r.eventsPerSec / one.eventsPerSec, 2) : null
  }
  const vsOne = (r: Result): string => {
    const one = rowOf(1, r.cpuCapCores !== null)
    return !one || !r.perReplica ? '-' : (r.eventsPerSec / one.eventsPerSec).toFixed(2) + '×'
  }
  const steadyConflicts = results.filter((r) => r.perReplica).reduce((n, r) => n + (r.latency?.casConflicts ?? 0), 0)
  const ms = (x: number | null | undefined): string => x === null || x === undefined ? '-' : x.toFixed(0)
  const perReplicaCell = (r: Result): string => r.perReplica ? r.perReplica.map((p) => p.eventsPerSec.toLocaleString('en-US')).join(' + ') : r.eventsPerSecPerReplica.toLocaleString('en-US')
  return {
    settings: { ...s, natsServer: 'one nats-server per row, fresh store, same backlog, partition mapping P = settings.partitions', replicaProcess: 'bench/aggregate-replica.ts' },
    results: [...results, { target: 'failover', ...failover }],
    ratios: [
      ...results.map((r) => ({ target: r.target, vsConsumerOnly: round(r.eventsPerSec / bare, 2) })),
      ...s.replicaCounts.filter((n) => n > 1).flatMap((n) => [
        { target: `${n} replicas vs one, each capped at ${s.capCores} core (events/s total)`, ratio: scale(n, true), goal: n === 2 ? 1.8 : n === 4 ? 3.4 : null },
        { target: `${n} replicas vs one, uncapped (events/s total)`, ratio: scale(n, false) },
      ]),
      { target: 'one replica uncapped vs the 150k events/s target', ratio: rowOf(1, false) ? round(rowOf(1, false)!.eventsPerSec / TARGET_PER_REPLICA, 2) : null },
      { target: 'compare-and-set conflicts under live load, all replica rows', count: steadyConflicts },
    ],
    table: {
      columns: ['target', 'events', 'seconds', 'events/s', 'events/s per replica', 'CAS conflicts (drain)', 'CAS conflicts (live)', 'vs consumer only', 'vs 1 replica (same caps)', 'e2e p50 (ms)', 'e2e p99 (ms)', 'other CPU % (drain)'],
      rows: results.map((r) => [
        r.target, String(r.events), r.seconds.toFixed(2), r.eventsPerSec.toLocaleString('en-US'), perReplicaCell(r),
        r.conflicts === null ? '-' : String(r.conflicts), r.latency ? String(r.latency.casConflicts) : '-', (r.eventsPerSec / bare).toFixed(2) + '×', vsOne(r), ms(r.latency?.p50Ms), ms(r.latency?.p99Ms), r.cpuPct.other === null ? '-' : String(r.cpuPct.other),
      ]),
    },
    notes: [
      `Backlog: ${s.backlogEvents.toLocaleString('en-US')} events in ${s.batches} batches of ${s.eventsPerBatch} from ${s.gateways} gateways (${s.gateways / s.partitions} in each of ${s.partitions} partitions) x ${s.devicesPerGateway} devices, in the stream before the clock starts; one fresh nats-server per row. Target: >= ${TARGET_PER_REPLICA.toLocaleString('en-US')} events/s for one replica.`,
      'The first three rows run in this process; the replica rows run each replica as its own process (own connection), each holding its share of the partitions (leases), sharing the KV views; per-replica events/s = its applied events over the shared wall time from the first applied group to the last.',
      `Capped rows: each replica process in its own cgroup v1 cpu group, cpu.cfs_quota_us/cpu.cfs_period_us = ${s.capCores} core (BENCH_REPLICA_CORES); nats-server and this process uncapped.`,
      ...results.filter((r) => r.latency).map((r) => {
        const l = r.latency!
        return `${r.target}, live: ${l.events} events (${l.achievedRatePerSec}/s) in ${l.batches} batches; e2e p50 ${ms(l.p50Ms)} ms, p99 ${ms(l.p99Ms)} ms, max ${ms(l.maxMs)} ms; p50 first/second half ${ms(l.p50FirstHalfMs)}/${ms(l.p50SecondHalfMs)} ms; ${l.groupsPerSec} groups/s of ${l.meanBatchesPerGroup ?? '-'} batches; ${l.casConflicts} CAS conflicts; CPU % of a core ${JSON.stringify(l.cpuPct)}.`
      }),
      ...results.filter((r) => r.perReplica).map((r) => `${r.target}, drain: CPU % of a core ${JSON.stringify(r.cpuPct)}.`),
      ...results.filter((r) => (r.cpuPct.other ?? 0) > OTHER_CPU_WARN_PCT || (r.latency?.cpuPct.other ?? 0) > OTHER_CPU_WARN_PCT)
        .map((r) => `POSSIBLY SKEWED: ${r.target}: ${r.cpuPct.other}% (drain) / ${r.latency?.cpuPct.other ?? '-'}% (live) of a core busy outside the measured processes (other tenants, kernel networking) on a ${cpus().length}-core machine.`),
      `Failover (lease TTL ${failover.leaseTtlMs} ms, 2 uncapped replicas, live load): SIGKILL -> the victim's partitions applied again by the survivor: ${failover.runs.map((x) => `${x} ms`).join(', ') || 'not measured'}; p50 ${ms(failover.p50Ms)} ms, max ${ms(failover.maxMs)} ms over ${failover.runs.length} runs.`,
      `e2e latency: after the backlog, ${s.live.ratePerSec} events/s live (${s.live.gateways} gateways, a batch each every ${s.live.tickMs} ms, ingestTsMs = publish time), ${s.live.warmupMs} ms warm-up then ${s.live.durationMs} ms measured; every observation of cloud_aggregator_e2e_latency_seconds (newest event of a batch, ingest -> applied), exact quantiles over all replicas.`,
    ],
    failures,
  }
}
