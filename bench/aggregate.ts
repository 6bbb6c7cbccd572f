// Aggregator apply rate per replica and end-to-end latency (issue #5).
//
// Apply rate: replication batches from several gateways are put into TELEMETRY first (outside the
// measurement), then the target consumes them and applies them to the views; events/s is applied
// events over the time from start to the last applied group. Every row gets its own nats-server with
// the same backlog. In-process peers: a bare pull consumer that only decodes and acks (the ceiling
// set by JetStream and protobuf decoding), and the aggregator with the in-memory view store (what KV
// costs). Scale-out: one and then two aggregator replicas, each its own process (aggregate-replica.ts)
// with its own connection, sharing the durable consumer and the KV view store, as cloud replicas do;
// the ratio two/one is of the total events/s.
//
// End-to-end latency: after each replica row has drained the backlog, fresh batches are published
// straight to iot.<gw>.telemetry (js.publish, as a gateway's uplink does) at a steady rate with
// ingestTsMs = now; the replicas report every observation of their own e2e latency histogram
// (cloud_aggregator_e2e_latency_seconds: newest event of a batch, ingest -> applied) and the
// quantiles are taken over those exact values.
import { spawn, type ChildProcess } from 'node:child_process'
import { cpus } from 'node:os'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { jetstream, jetstreamManager, AckPolicy, type JetStreamClient } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { Aggregator } from '../cloud/apply/aggregator.ts'
import { startNats } from '../devkit/index.ts'
import { KvViewStore } from '../cloud/store/kv-view-store.ts'
import { createLogger } from '../cloud/log.ts'
import { createCloudMetrics } from '../cloud/metrics.ts'
import { provisionStreams } from '../cloud/provision.ts'
import { provisionViews } from '../cloud/provision.ts'
import { MemoryViewStore } from '../cloud/store/view-store.ts'
import { STREAMS, v1 } from '../proto/index.ts'
import { killOnExit } from './children.ts'
import { cpuMeter, otherCpuPct } from './proc-cpu.ts'
import type { BenchOptions, BenchReport } from './bench-types.ts'
import { fillBacklog, liveLoad, settingsFor, type Settings } from './aggregate-load.ts'

const TARGET_PER_REPLICA = 150_000
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const REPLICA_SCRIPT = 'bench/aggregate-replica.ts'
/** Busy CPU outside the measured processes above which a row is flagged as skewed (% of a core). */
const OTHER_CPU_WARN_PCT = 15

interface Replica { pid: number, applied: number, eventsPerSec: number, conflicts: number, duplicates: number, flushes: number }
interface Latency {
  batches: number
  events: number
  publishErrors: number
  p50Ms: number | null
  p99Ms: number | null
  maxMs: number | null
  /** p50 of the first and of the second half of the window (by observation order): a rise means the replicas fall behind. */
  p50FirstHalfMs: number | null
  p50SecondHalfMs: number | null
  /** Batches per apply group and groups per second over the window (all replicas). */
  meanBatchesPerGroup: number | null
  groupsPerSec: number
  casConflicts: number
  achievedRatePerSec: number
  /** % of one core per process over the live window; other = the rest of the machine. */
  cpuPct: Record<string, number | null>
}
interface Result {
  target: string
  replicas: number
  events: number
  seconds: number
  eventsPerSec: number
  eventsPerSecPerReplica: number
  meanGroupApplyMs: number | null
  conflicts: number | null
  perReplica: Replica[] | null
  latency: Latency | null
  /** % of one core per process while draining the backlog; other = the rest of the machine. */
  cpuPct: Record<string, number | null>
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const round = (x: number, digits: number): number => Math.round(x * 10 ** digits) / 10 ** digits

/** A replica process and the latest of its JSON lines. */
class ReplicaProc {
  readonly child: ChildProcess
  stats: Record<string, number> = {}
  private readonly waiters: Array<{ type: string, resolve: (m: Record<string, unknown>) => void }> = []
  stderr = ''
  private readonly forget: () => void

  constructor (url: string) {
    this.child = spawn(process.execPath, ['--import', 'tsx', REPLICA_SCRIPT, url], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] })
    this.forget = killOnExit(this.child.pid)
    this.child.stderr!.on('data', (d: Buffer) => { this.stderr = (this.stderr + d.toString()).slice(-4000) })
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      let m: Record<string, unknown>
      try { m = JSON.parse(line) as Record<string, unknown> } catch { return }
      if (m.type === 'stats' || m.type === 'done') this.stats = m as Record<string, number>
      for (let i = this.waiters.length - 1; i >= 0; i--) {
        if (this.waiters[i].type === m.type) this.waiters.splice(i, 1)[0].resolve(m)
      }
    })
    this.child.on('exit', () => this.forget())
  }

  next (type: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`replica ${this.child.pid}: no '${type}' within ${timeoutMs} ms; stderr: ${this.stderr}`)), timeoutMs)
      this.waiters.push({ type, resolve: (m) => { clearTimeout(timer); resolve(m) } })
    })
  }

  send (cmd: string): void { this.child.stdin!.write(cmd + '\n') }

  async stop (): Promise<Record<string, unknown>> {
    const done = this.next('done', 15_000)
    this.send('stop')
    try {
      return await done
    } catch (err) {
      if (this.child.exitCode === null) this.child.kill('SIGKILL')
      throw err
    }
  }
}

/** Rounded CPU shares plus what the machine spent outside the named processes. */
function cpuShares (cpu: Record<string, number | null>, names: string[]): Record<string, number | null> {
  const out: Record<string, number | null> = {}
  for (const n of names) out[n] = cpu[n] === null || cpu[n] === undefined ? null : Math.round(cpu[n]!)
  const other = otherCpuPct(cpu, names)
  out.other = other === null ? null : Math.round(other)
  return out
}

/**
 * Waits (at most maxMs) until the machine is quiet outside the given processes: the filled stream's
 * writeback and the replicas' start-up otherwise land in the first measured second. Returns the
 * busy CPU outside them in the last sample (% of a core).
 */
async function settle (pids: Record<string, number | null>, maxMs = 3000): Promise<number | null> {
  const deadline = performance.now() + maxMs
  let other: number | null = null
  do {
    const meter = cpuMeter(pids)
    await sleep(250)
    other = otherCpuPct(meter.stop(), Object.keys(pids))
  } while (other !== null && other > OTHER_CPU_WARN_PCT && performance.now() < deadline)
  return other
}

function quantile (sorted: number[], q: number): number | null {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]
}

/** n replica processes on one backlog: apply rate, then e2e latency under live load. */
async function runReplicas (url: string, natsPid: number | null, js: JetStreamClient, n: number, s: Settings, failures: string[]): Promise<Result> {
  const target = `aggregator x${n} process${n > 1 ? 'es' : ''}, KV store`
  const procs = Array.from({ length: n }, () => new ReplicaProc(url))
  try {
    await Promise.all(procs.map((p) => p.next('ready', 60_000)))
    const applied = (): number => procs.reduce((sum, p) => sum + (p.stats.applied ?? 0), 0)
    const pids: Record<string, number | null> = { nats: natsPid, bench: process.pid }
    procs.forEach((p, i) => { pids[`replica${i}`] = p.child.pid ?? null })
    const names = Object.keys(pids)
    await settle(pids)
    const meter = cpuMeter(pids)
    const t0 = Date.now()
    for (const p of procs) p.send('start')
    const deadline = performance.now() + s.drainTimeoutMs
    while (applied() < s.backlogEvents && performance.now() < deadline) await sleep(5)
    const drained = applied()
    const cpuPct = cpuShares(meter.stop(), names)
    if (drained < s.backlogEvents) failures.push(`${target}: only ${drained} of ${s.backlogEvents} events applied within ${s.drainTimeoutMs} ms`)
    // The last group that applied anything, by the replicas' own clocks (same machine).
    const t1 = Math.max(...procs.map((p) => p.stats.lastAppliedWallMs ?? 0))
    const seconds = Math.max(1, t1 - t0) / 1000
    const perReplica: Replica[] = procs.map((p) => ({
      pid: p.child.pid ?? -1,
      applied: p.stats.applied ?? 0,
      eventsPerSec: Math.round((p.stats.applied ?? 0) / seconds),
      conflicts: p.stats.conflicts ?? 0,
      duplicates: p.stats.duplicates ?? 0,
      flushes: p.stats.flushes ?? 0,
    }))
    if (drained > s.backlogEvents) failures.push(`${target}: ${drained} events applied for a backlog of ${s.backlogEvents} (applied twice?)`)

    // Live load: warm-up, then the measured window, then wait until it is all applied.
    const seqs = new Array<number>(s.live.gateways).fill(0)
    const warm = await liveLoad(js, s.live, s.live.warmupMs, seqs)
    const sumStat = (k: string): number => procs.reduce((sum, p) => sum + (p.stats[k] ?? 0), 0)
    const before = { batches: sumStat('batches'), flushes: sumStat('flushes'), conflicts: sumStat('conflicts') }
    for (const p of procs) p.send('lat-begin')
    const liveMeter = cpuMeter(pids)
    const live = await liveLoad(js, s.live, s.live.durationMs, seqs)
    const liveCpu = cpuShares(liveMeter.stop(), names)
    const expected = s.backlogEvents + warm.events + live.events - warm.errors - live.errors
    const liveDeadline = performance.now() + 10_000
    while (applied() < expected && performance.now() < liveDeadline) await sleep(10)
    if (applied() < expected) failures.push(`${target}: live load: ${applied()} of ${expected} events applied 10 s after the load stopped`)
    const lat = await Promise.all(procs.map(async (p) => { const m = p.next('lat'); p.send('lat-end'); return ((await m).seconds as number[]).map((x) => x * 1000) }))
    const window = { batches: sumStat('batches') - before.batches, flushes: sumStat('flushes') - before.flushes, conflicts: sumStat('conflicts') - before.conflicts }
    const ms = lat.flat().sort((a, b) => a - b)
    const half = (first: boolean): number[] => lat.flatMap((v) => first ? v.slice(0, v.length >> 1) : v.slice(v.length >> 1)).sort((a, b) => a - b)
    if (warm.errors + live.errors > 0) failures.push(`${target}: ${warm.errors + live.errors} live batches not acknowledged by JetStream`)
    const latency: Latency = {
      batches: ms.length,
      events: live.events,
      publishErrors: warm.errors + live.errors,
      p50Ms: quantile(ms, 0.5),
      p99Ms: quantile(ms, 0.99),
      maxMs: ms.length ? ms[ms.length - 1] : null,
      p50FirstHalfMs: quantile(half(true), 0.5),
      p50SecondHalfMs: quantile(half(false), 0.5),
      meanBatchesPerGroup: window.flushes > 0 ? round(window.batches / window.flushes, 1) : null,
      groupsPerSec: round(window.flushes / (s.live.durationMs / 1000), 1),
      casConflicts: window.conflicts,
      achievedRatePerSec: Math.round(live.events / (live.ms / 1000)),
      cpuPct: liveCpu,
    }
    const finals = await Promise.all(procs.map((p) => p.stop()))
    // While draining the backlog; those under live load are in latency.casConflicts.
    const conflicts = perReplica.reduce((sum, p) => sum + p.conflicts, 0)
    const dups = finals.reduce((sum, f) => sum + Number(f.duplicates ?? 0), 0)
    if (dups > 0) failures.push(`${target}: ${dups} events counted as duplicates (none were sent twice)`)
    return {
      target,
      replicas: n,
      events: drained,
      seconds: round(seconds, 3),
      eventsPerSec: Math.round(drained / seconds),
      eventsPerSecPerReplica: Math.round(drained / seconds / n),
      meanGroupApplyMs: null,
      conflicts,
      perReplica,
      latency,
      cpuPct,
    }
  } finally {
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL')
  }
}

export async function aggregate (opts: BenchOptions): Promise<BenchReport> {
  const s = settingsFor(opts.quick)
  const results: Result[] = []
  const failures: string[] = []
  const targets = ['consumer only (decode + ack)', 'aggregator, memory store', 'aggregator, KV store', ...s.replicaCounts.map((n) => `replicas:${n}`)]
  for (const target of targets) {
    const nats = await startNats()
    try {
      const nc = await connect({ servers: nats.url })
      await provisionStreams(nc)
      await provisionViews(nc)
      const js = jetstream(nc)
      await fillBacklog(js, s)
      const total = s.backlogEvents
      if (target.startsWith('replicas:')) {
        results.push(await runReplicas(nats.url, nats.pid, js, Number(target.split(':')[1]), s, failures))
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
        const store = target.endsWith('memory store') ? new MemoryViewStore() : await KvViewStore.open(nc, 'VIEWS')
        const metrics = createCloudMetrics({ defaultMetrics: false })
        const agg = new Aggregator(nc, store, metrics, createLogger('warn'), { streams: ['telemetry'] })
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
      results.push({ target, replicas: 1, events: total, seconds: round(seconds, 3), eventsPerSec: Math.round(total / seconds), eventsPerSecPerReplica: Math.round(total / seconds), meanGroupApplyMs: meanGroup, conflicts, perReplica: null, latency: null, cpuPct: cpuShares(meter.stop(), ['nats', 'bench']) })
      await nc.close()
    } finally {
      await nats.cleanup()
    }
  }
  const bare = results[0].eventsPerSec
  const one = results.find((r) => r.perReplica && r.replicas === 1)
  const two = results.find((r) => r.perReplica && r.replicas === 2)
  const twoVsOne = one && two ? { total: round(two.eventsPerSec / one.eventsPerSec, 2), perReplica: round(two.eventsPerSecPerReplica / one.eventsPerSecPerReplica, 2) } : null
  const vsOne = (r: Result): string => !one || !r.perReplica ? '-' : (r.eventsPerSec / one.eventsPerSec).toFixed(2) + '×'
  const ms = (x: number | null | undefined): string => x === null || x === undefined ? '-' : x.toFixed(0)
  const perReplicaCell = (r: Result): string => r.perReplica ? r.perReplica.map((p) => p.eventsPerSec.toLocaleString('en-US')).join(' + ') : r.eventsPerSecPerReplica.toLocaleString('en-US')
  return {
    settings: { ...s, natsServer: 'one nats-server per row, fresh store, same backlog', replicaProcess: REPLICA_SCRIPT },
    results,
    ratios: [
      ...results.map((r) => ({ target: r.target, vsConsumerOnly: round(r.eventsPerSec / bare, 2) })),
      { target: 'two replicas vs one (events/s total)', ratio: twoVsOne?.total ?? null },
      { target: 'two replicas vs one (events/s per replica)', ratio: twoVsOne?.perReplica ?? null },
      ...results.filter((r) => r.perReplica).map((r) => ({ target: r.target, perReplicaVsTarget: round(r.eventsPerSecPerReplica / TARGET_PER_REPLICA, 2) })),
    ],
    table: {
      columns: ['target', 'events', 'seconds', 'events/s', 'events/s per replica', 'CAS conflicts (drain)', 'vs consumer only', 'vs 1 replica', 'e2e p50 (ms)', 'e2e p99 (ms)', 'other CPU % (drain)'],
      rows: results.map((r) => [
        r.target, String(r.events), r.seconds.toFixed(2), r.eventsPerSec.toLocaleString('en-US'), perReplicaCell(r),
        r.conflicts === null ? '-' : String(r.conflicts), (r.eventsPerSec / bare).toFixed(2) + '×', vsOne(r), ms(r.latency?.p50Ms), ms(r.latency?.p99Ms), r.cpuPct.other === null ? '-' : String(r.cpuPct.other),
      ]),
    },
    notes: [
      `Backlog: ${s.backlogEvents.toLocaleString('en-US')} events in ${s.batches} batches of ${s.eventsPerBatch} from ${s.gateways} gateways x ${s.devicesPerGateway} devices, in the stream before the clock starts; one fresh nats-server per row. Target: >= ${TARGET_PER_REPLICA.toLocaleString('en-US')} events/s per replica.`,
      'The first three rows run in this process; the replica rows run each replica as its own process (own connection), sharing the durable consumer and the KV views; per-replica events/s = its applied events over the shared wall time.',
      ...results.filter((r) => r.latency).map((r) => {
        const l = r.latency!
        return `${r.target}, live: ${l.events} events (${l.achievedRatePerSec}/s) in ${l.batches} batches; e2e p50 ${ms(l.p50Ms)} ms, p99 ${ms(l.p99Ms)} ms, max ${ms(l.maxMs)} ms; p50 first/second half ${ms(l.p50FirstHalfMs)}/${ms(l.p50SecondHalfMs)} ms; ${l.groupsPerSec} groups/s of ${l.meanBatchesPerGroup ?? '-'} batches; ${l.casConflicts} CAS conflicts; CPU % of a core ${JSON.stringify(l.cpuPct)}.`
      }),
      ...results.filter((r) => r.perReplica).map((r) => `${r.target}, drain: CPU % of a core ${JSON.stringify(r.cpuPct)}.`),
      ...results.filter((r) => (r.cpuPct.other ?? 0) > OTHER_CPU_WARN_PCT || (r.latency?.cpuPct.other ?? 0) > OTHER_CPU_WARN_PCT)
        .map((r) => `POSSIBLY SKEWED: ${r.target}: ${r.cpuPct.other}% (drain) / ${r.latency?.cpuPct.other ?? '-'}% (live) of a core busy outside the measured processes (other tenants, kernel networking) on a ${cpus().length}-core machine.`),
      twoVsOne ? `Two replicas vs one: ${twoVsOne.total}× total events/s, ${twoVsOne.perReplica}× per replica (the machine has the cores it has: nats-server and the replicas share them).` : 'Two replicas vs one: not measured.',
      `e2e latency: after the backlog, ${s.live.ratePerSec} events/s live (${s.live.gateways} gateways, a batch each every ${s.live.tickMs} ms, ingestTsMs = publish time), ${s.live.warmupMs} ms warm-up then ${s.live.durationMs} ms measured; every observation of cloud_aggregator_e2e_latency_seconds (newest event of a batch, ingest -> applied), exact quantiles over all replicas.`,
    ],
    failures,
  }
}
