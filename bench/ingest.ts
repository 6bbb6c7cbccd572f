// Durable ingest benchmark: QoS 1 publishes acknowledged per second, and PUBACK latency, for the
// gateway (durability full and normal) against bare aedes, at 1 and 8 publishers, same load client,
// same run. Every target is a fresh process on a fresh data directory. After each gateway run the
// outbox is counted: every PUBACK the client saw must be a committed row (accepted means durable).
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { spawnGateway } from '../test/harness/gateway.ts'
import { runLoad, type LoadOptions, type LoadResult } from './load-client.ts'
import { startBareAedes } from './peers/aedes-bare.ts'
import type { BenchOptions, BenchReport } from './run.ts'

const PUBLISHER_COUNTS = [1, 8]
/** DESIGN.md "Targets": durable ingest at least this fraction of bare aedes in the same run. */
const TARGET_RATIO = 0.75
const AEDES = 'aedes (bare)'
/** Busy CPU outside the target and the load client above which a row is flagged as skewed. */
const OTHER_CPU_WARN_PCT = 15
/** A single-threaded process at this share of a core is taken to be the bottleneck. */
const SATURATED_PCT = 90

interface Target { name: string, durability: 'full' | 'normal' | null }
const TARGETS: Target[] = [
  { name: AEDES, durability: null },
  { name: 'gateway (full)', durability: 'full' },
  { name: 'gateway (normal)', durability: 'normal' },
]

export interface IngestRun {
  target: string
  publishers: number
  load: LoadResult
  /** Rows in the outbox's events table after the run (gateway only). */
  outboxRows: number | null
  countCheck: 'ok' | 'failed' | 'n/a'
  /** What the target wrote to stderr (the gateway logs at warn), trimmed. */
  stderr: string
}

// Children still running; killed by PID if the bench itself dies, so none outlives it.
const live = new Set<number>()
process.on('exit', () => { for (const pid of live) { try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ } } })

/** Runs the ingest benchmark and returns its settings, results, ratios and table. */
export async function ingest (opts: BenchOptions): Promise<BenchReport> {
  const settings = {
    mode: opts.quick ? 'quick' : 'full',
    publisherCounts: PUBLISHER_COUNTS,
    windowPerPublisher: 100,
    warmupMs: opts.quick ? 1000 : 3000,
    durationMs: opts.quick ? 3000 : 15000,
    drainTimeoutMs: 5000,
    qos: 1,
    subscribers: 0,
    gatewaySets: ['mqtt.allowAnonymous=true', 'mqtt.ratePerDevice=1000000', 'mqtt.burstPerDevice=1000000', 'http.port=null'],
  }
  const runs: IngestRun[] = []
  for (const publishers of PUBLISHER_COUNTS) {
    for (const target of TARGETS) {
      const load: Omit<LoadOptions, 'port'> = {
        publishers,
        window: settings.windowPerPublisher,
        warmupMs: settings.warmupMs,
        durationMs: settings.durationMs,
        drainTimeoutMs: settings.drainTimeoutMs,
        clientIdPrefix: `bench-${publishers}p`,
      }
      process.stderr.write(`ingest: ${target.name}, ${publishers} publisher(s)...\n`)
      const run = target.durability === null
        ? await runAedes(load, publishers)
        : await runGateway(target, load, publishers, settings.gatewaySets)
      runs.push(run)
    }
  }
  return report(settings, runs)
}

async function runAedes (load: Omit<LoadOptions, 'port'>, publishers: number): Promise<IngestRun> {
  const peer = await startBareAedes(load.warmupMs + load.durationMs + 120000)
  live.add(peer.pid)
  try {
    const result = await runLoad({ ...load, port: peer.port, targetPid: peer.pid })
    return { target: AEDES, publishers, load: result, outboxRows: null, countCheck: 'n/a', stderr: '' }
  } finally {
    await peer.stop()
    live.delete(peer.pid)
  }
}

async function runGateway (target: Target, load: Omit<LoadOptions, 'port'>, publishers: number, sets: string[]): Promise<IngestRun> {
  const dataDir = mkdtempSync(join(tmpdir(), 'bench-ingest-'))
  try {
    const gw = await spawnGateway(dataDir, [...sets, `outbox.durability=${target.durability}`])
    live.add(gw.child.pid!)
    try {
      const result = await runLoad({ ...load, port: gw.ports.mqtt, targetPid: gw.child.pid })
      // Counted while the gateway is still up, before its graceful close could flush anything:
      // a row visible to another connection now was committed before its PUBACK went out.
      const rows = countEvents(dataDir)
      return { target: target.name, publishers, load: result, outboxRows: rows, countCheck: rows >= result.totalAcked ? 'ok' : 'failed', stderr: gw.stderr().trim().slice(-2000) }
    } finally {
      const forced = setTimeout(() => { void gw.kill('SIGKILL') }, 15000)
      await gw.kill('SIGTERM')
      clearTimeout(forced)
      live.delete(gw.child.pid!)
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true })
  }
}

function countEvents (dataDir: string): number {
  const db = new Database(join(dataDir, 'gateway.db'), { readonly: true, fileMustExist: true })
  try {
    return (db.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n
  } finally {
    db.close()
  }
}

function report (settings: Record<string, unknown>, runs: IngestRun[]): BenchReport {
  const ratios: Array<{ target: string, publishers: number, eventsPerSec: number, p99: number, meetsTarget: boolean }> = []
  const rows: string[][] = []
  const failures: string[] = []
  const notes: string[] = [
    'Publisher-only load for every target (no subscribers): the gateway has none on telemetry, so neither does the peer.',
    `ratio = target events/s ÷ bare aedes events/s at the same publisher count; DESIGN target >= ${TARGET_RATIO}x.`,
    'Latency = publish() call -> PUBACK callback in the load client, measured interval only.',
    'cpu = % of one core used over the measured interval by the target process / the load client / everything else on the machine.',
  ]
  for (const run of runs) {
    const base = runs.find((r) => r.target === AEDES && r.publishers === run.publishers)
    let ratioCell = '-'
    if (base && run.target !== AEDES) {
      const r = { target: run.target, publishers: run.publishers, eventsPerSec: run.load.eventsPerSec / base.load.eventsPerSec, p99: run.load.latencyMs.p99 / base.load.latencyMs.p99, meetsTarget: false }
      r.meetsTarget = r.eventsPerSec >= TARGET_RATIO
      ratios.push(r)
      ratioCell = `${r.eventsPerSec.toFixed(2)}x${r.meetsTarget ? '' : ' (below target)'}`
    }
    const l = run.load
    rows.push([run.target, String(run.publishers), Math.round(l.eventsPerSec).toLocaleString('en-US'), l.latencyMs.p50.toFixed(2), l.latencyMs.p99.toFixed(2), l.latencyMs.p999.toFixed(2), ratioCell, [l.cpuPct.target, l.cpuPct.client, l.cpuPct.other].map((v) => v?.toFixed(0) ?? '?').join(' / ')])
    const label = `${run.target}, ${run.publishers} publisher(s)`
    if (run.countCheck === 'failed') failures.push(`COUNT CHECK FAILED: ${label}: ${l.totalAcked} PUBACKs seen but only ${run.outboxRows} rows in events`)
    if (l.disconnects > 0) failures.push(`${label}: ${l.disconnects} connection(s) dropped during the run`)
    if (l.errors.length > 0) failures.push(`${label}: client errors: ${l.errors.join('; ')}`)
    if (l.cpuPct.client >= SATURATED_PCT) notes.push(`${label}: the load client used ${l.cpuPct.client.toFixed(0)}% of a core: it, not the target, sets this figure (a lower bound for the target)`)
    if ((l.cpuPct.target ?? 0) >= SATURATED_PCT) notes.push(`${label}: the target used ${l.cpuPct.target!.toFixed(0)}% of a core: near the limit of one event loop, so CPU-bound`)
    if ((l.cpuPct.other ?? 0) > OTHER_CPU_WARN_PCT) notes.push(`${label}: other processes used ${l.cpuPct.other!.toFixed(0)}% of a core while measuring: this row is skewed, rerun on a quiet machine`)
    if (l.totalPublished !== l.totalAcked) notes.push(`${label}: ${l.totalPublished - l.totalAcked} publish(es) never acknowledged within the drain timeout`)
    if (run.countCheck === 'ok') notes.push(`${label}: count check ok (${run.outboxRows} rows >= ${l.totalAcked} PUBACKs)`)
    if (run.stderr !== '') notes.push(`${label}: target stderr: ${run.stderr}`)
  }
  return {
    settings,
    results: runs,
    ratios,
    table: { columns: ['target', 'publishers', 'events/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'ratio vs aedes', 'cpu % target/client/other'], rows },
    notes,
    failures,
  }
}
