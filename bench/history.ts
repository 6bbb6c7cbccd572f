// Fleet history capacity (#17): bytes per device per day in each rollup tier and in the raw stream,
// the size of one device-hour in the tier form against JSON, and the apply rate with the tiers.
//
// A day of event time (the day before yesterday, UTC, well inside every tier's retention) for D
// devices at 6 events/min with 3 readings (temperature, humidity, pressure with 2, 1 and 1
// decimals, as sensors report them), in replication batches of 2,000 events in time order, is put
// into TELEMETRY first; then one aggregator (this process, the KV fleet store: VIEWS plus the tier
// buckets) applies it. Bytes are the buckets' and the stream's own figures (JetStream stream info:
// what NATS stores, message overhead included) divided by D. The capacity model multiplies them by
// each tier's default retention (README "Fleet history").
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { Aggregator } from '../cloud/apply/aggregator.ts'
import { encodeTierDoc } from '../cloud/apply/tiers/tier-codec.ts'
import { openFleetStore } from '../cloud/apply/tiers/tier-store.ts'
import { DEFAULT_RETENTION, TIER_NAMES, TIERS, tierKey, type TierDoc, type TierName } from '../cloud/apply/tiers/tiers.ts'
import { createLogger } from '../cloud/log.ts'
import { createCloudMetrics } from '../cloud/metrics.ts'
import { provisionStreams, provisionViews } from '../cloud/provision.ts'
import { startNats } from '../devkit/index.ts'
import { STREAMS, subjects, v1 } from '../proto/index.ts'
import type { BenchOptions, BenchReport } from './bench-types.ts'
import { cpuMeter } from './proc-cpu.ts'

const DAY = 24 * 3600_000
const GATEWAY = 'bench-hist'
const FLEET = 10_000
/** Days the raw stream keeps by default (cloud config streamMaxAgeMs). */
const RAW_DAYS = 7

const round = (x: number, d = 0): number => Math.round(x * 10 ** d) / 10 ** d

export async function history (opts: BenchOptions): Promise<BenchReport> {
  const devices = opts.quick ? 10 : 50
  const perMinute = 6
  const dayStart = Math.floor(Date.now() / DAY) * DAY - 2 * DAY
  const events = devices * perMinute * 24 * 60
  const nats = await startNats()
  const failures: string[] = []
  try {
    const nc = await connect({ servers: nats.url, noAsyncTraces: true })
    await provisionStreams(nc)
    await provisionViews(nc)
    const js = jetstream(nc)
    const jsm = await jetstreamManager(nc)
    // The day's events in time order, one per device every 10 s (jittered), in batches of 2,000.
    let rand = 12345
    const next = (): number => { rand = (rand * 1664525 + 1013904223) >>> 0; return rand / 2 ** 32 }
    const seqs = new Array<number>(devices).fill(0)
    let batch: Array<Record<string, unknown>> = []
    let batchNo = 0
    const pubs: Promise<unknown>[] = []
    const flush = async (): Promise<void> => {
      const id = `h-${batchNo++}`
      pubs.push(js.publish(subjects.telemetry(GATEWAY), v1.ReplicationBatch.encode({ gatewayId: GATEWAY, batchId: id, events: batch }).finish(), { msgID: id }))
      batch = []
      if (pubs.length >= 32) await Promise.all(pubs.splice(0))
    }
    for (let tick = 0; tick < 24 * 60 * perMinute; tick++) {
      for (let d = 0; d < devices; d++) {
        const ts = dayStart + tick * (60_000 / perMinute) + Math.floor(next() * 1000)
        const phase = Math.sin((tick / (24 * 60 * perMinute)) * 2 * Math.PI)
        batch.push({
          deviceId: `dev-${d}`, seq: ++seqs[d], eventTsMs: ts, ingestTsMs: ts,
          readings: [
            { name: 'temperature', value: round(21 + 3 * phase + next() * 0.5, 2) },
            { name: 'humidity', value: round(45 - 10 * phase + next() * 2, 1) },
            { name: 'pressure', value: round(1013 + next() * 3, 1) },
          ],
        })
        if (batch.length === 2000) await flush()
      }
    }
    if (batch.length > 0) await flush()
    await Promise.all(pubs)

    const { store } = await openFleetStore(nc, 'VIEWS')
    const agg = new Aggregator(nc, store, createCloudMetrics({ defaultMetrics: false }), createLogger('warn'), { streams: ['telemetry'] })
    const meter = cpuMeter({ nats: nats.pid, bench: process.pid })
    const t0 = performance.now()
    await agg.start()
    const deadline = Date.now() + (opts.quick ? 120_000 : 600_000)
    while (agg.stats().applied < events && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5))
    const seconds = (performance.now() - t0) / 1000
    const cpu = Object.fromEntries(Object.entries(meter.stop()).map(([k, v]) => [k, v === null ? null : Math.round(v)]))
    const stats = agg.stats()
    await agg.close()
    if (stats.applied !== events) failures.push(`applied ${stats.applied} of ${events} events before the deadline`)
    if (stats.rollupTooOld > 0) failures.push(`${stats.rollupTooOld} events counted too old for a tier`)

    // What NATS stores per device and day, per tier and for the raw stream.
    const bytes = async (stream: string): Promise<number> => (await jsm.streams.info(stream)).state.bytes
    const perDevice: Record<string, number> = {}
    for (const t of TIER_NAMES) perDevice[t] = (await bytes(`KV_${TIERS[t].bucket}`)) / devices
    const raw = (await bytes(STREAMS.telemetry.name)) / devices
    const views = (await bytes('KV_VIEWS')) / devices
    // One device-hour of the 1m tier: the tier form against the same document as JSON.
    const hourDoc = (await store.get<TierDoc>(tierKey('1m', GATEWAY, 'dev-0', dayStart + 12 * 3600_000)))?.value
    const tierForm = hourDoc ? encodeTierDoc(hourDoc).length : 0
    const jsonForm = hourDoc ? Buffer.byteLength(JSON.stringify(hourDoc)) : 0
    if (!hourDoc) failures.push('no 1m document for dev-0 at noon')
    const days: Record<TierName, number> = { '1m': DEFAULT_RETENTION['1m'] / DAY, '5m': DEFAULT_RETENTION['5m'] / DAY, '1h': DEFAULT_RETENTION['1h'] / DAY }
    const keptPerDevice = TIER_NAMES.reduce((s, t) => s + perDevice[t] * days[t], 0) + raw * RAW_DAYS + views
    const gb = (b: number): number => round(b * FLEET / 1e9, 1)
    await nc.close()
    const results = [
      ...TIER_NAMES.map((t) => ({ what: `tier ${t}`, bytesPerDeviceDay: round(perDevice[t]), retentionDays: days[t], bytesPerDeviceKept: round(perDevice[t] * days[t]), fleetGB: gb(perDevice[t] * days[t]) })),
      { what: 'raw stream TELEMETRY', bytesPerDeviceDay: round(raw), retentionDays: RAW_DAYS, bytesPerDeviceKept: round(raw * RAW_DAYS), fleetGB: gb(raw * RAW_DAYS) },
      { what: 'VIEWS (latest, dedupe, accounting)', bytesPerDeviceDay: null, retentionDays: null, bytesPerDeviceKept: round(views), fleetGB: gb(views) },
      { what: 'total', bytesPerDeviceDay: null, retentionDays: null, bytesPerDeviceKept: round(keptPerDevice), fleetGB: gb(keptPerDevice) },
    ]
    const cell = (x: number | null): string => x === null ? '-' : x.toLocaleString('en-US')
    return {
      settings: { mode: opts.quick ? 'quick' : 'full', devices, eventsPerMinute: perMinute, readings: 3, events, dayStartMs: dayStart, fleetForModel: FLEET, retentionDays: days, rawDays: RAW_DAYS },
      results: [...results, { what: 'apply', events, seconds: round(seconds, 2), eventsPerSec: Math.round(events / seconds), cpuPct: cpu }, { what: '1m device-hour', tierFormBytes: tierForm, jsonBytes: jsonForm }],
      ratios: [{ target: '1m tier bytes per device-hour vs the 2 KB target', ratio: round(tierForm / 2048, 2) }, { target: 'tier form vs JSON of the same document', ratio: jsonForm ? round(tierForm / jsonForm, 3) : null }],
      table: {
        columns: ['data', 'bytes per device per day', 'kept (days, default)', 'bytes per device kept', `GB for ${FLEET.toLocaleString('en-US')} devices`],
        rows: results.map((r) => [r.what, cell(r.bytesPerDeviceDay), cell(r.retentionDays), cell(r.bytesPerDeviceKept), cell(r.fleetGB)]),
      },
      notes: [
        `${devices} devices x 1 day at ${perMinute} events/min with 3 readings = ${events.toLocaleString('en-US')} events, applied by one aggregator in ${seconds.toFixed(2)} s: ${Math.round(events / seconds).toLocaleString('en-US')} events/s with the three tiers (CPU % of a core ${JSON.stringify(cpu)}); the aggregate benchmark measures the apply rate against its peers.`,
        `One device-hour of the 1m tier: ${tierForm} B in the tier form, ${jsonForm} B as JSON of the same document (target <= 2,048 B).`,
        'Bytes are JetStream\'s stream figures (message headers and subjects included). Tiers at their default retention (config retention.rollup1mMs / rollup5mMs / rollup1hMs), the raw stream at streamMaxAgeMs (7 days); disk = the total x fleet size, times the replicas (1 or 3).',
      ],
      failures,
    }
  } finally {
    await nats.cleanup()
  }
}
