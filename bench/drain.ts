// Backlog drain and online freshness benchmark. Drain: a gateway data directory holding N telemetry
// events (filled in-process, no uplink, as an outage leaves it) is handed to a gateway child with a
// live uplink to a fresh nats-server; the time until its outbox is empty gives events/s, for two
// batch sizes. The peer, in the same run: the same JetStream client publishing one event per message
// (DESIGN: ~30k msg/s). Afterwards the stream is read back and every event counted exactly once.
// Live beside the drain (drain-live.ts): freshness of live events with no backlog and while the same
// backlog drains, and full-speed ingest while draining against ingest with no backlog, same run.
import { spawnSync } from 'node:child_process'
import { copyFileSync } from 'node:fs'
import { join } from 'node:path'
import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { provisionStreams } from '../cloud/provision.ts'
import { STREAMS, subjects, v1 } from '../proto/index.ts'
import { startNats, spawnGateway, tempDir } from '../devkit/index.ts'
import { killOnExit, stopGateway } from './children.ts'
import { freshnessPart, ingestPart, runIngestBesideDrain, type IngestBesideDrain, type LivePart } from './drain-live.ts'
import { runFreshness, type FreshnessResult } from './freshness.ts'
import { runJsPublish, type JsPublishResult } from './js-publish-peer.ts'
import { bucketQuantile, scrapeAll, type Scrape } from './metrics-scrape.ts'
import { deviceName, fillOutbox, type FillResult } from './outbox-fill.ts'
import { cpuMeter, otherCpuPct } from './proc-cpu.ts'
import { DEPLOYED_GATEWAY, type BenchOptions, type BenchReport } from './bench-types.ts'

/** DESIGN.md "Targets": backlog drain edge -> cloud, and online freshness p99. */
const TARGET_DRAIN_PER_SEC = 250_000
const DRAIN_GATEWAY = 'bench-drain'
const POLL_MS = 50
// collectDefaultMetrics under the gateway's prefix gateway_.
const RSS_METRIC = 'gateway_process_resident_memory_bytes'
/** Busy CPU outside the measured processes above which a row is flagged as skewed (% of a core). */
const OTHER_CPU_WARN_PCT = 15
/** A drain shorter than this is dominated by warm-up. */
const SHORT_DRAIN_MS = 2000
/** A single-threaded process at this share of a core is taken to be the bottleneck. */
const SATURATED_PCT = 90

interface DrainConfig { batchMaxEvents: number, maxInFlight: number }

export interface DrainRun {
  config: DrainConfig
  /** Spawn -> the gateway child listening (process start, tsx, opening the outbox). */
  startupMs: number
  /** Events acked between the first and the last sample, over the time between them (ack clock). */
  eventsPerSec: number
  /** All events from the moment the child was ready (includes connecting the uplink). */
  wallEventsPerSec: number
  drainMs: number
  /** Events/s per 500 ms of the drain, to see whether it slows down as the table empties. */
  rateSeries: number[]
  /** Batch publish -> JetStream ack as the gateway measured it, bucket-derived (ms). */
  batchAckMs: { p50: number | null, p99: number | null }
  /** Gateway RSS at the first poll and the most seen while draining (the backlog lives on disk). */
  rssBytes: { first: number | null, max: number | null }
  cpuPct: Record<string, number | null>
  stream: StreamCount
  duplicateAcks: number
  timedOut: boolean
  gatewayStderr: string
}

interface StreamCount { messages: number, bytes: number, events: number, duplicates: number, missing: number, outOfOrder: number, foreign: number }

function settingsFor (quick: boolean) {
  return {
    mode: quick ? 'quick' : 'full',
    natsServer: spawnSync('nats-server', ['--version'], { encoding: 'utf8' }).stdout?.trim() ?? 'unknown',
    backlogEvents: quick ? 200_000 : 1_000_000,
    devices: 100,
    fillBurst: 50_000,
    // Quick: only the default batch size.
    drainConfigs: (quick ? [{ batchMaxEvents: 2000, maxInFlight: 8 }] : [{ batchMaxEvents: 2000, maxInFlight: 8 }, { batchMaxEvents: 500, maxInFlight: 8 }]) as DrainConfig[],
    durability: 'full (gateway default)',
    pollMs: POLL_MS,
    drainTimeoutMs: quick ? 30_000 : 120_000,
    peer: { window: 256, warmupMs: quick ? 300 : 1000, durationMs: quick ? 1500 : 5000, msgId: true },
    freshness: {
      publishers: 10,
      ratePerSec: 5000,
      warmupMs: quick ? 500 : 2000,
      durationMs: quick ? 2000 : 20000,
      drainTimeoutMs: 5000,
      maxInflightPerPublisher: 500,
      qos: 1,
      gatewaySets: ['mqtt.allowAnonymous=true'],
      // While draining: the measured interval starts this soon after the gateway is up (the drain starts with it) and ends when the backlog is gone.
      whileDraining: { warmupMs: 200, durationMs: quick ? 20_000 : 60_000 },
    },
    // Full-speed ingest (the ingest benchmark's load client) with no backlog and while the backlog drains, each on a fresh gateway and nats-server.
    ingestBesideDrain: {
      publishers: 8, window: 100, warmupMs: 200, durationMs: quick ? 700 : 2000, drainTimeoutMs: 5000, clientIdPrefix: 'drain-ingest',
      gatewaySets: [`gatewayId=${DRAIN_GATEWAY}`, 'mqtt.allowAnonymous=true', 'mqtt.ratePerDevice=1000000', 'mqtt.burstPerDevice=1000000'],
    },
    drainedBelowEvents: 2000,
  }
}

type DrainSettings = ReturnType<typeof settingsFor>

interface Live { freshIdle: FreshnessResult, freshDraining: FreshnessResult, ingestIdle: IngestBesideDrain, ingestDraining: IngestBesideDrain }

/** Runs the drain and freshness benchmark and returns its settings, results, ratios and table. */
export async function drain (opts: BenchOptions): Promise<BenchReport> {
  const settings = settingsFor(opts.quick)
  process.stderr.write('drain: JetStream publish peer (one event per message)...\n')
  const peer = await runPeer(settings.peer)

  const fillDir = tempDir('bench-drain-fill-')
  const runs: DrainRun[] = []
  let fill: FillResult
  const { gatewaySets, qos: _qos, whileDraining, ...load } = settings.freshness
  const { gatewaySets: ingestSets, ...ingestLoad } = settings.ingestBesideDrain
  let live: Live
  try {
    process.stderr.write(`drain: filling an outbox with ${settings.backlogEvents.toLocaleString('en-US')} events...\n`)
    fill = await fillOutbox(fillDir.dir, { events: settings.backlogEvents, devices: settings.devices, burst: settings.fillBurst })
    const dbFile = join(fillDir.dir, 'gateway.db')
    for (const config of settings.drainConfigs) {
      process.stderr.write(`drain: batchMaxEvents=${config.batchMaxEvents}, maxInFlight=${config.maxInFlight}...\n`)
      runs.push(await runDrain(dbFile, fill, config, settings.drainTimeoutMs))
    }
    process.stderr.write(`drain: online freshness at ${settings.freshness.ratePerSec} events/s, no backlog, then while the backlog drains...\n`)
    const freshIdle = await runFreshness({ ...load, clientIdPrefix: 'fresh' }, gatewaySets)
    const freshDraining = await runFreshness({ ...load, ...whileDraining, clientIdPrefix: 'fresh' }, gatewaySets, { dbFile, drainedBelow: settings.drainedBelowEvents })
    process.stderr.write('drain: full-speed ingest, no backlog, then while the backlog drains...\n')
    const ingestIdle = await runIngestBesideDrain(null, ingestLoad, ingestSets)
    const ingestDraining = await runIngestBesideDrain(dbFile, ingestLoad, ingestSets)
    live = { freshIdle, freshDraining, ingestIdle, ingestDraining }
  } finally {
    fillDir.cleanup()
  }
  return report(settings, fill, peer, runs, live)
}

async function runPeer (opts: { window: number, warmupMs: number, durationMs: number }): Promise<JsPublishResult> {
  const server = await startNats()
  try {
    const nc = await connect({ servers: server.url })
    await provisionStreams(nc)
    await nc.close()
    return await runJsPublish({ url: server.url, subject: subjects.telemetry('bench-peer'), serverPid: server.pid ?? undefined, ...opts })
  } finally {
    await server.cleanup()
  }
}

async function runDrain (dbFile: string, fill: FillResult, config: DrainConfig, timeoutMs: number): Promise<DrainRun> {
  const server = await startNats()
  const data = tempDir('bench-drain-')
  try {
    const nc = await connect({ servers: server.url })
    await provisionStreams(nc)
    await nc.close()
    copyFileSync(dbFile, join(data.dir, 'gateway.db'))
    const spawned = performance.now()
    const gw = await spawnGateway(data.dir, [`gatewayId=${DRAIN_GATEWAY}`, `uplink.servers=${server.url}`,
      `uplink.batchMaxEvents=${config.batchMaxEvents}`, `uplink.maxInFlight=${config.maxInFlight}`], DEPLOYED_GATEWAY)
    const forget = killOnExit(gw.child.pid)
    const readyWall = Date.now()
    const startupMs = performance.now() - spawned
    let last: Scrape
    try {
      const http = gw.ports.http!
      const meter = cpuMeter({ gateway: gw.child.pid, nats: server.pid, bench: process.pid })
      const samples: Array<{ t: number, acked: number }> = []
      const rss: DrainRun['rssBytes'] = { first: null, max: null }
      const deadline = Date.now() + timeoutMs
      let timedOut = false
      for (;;) {
        const a = Date.now()
        last = await scrapeAll(http)
        const t = (a + Date.now()) / 2
        samples.push({ t, acked: last.values.get('gateway_uplink_acked_events_total') ?? 0 })
        const now = last.values.get(RSS_METRIC)
        if (now !== undefined) { rss.first ??= now; rss.max = Math.max(rss.max ?? 0, now) }
        if (last.values.get('gateway_outbox_events') === 0 && last.values.get('gateway_uplink_batches_in_flight') === 0) break
        if (Date.now() > deadline) { timedOut = true; break }
        await new Promise((resolve) => setTimeout(resolve, POLL_MS))
      }
      const cpuPct = meter.stop()
      // The end is the gateway's own time of its last ack, not the poll that noticed it.
      const lastAck = (last.values.get('gateway_uplink_last_ack_timestamp_seconds') ?? 0) * 1000
      const end = timedOut ? samples[samples.length - 1] : { t: lastAck, acked: samples[samples.length - 1].acked }
      const first = samples[0]
      return {
        config,
        startupMs,
        eventsPerSec: (end.acked - first.acked) / Math.max(1e-3, (end.t - first.t) / 1000),
        wallEventsPerSec: end.acked / Math.max(1e-3, (end.t - readyWall) / 1000),
        drainMs: end.t - readyWall,
        rateSeries: series(samples, 500),
        batchAckMs: { p50: msOf(bucketQuantile(last.buckets.get('gateway_uplink_publish_seconds') ?? [], 0.5)), p99: msOf(bucketQuantile(last.buckets.get('gateway_uplink_publish_seconds') ?? [], 0.99)) },
        rssBytes: rss,
        cpuPct,
        stream: await countStream(server.url, fill),
        duplicateAcks: sampleWithLabel(last, 'gateway_uplink_batches_total', 'duplicate="true"'),
        timedOut,
        gatewayStderr: gw.stderr().trim().slice(-2000),
      }
    } finally {
      await stopGateway(gw)
      forget()
    }
  } finally {
    await server.cleanup()
    data.cleanup()
  }
}

const msOf = (s: number | null): number | null => s === null ? null : s * 1000

// Events/s in consecutive windows of `ms` (from the acked counter samples).
function series (samples: Array<{ t: number, acked: number }>, ms: number): number[] {
  const out: number[] = []
  let from = samples[0]
  for (const s of samples) {
    if (s.t - from.t >= ms) {
      out.push(Math.round((s.acked - from.acked) / ((s.t - from.t) / 1000)))
      from = s
    }
  }
  return out
}

function sampleWithLabel (s: Scrape, name: string, label: string): number {
  return s.series.get(`${name}{${label}}`) ?? 0
}

/** Reads every batch of the TELEMETRY stream back and checks each filled event arrived exactly once, in order. */
async function countStream (url: string, fill: FillResult): Promise<StreamCount> {
  const nc = await connect({ servers: url })
  try {
    const jsm = await jetstreamManager(nc)
    const info = await jsm.streams.info(STREAMS.telemetry.name)
    const devices = new Map(fill.perDevice.map((n, d) => [deviceName(d), { seen: new Uint8Array(n + 1), last: 0 }]))
    const count: StreamCount = { messages: info.state.messages, bytes: info.state.bytes, events: 0, duplicates: 0, missing: 0, outOfOrder: 0, foreign: 0 }
    // Fetched a few at a time, decoded in stream order (order per device is part of the check).
    const CONCURRENCY = 16
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq += CONCURRENCY) {
      const seqs = Array.from({ length: Math.min(CONCURRENCY, info.state.last_seq - seq + 1) }, (_, k) => seq + k)
      const msgs = await Promise.all(seqs.map(async (s) => await jsm.streams.getMessage(STREAMS.telemetry.name, { seq: s }).catch(() => null)))
      for (const m of msgs) {
        if (!m) continue
        for (const ev of v1.ReplicationBatch.decode(m.data).events) {
          count.events++
          const d = devices.get(ev.deviceId ?? '')
          const s = Number(ev.seq)
          if (!d || s < 1 || s >= d.seen.length) { count.foreign++; continue }
          if (d.seen[s]) count.duplicates++
          d.seen[s] = 1
          if (s < d.last) count.outOfOrder++
          d.last = s
        }
      }
    }
    for (const d of devices.values()) for (let s = 1; s < d.seen.length; s++) if (!d.seen[s]) count.missing++
    return count
  } finally {
    await nc.close()
  }
}

const int = (v: number): string => Math.round(v).toLocaleString('en-US')
const fix = (v: number | null, d = 1): string => v === null ? '?' : v.toFixed(d)
const mb = (v: number | null): string => v === null ? '?' : `${int(v / 1e6)} MB`
const CPU_COLUMNS = ['gateway', 'nats', 'client', 'other']
const pcts = (cpu: Record<string, number | null>): string => CPU_COLUMNS.map((k) => cpu[k] === undefined ? '-' : fix(cpu[k], 0)).join(' / ')

function report (settings: DrainSettings, fill: FillResult, peer: JsPublishResult, runs: DrainRun[], live: Live): BenchReport {
  const rows: string[][] = []
  const notes: string[] = []
  const failures: string[] = []
  const ratios: Array<Record<string, unknown>> = []

  const skewed = (label: string, cpu: Record<string, number | null>): void => {
    if ((cpu.other ?? 0) > OTHER_CPU_WARN_PCT) notes.push(`${label}: other processes used ${fix(cpu.other, 0)}% of a core while measuring: skewed, rerun on a quiet machine`)
  }
  const peerCpu = { client: peer.cpuPct.client, nats: peer.cpuPct.nats, other: otherCpuPct(peer.cpuPct, ['client', 'nats']) }
  skewed('peer', peerCpu)
  if ((peerCpu.client ?? 0) >= SATURATED_PCT) notes.push(`peer: the JetStream client used ${fix(peerCpu.client, 0)}% of a core: client-bound, as DESIGN says`)
  rows.push(['JetStream publish, 1 event/msg (peer)', `window ${peer.window}, ${peer.payloadBytes} B, msg id`, `${int(peer.msgsPerSec)} msg/s`,
    fix(peer.latencyMs.p50, 2), fix(peer.latencyMs.p99, 2), fix(peer.latencyMs.p999, 2), '1.00x', pcts(peerCpu)])
  if (peer.errors.length > 0) failures.push(`JetStream publish peer: errors: ${peer.errors.join('; ')}`)

  for (const run of runs) {
    const c = run.config
    const label = `drain, batchMaxEvents=${c.batchMaxEvents}, maxInFlight=${c.maxInFlight}`
    const vsPeer = run.eventsPerSec / peer.msgsPerSec
    const runCpu = { gateway: run.cpuPct.gateway, nats: run.cpuPct.nats, other: otherCpuPct(run.cpuPct, ['gateway', 'nats', 'bench']) }
    skewed(label, runCpu)
    const vsTarget = run.eventsPerSec / TARGET_DRAIN_PER_SEC
    ratios.push({ what: 'drain events/s ÷ JetStream publish msg/s (1 event/msg)', ...c, ratio: vsPeer })
    ratios.push({ what: `drain events/s ÷ target ${TARGET_DRAIN_PER_SEC}`, ...c, ratio: vsTarget, meetsTarget: vsTarget >= 1 })
    rows.push([`backlog drain ${int(fill.events)} events`, `batch ${c.batchMaxEvents}, in flight ${c.maxInFlight}`, `${int(run.eventsPerSec)} ev/s`,
      fix(run.batchAckMs.p50, 1), fix(run.batchAckMs.p99, 1), '-', `${vsPeer.toFixed(2)}x peer; ${vsTarget.toFixed(2)}x target${vsTarget >= 1 ? '' : ' (below)'}`, pcts(runCpu)])
    const st = run.stream
    if (run.timedOut) failures.push(`${label}: outbox not empty after ${settings.drainTimeoutMs} ms (rate shown is up to then)`)
    if (st.events !== fill.events || st.missing > 0 || st.duplicates > 0 || st.foreign > 0) {
      failures.push(`${label}: STREAM CHECK FAILED: ${st.events} events in ${st.messages} batches for ${fill.events} filled; missing ${st.missing}, duplicates ${st.duplicates}, unknown ${st.foreign}`)
    } else {
      notes.push(`${label}: stream check ok: ${int(st.events)} events in ${int(st.messages)} batches (${(st.bytes / 1e6).toFixed(1)} MB), each filled event exactly once${st.outOfOrder > 0 ? `, but ${st.outOfOrder} out of per-device order` : ', in per-device order'}`)
    }
    if (run.duplicateAcks > 0) notes.push(`${label}: ${run.duplicateAcks} batch(es) acknowledged as JetStream duplicates`)
    notes.push(`${label}: ${fix(run.drainMs / 1000, 2)} s from gateway ready to last ack (${int(run.wallEventsPerSec)} ev/s incl. connecting), child start-up ${int(run.startupMs)} ms, RSS ${mb(run.rssBytes.first)} at start, ${mb(run.rssBytes.max)} at most, rate per 0.5 s: ${run.rateSeries.map((r) => int(r)).join(', ')}`)
    if (run.drainMs < SHORT_DRAIN_MS) notes.push(`${label}: the drain took under ${SHORT_DRAIN_MS / 1000} s, so start-up (JIT warm-up, first reads) weighs on it: quote the full run`)
    if ((run.cpuPct.gateway ?? 0) >= SATURATED_PCT) notes.push(`${label}: the gateway used ${fix(run.cpuPct.gateway, 0)}% of a core: its event loop is the bottleneck`)
    if (run.gatewayStderr !== '') notes.push(`${label}: gateway log: ${run.gatewayStderr}`)
  }

  const part: LivePart = { rows, notes, failures, ratios }
  freshnessPart('no backlog', live.freshIdle, settings.freshness.maxInflightPerPublisher, part)
  freshnessPart(`while draining ${int(fill.events)} events`, live.freshDraining, settings.freshness.maxInflightPerPublisher, part)
  ingestPart(live.ingestIdle, live.ingestDraining, fill.events, settings.drainedBelowEvents, part)

  notes.unshift(
    `backlog: ${int(fill.events)} events over ${fill.devices} devices, ${fix(fill.meanEventBytes, 1)} B each as stored (3 readings, event and ingest ts), filled in-process at ${int(fill.eventsPerSec)} ev/s; each drain gets a copy of it, a fresh nats-server and a gateway child.`,
    'drain ev/s = events acked between the first metrics poll after the child is ready and the gateway\'s last-ack timestamp; p50/p99 of drain rows = batch publish -> JetStream ack (gateway histogram, bucket-derived).',
    'peer = the same @nats-io/jetstream client publishing one event per message with a window of acks outstanding, in its own process (DESIGN: ~30k msg/s); its p50/p99 = publish -> ack.',
    'freshness latencies are per event, whole ms on both clocks (1 ms resolution); the gateway metric covers only the newest event of each live batch. "while draining": the gateway starts on a copy of the backlog with its uplink live, the live load starts at once, and only live events ingested before the backlog is gone (/readyz: outbox under ' + settings.drainedBelowEvents + ' events) are measured; backlog events are not counted.',
    'ingest while draining: the ingest benchmark\'s load client at full speed against a gateway starting on the backlog, against the same load on the same configuration with no backlog; a note says whether the drain lasted through the measured interval.',
    'cpu = % of one core over the measured interval: gateway child / nats-server / load client (peer: the JetStream client) / everything else on the machine except the bench process (which polls and subscribes).',
  )
  return {
    settings,
    results: [{ fill }, { peer }, ...runs.map((r) => ({ drain: r })), { freshness: live.freshIdle }, { freshnessWhileDraining: live.freshDraining }, { ingestIdle: live.ingestIdle }, { ingestWhileDraining: live.ingestDraining }],
    ratios,
    table: { columns: ['measurement', 'settings', 'rate', 'p50 ms', 'p99 ms', 'p99.9 ms', 'vs peer / target', 'cpu % gw/nats/client/other'], rows },
    notes,
    failures,
  }
}
