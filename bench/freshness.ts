// Online freshness under steady load: a gateway child with a live uplink, devices publishing at a
// steady rate, and the time from gateway ingest to "in JetStream" measured three ways:
// - from outside, per event: a core NATS subscriber on iot.<gatewayId>.telemetry (it receives the
//   stream-published batches as JetStream stores them) computes now - ingestTsMs for every event;
// - from outside, per event: an ordered JetStream consumer on the stream (only stored messages,
//   delivered the way a cloud consumer gets them);
// - the gateway's own histogram gateway_uplink_freshness_seconds (newest event of each live batch,
//   ingest -> JetStream ack), bucket-derived quantiles over the measured interval.
// With a backlog (an outbox left by an outage, copied in before the gateway starts), the drain
// starts with the gateway and the measured interval ends when the backlog is gone (/readyz polls):
// the freshness of live events while the backlog drains beside them (promise 7).
import { latencyHistogram } from './child-kit.ts'
import { DeliverPolicy, jetstream, type ConsumerMessages } from '@nats-io/jetstream'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import type { Histogram } from 'hdr-histogram-js'
import { provisionStreams } from '../cloud/provision.ts'
import { subjects, v1 } from '../proto/index.ts'
import { copyFileSync } from 'node:fs'
import { join } from 'node:path'
import { startNats, spawnGateway, tempDir, waitFor } from '../devkit/index.ts'
import { DEPLOYED_GATEWAY } from './bench-types.ts'
import { killOnExit, stopGateway } from './children.ts'
import { bucketDelta, bucketQuantile, scrapeAll, type Scrape } from './metrics-scrape.ts'
import { runPacedLoad, type PacedLoadOptions, type PacedLoadResult } from './paced-load.ts'
import { cpuMeter } from './proc-cpu.ts'

export const FRESHNESS_GATEWAY = 'bench-fresh'
const FRESHNESS_METRIC = 'gateway_uplink_freshness_seconds'

export interface LatencySummary { events: number, p50: number, p99: number, p999: number, max: number }

export interface FreshnessResult {
  load: PacedLoadResult
  /** Ingest -> received by a core subscriber, every event ingested in the measured interval (ms). */
  coreSubscriber: LatencySummary
  /** Ingest -> delivered by an ordered JetStream consumer (ms); null if it could not be created. */
  orderedConsumer: LatencySummary | null
  orderedConsumerError: string | null
  /** Device publish (its `ts`) -> received by the core subscriber (ms): adds MQTT + commit. */
  publishToSubscriber: LatencySummary
  /** The gateway's histogram over the measured interval: live batches and bucket-derived quantiles (ms). */
  gatewayMetric: { batches: number, p50: number | null, p99: number | null }
  /** Events of the load's devices seen by the subscriber over the whole run, vs PUBACKs the devices got. */
  received: number
  duplicates: number
  cpuPct: Record<string, number | null>
  /** With a backlog: ms from the measured interval's start until the outbox held fewer than drainedBelow events (null: not within it, the interval ran to its end). */
  drainedAfterMs: number | null
  gatewayStderr: string
}

/** A backlog to drain beside the live load: the outbox file to start from, and when it counts as drained. */
export interface FreshnessBacklog { dbFile: string, drainedBelow: number }

/** Runs the online freshness measurement on its own nats-server and gateway child. */
export async function runFreshness (load: Omit<PacedLoadOptions, 'port'>, gatewaySets: string[], backlog: FreshnessBacklog | null = null): Promise<FreshnessResult> {
  const server = await startNats()
  const data = tempDir('bench-fresh-')
  let nc: NatsConnection | null = null
  let consumer: ConsumerMessages | null = null
  try {
    nc = await connect({ servers: server.url })
    await provisionStreams(nc)
    if (backlog) copyFileSync(backlog.dbFile, join(data.dir, 'gateway.db'))
    const gw = await spawnGateway(data.dir, [`gatewayId=${FRESHNESS_GATEWAY}`, `uplink.servers=${server.url}`, ...gatewaySets], DEPLOYED_GATEWAY)
    const forget = killOnExit(gw.child.pid)
    try {
      const http = gw.ports.http!
      await waitFor(async () => (await scrapeAll(http)).values.get('gateway_uplink_up') === 1, 'gateway uplink to connect', 15000, backlog ? 10 : 50)
      const subject = subjects.telemetry(FRESHNESS_GATEWAY)
      // Events ingested inside the load's measured interval (wall clock ms), set by its phase callbacks.
      let measured = { from: Infinity, to: Infinity }
      const inWindow = (ts: number): boolean => ts >= measured.from && ts < measured.to
      const core = hist()
      const fromPublish = hist()
      const ordered = hist()
      const seen = new Map<string, Set<number>>()
      let received = 0
      const loadDevice = `${load.clientIdPrefix}-`
      let duplicates = 0
      let orderedSeen = 0
      nc.subscribe(subject, {
        callback: (err, msg) => {
          if (err) return
          const now = Date.now()
          for (const ev of v1.ReplicationBatch.decode(msg.data).events) {
            const device = ev.deviceId ?? ''
            if (!device.startsWith(loadDevice)) continue // the backlog's devices
            const seqs = seen.get(device) ?? new Set<number>()
            seen.set(device, seqs)
            if (seqs.has(Number(ev.seq))) duplicates++
            seqs.add(Number(ev.seq))
            received++
            const ingest = Number(ev.ingestTsMs)
            if (!inWindow(ingest)) continue
            record(core, now - ingest)
            record(fromPublish, now - Number(ev.eventTsMs))
          }
        },
      })
      let orderedError: string | null = null
      try {
        const js = jetstream(nc)
        const oc = await js.consumers.get('TELEMETRY', { filter_subjects: subject, deliver_policy: DeliverPolicy.New })
        consumer = await oc.consume({ max_messages: 256 })
        const messages = consumer
        void (async () => {
          for await (const m of messages) {
            const now = Date.now()
            for (const ev of v1.ReplicationBatch.decode(m.data).events) {
              if (!(ev.deviceId ?? '').startsWith(loadDevice)) continue
              orderedSeen++
              const ingest = Number(ev.ingestTsMs)
              if (inWindow(ingest)) record(ordered, now - ingest)
            }
          }
        })().catch((err: Error) => { orderedError = err.message })
      } catch (err) {
        orderedError = (err as Error).message
      }
      await nc.flush()

      // Set by the load's phase callbacks: the gateway's metrics and CPU at both ends of the interval.
      const marks: { before?: Promise<Scrape>, after?: Promise<Scrape>, meter?: ReturnType<typeof cpuMeter>, cpuPct: Record<string, number | null> } = { cpuPct: {} }
      let drainedAt: number | null = null
      let polling = true
      const drainedNow = async (): Promise<boolean> => !polling || ((await (await fetch(`http://127.0.0.1:${http}/readyz`)).json()) as { outboxEvents: number }).outboxEvents < backlog!.drainedBelow
      const result = await runPacedLoad({ ...load, port: gw.ports.mqtt }, (phase, wallMs) => {
        if (phase === 'measure') {
          measured = { from: wallMs, to: Infinity }
          marks.before = scrapeAll(http)
          marks.meter = cpuMeter({ gateway: gw.child.pid, nats: server.pid, bench: process.pid })
          if (backlog) {
            // The interval ends with the backlog: events ingested after it are fresh with no drain beside them.
            void waitFor(drainedNow, 'the backlog to drain', 600000, 50)
              .then(() => { if (polling) { drainedAt = Date.now(); measured = { from: measured.from, to: Math.min(measured.to, drainedAt) } } }, () => {})
          }
        } else {
          measured = { from: measured.from, to: Math.min(measured.to, wallMs) }
          marks.after = scrapeAll(http)
          marks.cpuPct = marks.meter?.stop() ?? {}
        }
      })
      polling = false
      // Whatever the devices got a PUBACK for must reach the stream; give the tail time to arrive.
      await waitFor(() => received >= result.totalAcked && (consumer === null || orderedSeen >= result.totalAcked), 'the last events to reach the cloud', 10000, 20).catch(() => {})
      const delta = marks.before && marks.after ? bucketDelta(await marks.before, await marks.after, FRESHNESS_METRIC) : []
      const ms = (v: number | null): number | null => v === null ? null : v * 1000
      return {
        load: result,
        coreSubscriber: summary(core),
        orderedConsumer: orderedError === null ? summary(ordered) : null,
        orderedConsumerError: orderedError,
        publishToSubscriber: summary(fromPublish),
        gatewayMetric: { batches: delta.length > 0 ? delta[delta.length - 1].count : 0, p50: ms(bucketQuantile(delta, 0.5)), p99: ms(bucketQuantile(delta, 0.99)) },
        received,
        duplicates,
        cpuPct: marks.cpuPct,
        drainedAfterMs: drainedAt === null || drainedAt > measured.to ? null : (drainedAt as number) - measured.from,
        gatewayStderr: gw.stderr().trim().slice(-2000),
      }
    } finally {
      await stopGateway(gw)
      forget()
    }
  } finally {
    await (consumer as ConsumerMessages | null)?.close().catch(() => {})
    await nc?.close().catch(() => {})
    await server.cleanup()
    data.cleanup()
  }
}

// Microseconds, 3 significant digits. Timestamps are whole ms on both sides, so resolution is 1 ms.
function hist (): Histogram {
  return latencyHistogram()
}

function record (h: Histogram, ms: number): void {
  h.recordValue(Math.max(1, Math.round(ms * 1000)))
}

function summary (h: Histogram): LatencySummary {
  const ms = (us: number): number => us / 1000
  const s = { events: h.totalCount, p50: ms(h.getValueAtPercentile(50)), p99: ms(h.getValueAtPercentile(99)), p999: ms(h.getValueAtPercentile(99.9)), max: ms(h.maxValue) }
  h.destroy()
  return s
}
