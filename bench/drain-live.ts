// The live side of the drain benchmark (promise 7, freshness first): online freshness with no
// backlog and while a backlog drains beside it (freshness.ts), and durable ingest at full speed
// (the ingest load client, 8 publishers) while a backlog drains against the same load with none, in
// the same run on the same gateway configuration. Rows, notes and checks for drain.ts's report.
import { copyFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect } from '@nats-io/transport-node'
import { provisionStreams } from '../cloud/provision.ts'
import { spawnGateway, startNats, tempDir, waitFor } from '../devkit/index.ts'
import { DEPLOYED_GATEWAY } from './bench-types.ts'
import { killOnExit, stopGateway } from './children.ts'
import type { FreshnessResult } from './freshness.ts'
import { runLoad, type LoadOptions, type LoadResult } from './load-client.ts'
import { otherCpuPct } from './proc-cpu.ts'

/** DESIGN.md "Targets": live freshness p99 while a backlog drains, and ingest while draining vs idle. */
export const TARGET_FRESHNESS_P99_MS = 500
const TARGET_INGEST_WHILE_DRAINING = 0.8
const OTHER_CPU_WARN_PCT = 15

export interface IngestBesideDrain {
  backlog: boolean
  load: LoadResult
  /** Events in the outbox once the load's measured interval ended (with a backlog: was it still draining?). */
  outboxAtEnd: number
  gatewayStderr: string
}

/** One full-speed ingest load against a fresh gateway with its uplink live, starting on the backlog in dbFile (or none). */
export async function runIngestBesideDrain (dbFile: string | null, load: Omit<LoadOptions, 'port' | 'targetPid'>, sets: string[]): Promise<IngestBesideDrain> {
  const server = await startNats()
  const data = tempDir('bench-drain-ingest-')
  try {
    const nc = await connect({ servers: server.url })
    await provisionStreams(nc)
    await nc.close()
    if (dbFile) copyFileSync(dbFile, join(data.dir, 'gateway.db'))
    const gw = await spawnGateway(data.dir, [...sets, `uplink.servers=${server.url}`], DEPLOYED_GATEWAY)
    const forget = killOnExit(gw.child.pid)
    try {
      const readyz = async (): Promise<{ outboxEvents: number, uplink?: { link?: string } }> => await (await fetch(`http://127.0.0.1:${gw.ports.http!}/readyz`)).json() as { outboxEvents: number }
      await waitFor(async () => (await readyz()).uplink?.link === 'up', 'gateway uplink to connect', 15000, 10)
      const result = await runLoad({ ...load, port: gw.ports.mqtt, targetPid: gw.child.pid })
      return { backlog: dbFile !== null, load: result, outboxAtEnd: (await readyz()).outboxEvents, gatewayStderr: gw.stderr().trim().slice(-2000) }
    } finally {
      await stopGateway(gw)
      forget()
    }
  } finally {
    await server.cleanup()
    data.cleanup()
  }
}

const int = (v: number): string => Math.round(v).toLocaleString('en-US')
const fix = (v: number | null, d = 1): string => v === null ? '?' : v.toFixed(d)
const pcts = (cpu: Record<string, number | null | undefined>): string => ['gateway', 'nats', 'client', 'other'].map((k) => cpu[k] === undefined || cpu[k] === null ? '-' : fix(cpu[k]!, 0)).join(' / ')

export interface LivePart { rows: string[][], notes: string[], failures: string[], ratios: Array<Record<string, unknown>> }

/** Rows for one freshness run: `label` is 'no backlog' or 'while draining N events'. */
export function freshnessPart (label: string, f: FreshnessResult, maxInflight: number, out: LivePart): void {
  const { rows, notes, failures, ratios } = out
  const meets = (p99: number): string => p99 <= TARGET_FRESHNESS_P99_MS ? `p99 <= ${TARGET_FRESHNESS_P99_MS} ms: met` : `p99 <= ${TARGET_FRESHNESS_P99_MS} ms: MISSED`
  const load = `${f.load.ratePerSec}/s over ${f.load.publishers} devices, QoS 1`
  const freshCpu = { gateway: f.cpuPct.gateway, nats: f.cpuPct.nats, client: f.load.clientCpuPct, other: otherCpuPct({ ...f.cpuPct, client: f.load.clientCpuPct }, ['gateway', 'nats', 'bench', 'client']) }
  if ((freshCpu.other ?? 0) > OTHER_CPU_WARN_PCT) notes.push(`freshness, ${label}: other processes used ${fix(freshCpu.other, 0)}% of a core while measuring: skewed, rerun on a quiet machine`)
  const cpu = pcts(freshCpu)
  const rate = `${int(f.load.ackedPerSec)} ev/s`
  const row = (what: string, s: { p50: number, p99: number, p999: number }): void => { rows.push([`freshness (${label}): ${what}`, load, rate, fix(s.p50), fix(s.p99), fix(s.p999), meets(s.p99), cpu]) }
  row('ingest -> core subscriber', f.coreSubscriber)
  if (f.orderedConsumer) row('ingest -> ordered JS consumer', f.orderedConsumer)
  else notes.push(`freshness, ${label}: ordered JetStream consumer unavailable: ${f.orderedConsumerError}`)
  row('device publish -> core subscriber', f.publishToSubscriber)
  rows.push([`freshness (${label}): gateway metric (newest of batch)`, `${int(f.gatewayMetric.batches)} live batches`, '-', fix(f.gatewayMetric.p50), fix(f.gatewayMetric.p99), '-', f.gatewayMetric.p99 === null ? '-' : meets(f.gatewayMetric.p99), cpu])
  rows.push([`PUBACK (durable ingest) at that load (${label})`, load, rate, fix(f.load.pubackMs.p50, 2), fix(f.load.pubackMs.p99, 2), fix(f.load.pubackMs.p999, 2), '-', cpu])
  ratios.push({ what: `freshness p99 (${label}, ingest -> core subscriber) ÷ target ${TARGET_FRESHNESS_P99_MS} ms`, ratio: f.coreSubscriber.p99 / TARGET_FRESHNESS_P99_MS, meetsTarget: f.coreSubscriber.p99 <= TARGET_FRESHNESS_P99_MS })
  if (f.orderedConsumer) ratios.push({ what: `freshness p99 (${label}, ingest -> ordered consumer) ÷ target ${TARGET_FRESHNESS_P99_MS} ms`, ratio: f.orderedConsumer.p99 / TARGET_FRESHNESS_P99_MS, meetsTarget: f.orderedConsumer.p99 <= TARGET_FRESHNESS_P99_MS })
  if (f.gatewayMetric.p99 !== null) ratios.push({ what: `freshness p99 (${label}): gateway metric ÷ measured at the core subscriber`, ratio: f.gatewayMetric.p99 / f.coreSubscriber.p99 })
  if (f.received < f.load.totalAcked) failures.push(`freshness, ${label}: only ${f.received} events reached the subscriber for ${f.load.totalAcked} PUBACKs`)
  if (f.duplicates > 0) failures.push(`freshness, ${label}: ${f.duplicates} events seen twice by the subscriber`)
  if (f.load.disconnects > 0) failures.push(`freshness, ${label}: ${f.load.disconnects} device connection(s) dropped`)
  if (f.load.errors.length > 0) failures.push(`freshness, ${label}: client errors: ${f.load.errors.join('; ')}`)
  if (f.load.skipped > 0) notes.push(`freshness, ${label}: ${f.load.skipped} publishes skipped (device window of ${maxInflight} full): the offered rate was not met`)
  const drained = f.drainedAfterMs === null ? '' : `; the backlog was gone ${fix(f.drainedAfterMs / 1000, 2)} s into the measured interval, which ends there`
  notes.push(`freshness, ${label}: ${int(f.received)} live events reached the subscriber for ${int(f.load.totalAcked)} PUBACKs; ${int(f.coreSubscriber.events)} ingested inside the measured interval${drained}`)
  if (f.coreSubscriber.events === 0) failures.push(`freshness, ${label}: no live event measured (the backlog drained before the measured interval began?)`)
  if (f.gatewayStderr !== '') notes.push(`freshness, ${label}: gateway log: ${f.gatewayStderr}`)
}

/** Rows for ingest at full speed while draining against the same load with no backlog. */
export function ingestPart (idle: IngestBesideDrain, draining: IngestBesideDrain, backlogEvents: number, drainedBelow: number, out: LivePart): void {
  const ratio = draining.load.eventsPerSec / Math.max(1e-9, idle.load.eventsPerSec)
  for (const r of [idle, draining]) {
    const l = r.load
    const label = r.backlog ? `ingest while draining ${int(backlogEvents)} events` : 'ingest, no backlog (idle peer)'
    const cpu = { gateway: l.cpuPct.target, client: l.cpuPct.client, other: l.cpuPct.other }
    out.rows.push([label, `${l.publishers} publishers x ${l.window} in flight, QoS 1`, `${int(l.eventsPerSec)} ev/s`, fix(l.latencyMs.p50, 2), fix(l.latencyMs.p99, 2), fix(l.latencyMs.p999, 2),
      r.backlog ? `${ratio.toFixed(2)}x idle; >= ${TARGET_INGEST_WHILE_DRAINING}x: ${ratio >= TARGET_INGEST_WHILE_DRAINING ? 'met' : 'MISSED'}` : '1.00x (peer)', pcts(cpu)])
    if ((l.cpuPct.other ?? 0) > OTHER_CPU_WARN_PCT) out.notes.push(`${label}: other processes used ${fix(l.cpuPct.other, 0)}% of a core while measuring: skewed, rerun on a quiet machine`)
    if (l.disconnects > 0 || l.errors.length > 0) out.failures.push(`${label}: ${l.disconnects} disconnect(s), errors: ${l.errors.join('; ')}`)
    if (r.gatewayStderr !== '') out.notes.push(`${label}: gateway log: ${r.gatewayStderr}`)
  }
  out.ratios.push({ what: `ingest events/s while draining ÷ with no backlog (target >= ${TARGET_INGEST_WHILE_DRAINING})`, ratio, meetsTarget: ratio >= TARGET_INGEST_WHILE_DRAINING })
  if (draining.outboxAtEnd < drainedBelow) out.notes.push(`ingest while draining: the backlog was gone (${int(draining.outboxAtEnd)} events left) when the measured interval ended, so part of it ran with no drain: the ratio flatters the gateway; a larger backlog or a shorter interval measures the drain alone`)
  else out.notes.push(`ingest while draining: ${int(draining.outboxAtEnd)} events still in the outbox when the measured interval ended: the drain ran through all of it`)
}
