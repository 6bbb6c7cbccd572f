// Turns the decision-latency runs (decide.ts) into results, ratios against the idle peer and the
// DESIGN targets, a table and notes. Every gateway-side figure is a delta between two scrapes of
// /metrics that bracket the same window as the outside measurement.
import { latencyUs, type LatencyUs, type ProbeCounts, type ProbeWindow } from './decide-probe.ts'
import { formatGc, type GcStats } from './gc-trace.ts'
import { bucketDelta, bucketQuantile, type Scrape } from './metrics-scrape.ts'
import type { FillResult } from './outbox-fill.ts'
import type { PacedLoadResult } from './paced-load.ts'
import type { BenchReport } from './bench-types.ts'

/** The decide benchmark's scenarios: idle, 5k events/s background, the same while a backlog drains, background with durability=normal, and 100 sensors at 1 and 10 Hz each over the background. */
export type ScenarioKey = 'idle' | 'load' | 'drain' | 'load-normal' | 'fleet-1hz' | 'fleet-10hz'

/** DESIGN.md "Targets": decision latency p99 at 5k events/s background, and while a 1M backlog drains. */
const TARGET_P99_MS: Record<ScenarioKey, number | null> = { idle: null, load: 2, drain: 3, 'load-normal': 2, 'fleet-1hz': 2, 'fleet-10hz': 2 }
/** prom-client samples the event loop with a 10 ms timer and records whole intervals: the delay is what exceeds it. */
const LOOP_RESOLUTION_S = 0.01
/** Busy CPU outside the measured processes above which a row is flagged as skewed (% of a core). */
const OTHER_CPU_WARN_PCT = 15
/** Fewer measured decisions than this make p99.9 little more than the maximum. */
const FEW_FOR_P999 = 1000

export interface DecideSettings {
  mode: string
  rule: string
  triggerIntervalMs: number
  triggerQos: number
  commandQos: number
  warmupMs: number
  durationMs: number
  backlogEvents: number
  backlogDevices: number
  /** Drain runs are repeated (up to drainRuns) until their merged windows hold minDecisions; other scenarios last long enough at their rate. */
  drainRuns: number
  minDecisions: number
  /** The fleet scenarios: this many sensors, each with its own actuator and a trigger every interval (per scenario). */
  fleet: { sensors: number, intervalMs: Record<string, number> }
  drainCapMs: number
  drainedBelowEvents: number
  /** /readyz polls (cheap: no metrics collect) during the window; /metrics is scraped only at its edges. */
  pollMs: number
  settleMs: number
  background: { publishers: number, ratePerSec: number, qos: number, maxInflightPerPublisher: number, drainTimeoutMs: number }
  gatewaySets: string[]
}

/** A window edge: one scrape of the gateway's /metrics with CPU counters (ms) taken at the same moment. */
export interface Mark { t: number, scrapeMs: number, scrape: Scrape, cpuMs: Record<string, number | null> }

/** One /readyz poll: outbox size, events replicated so far (all lanes), link state. */
export interface Poll { t: number, outboxEvents: number, ackedEvents: number, linkUp: boolean }

/** One scenario run on a fresh gateway: the gateway's window is start..end, the probe's starts with it. */
export interface ScenarioRun {
  scenario: ScenarioKey
  durability: 'full' | 'normal'
  run: number
  start: Mark
  end: Mark
  polls: Poll[]
  /** The probe's window from start.t (drain: up to the last poll that still saw the backlog). */
  probeWindowMs: number
  /** Drain: ms from the window's start to the first poll that found the backlog gone (null: not within the run). */
  drainedAtMs: number | null
  window: ProbeWindow
  counts: ProbeCounts
  /** After the settle: decisions the gateway counted, and command outcomes by status. */
  final: { decisions: number, commands: Record<string, number> }
  load: PacedLoadResult | null
  /** The gateway's GC pauses inside its window, traced in its process (gc-trace.ts). */
  gcTrace: GcStats
  gatewayStderr: string
}

type Buckets = Array<{ le: number, count: number }>

const ms = (us: number): number => us / 1000
const fix = (v: number | null | undefined, d = 3): string => v === null || v === undefined || Number.isNaN(v) ? '?' : v.toFixed(d)
const int = (v: number): string => Math.round(v).toLocaleString('en-US')
const val = (s: Mark, name: string): number => s.scrape.values.get(name) ?? 0
const series = (s: Mark, key: string): number => s.scrape.series.get(key) ?? 0

function addBuckets (into: Buckets, more: Buckets): Buckets {
  if (into.length === 0) return more.map((b) => ({ ...b }))
  return into.map((b, i) => ({ le: b.le, count: b.count + (more[i]?.count ?? 0) }))
}

/** What the gateway reported over the window (deltas between its two scrapes), summed over the runs of a scenario. */
interface GatewaySide {
  windowMs: number
  decision: { count: number, p50Ms: number | null, p99Ms: number | null, p999Ms: number | null }
  /** Event-loop delay beyond the 10 ms sampling timer over the window (prom-client resets it at each scrape), ms; several runs: the worst. */
  loopDelayMs: { p50: number, p99: number, max: number, mean: number, minRaw: number }
  commit: { commits: number, perSec: number, meanGroupEvents: number, p50Ms: number | null, p99Ms: number | null, totalMs: number }
  /** fsyncs of the WAL (durability=full), on the thread pool: what a trigger's PUBACK waits for beyond its commit. */
  walSync: { syncs: number, p50Ms: number | null, p99Ms: number | null }
  /** Replication batches acknowledged per second: each costs the main loop two more transactions (the in-flight ledger's record before, ack after). */
  uplinkBatchesPerSec: number
  gc: { count: number, totalMs: number, over1ms: number }
  cpuPct: Record<string, number | null>
  /** How long the closing /metrics scrape took, seen from outside (the gateway's loop runs prom-client's collect). */
  scrapeMs: number
}

function gatewaySide (runs: ScenarioRun[]): GatewaySide {
  let windowMs = 0
  let decision: Buckets = []
  let commitBuckets: Buckets = []
  let syncBuckets: Buckets = []
  let commits = 0; let commitSum = 0; let groupSum = 0; let groupCount = 0; let batches = 0
  let gcCount = 0; let gcSum = 0; let gcOver1 = 0
  const loop = { p50: -Infinity, p99: -Infinity, max: -Infinity, mean: -Infinity, minRaw: Infinity }
  const cpu: Record<string, number> = {}
  const cpuKnown: Record<string, boolean> = {}
  let scrapeMs = 0
  for (const r of runs) {
    const a = r.start
    const b = r.end
    windowMs += b.t - a.t
    decision = addBuckets(decision, bucketDelta(a.scrape, b.scrape, 'gateway_decision_seconds'))
    commitBuckets = addBuckets(commitBuckets, bucketDelta(a.scrape, b.scrape, 'gateway_commit_duration_seconds'))
    syncBuckets = addBuckets(syncBuckets, bucketDelta(a.scrape, b.scrape, 'gateway_outbox_wal_sync_seconds'))
    commits += val(b, 'gateway_commit_duration_seconds_count') - val(a, 'gateway_commit_duration_seconds_count')
    commitSum += val(b, 'gateway_commit_duration_seconds_sum') - val(a, 'gateway_commit_duration_seconds_sum')
    groupSum += val(b, 'gateway_commit_group_events_sum') - val(a, 'gateway_commit_group_events_sum')
    groupCount += val(b, 'gateway_commit_group_events_count') - val(a, 'gateway_commit_group_events_count')
    batches += val(b, 'gateway_uplink_batches_total') - val(a, 'gateway_uplink_batches_total')
    const gc = bucketDelta(a.scrape, b.scrape, 'gateway_nodejs_gc_duration_seconds')
    gcCount += gc.length > 0 ? gc[gc.length - 1].count : 0
    gcOver1 += gc.length > 0 ? gc[gc.length - 1].count - (gc.find((x) => x.le === 0.001)?.count ?? 0) : 0
    gcSum += val(b, 'gateway_nodejs_gc_duration_seconds_sum') - val(a, 'gateway_nodejs_gc_duration_seconds_sum')
    const lag = (k: string): number => (val(b, `gateway_nodejs_eventloop_lag_${k}_seconds`) - LOOP_RESOLUTION_S) * 1000
    loop.p50 = Math.max(loop.p50, lag('p50')); loop.p99 = Math.max(loop.p99, lag('p99')); loop.max = Math.max(loop.max, lag('max')); loop.mean = Math.max(loop.mean, lag('mean'))
    loop.minRaw = Math.min(loop.minRaw, val(b, 'gateway_nodejs_eventloop_lag_min_seconds') * 1000)
    scrapeMs = Math.max(scrapeMs, b.scrapeMs)
    for (const k of Object.keys(b.cpuMs)) {
      const x = a.cpuMs[k]; const y = b.cpuMs[k]
      if (x === null || y === null || x === undefined || y === undefined) continue
      cpu[k] = (cpu[k] ?? 0) + (y - x)
      cpuKnown[k] = true
    }
  }
  const q = (bk: Buckets, p: number): number | null => { const v = bucketQuantile(bk, p); return v === null ? null : v * 1000 }
  return {
    windowMs,
    decision: { count: decision.length > 0 ? decision[decision.length - 1].count : 0, p50Ms: q(decision, 0.5), p99Ms: q(decision, 0.99), p999Ms: q(decision, 0.999) },
    loopDelayMs: loop,
    commit: { commits, perSec: commits / Math.max(1e-3, windowMs / 1000), meanGroupEvents: groupSum / Math.max(1, groupCount), p50Ms: q(commitBuckets, 0.5), p99Ms: q(commitBuckets, 0.99), totalMs: commitSum * 1000 },
    walSync: { syncs: syncBuckets.length > 0 ? syncBuckets[syncBuckets.length - 1].count : 0, p50Ms: q(syncBuckets, 0.5), p99Ms: q(syncBuckets, 0.99) },
    uplinkBatchesPerSec: batches / Math.max(1e-3, windowMs / 1000),
    gc: { count: gcCount, totalMs: gcSum * 1000, over1ms: gcOver1 },
    cpuPct: Object.fromEntries(Object.keys(cpu).map((k) => [k, cpuKnown[k] ? cpu[k] / windowMs * 100 : null])),
    scrapeMs,
  }
}

/** The drain's progress inside one run's window: the backlog was really there from start to end. */
interface DrainProgress {
  run: number
  /** Outbox events at the first and the last poll of the probe's window. */
  outboxEventsAtStart: number
  outboxEventsAtEnd: number
  /** Backlog-lane events JetStream acknowledged between the window's two scrapes, and per second. */
  backlogAcked: number
  backlogEventsPerSec: number
  probeWindowMs: number
  drainedAtMs: number | null
  /** Outbox events at each poll (every pollMs) from the window's start; the first drained one last. */
  outboxSeries: number[]
}

function drainProgress (r: ScenarioRun): DrainProgress {
  const acked = (s: Mark): number => series(s, 'gateway_uplink_acked_events_total{lane="backlog"}')
  const inProbe = r.polls.filter((p) => p.t <= r.start.t + r.probeWindowMs)
  return {
    run: r.run,
    outboxEventsAtStart: r.polls[0]?.outboxEvents ?? NaN,
    outboxEventsAtEnd: inProbe[inProbe.length - 1]?.outboxEvents ?? NaN,
    backlogAcked: acked(r.end) - acked(r.start),
    backlogEventsPerSec: (acked(r.end) - acked(r.start)) / Math.max(1e-3, (r.end.t - r.start.t) / 1000),
    probeWindowMs: r.probeWindowMs,
    drainedAtMs: r.drainedAtMs,
    outboxSeries: r.polls.map((p) => p.outboxEvents),
  }
}

export interface ScenarioResult {
  scenario: ScenarioKey
  durability: 'full' | 'normal'
  runs: number
  measuredTriggers: number
  /** The probe's windows, summed over runs. */
  probeWindowMs: number
  /** Sensor publish -> actuator receives the command (µs), measured outside the gateway. */
  decisionUs: LatencyUs
  /** Sensor publish -> the trigger's own PUBACK (µs). */
  triggerPubackUs: LatencyUs
  commandBeforePuback: number
  /** Median of (command arrival - the trigger's PUBACK arrival), µs: about 0 or positive when the command waits for the commit. */
  commandMinusPubackP50Us: number | null
  gateway: GatewaySide
  drain: DrainProgress[] | null
  counts: ProbeCounts[]
  final: Array<ScenarioRun['final']>
  load: Array<PacedLoadResult | null>
  /** Trigger slots the probe skipped inside the windows (each counted in decisionUs as waiting from its due time). */
  skippedSlots: number
  /** GC pauses over the runs: counts and totals summed, p99 and max the worst run's. */
  gcTrace: GcStats
}

function scenarioResult (runs: ScenarioRun[]): ScenarioResult {
  const decision: number[] = []
  const puback: number[] = []
  const diff: number[] = []
  for (const r of runs) { decision.push(...r.window.decisionUs); puback.push(...r.window.pubackUs); diff.push(...r.window.commandMinusPubackUs) }
  diff.sort((a, b) => a - b)
  return {
    scenario: runs[0].scenario,
    durability: runs[0].durability,
    runs: runs.length,
    measuredTriggers: runs.reduce((n, r) => n + r.window.triggers, 0),
    probeWindowMs: runs.reduce((n, r) => n + r.probeWindowMs, 0),
    decisionUs: latencyUs(decision),
    triggerPubackUs: latencyUs(puback),
    commandBeforePuback: runs.reduce((n, r) => n + r.window.commandBeforePuback, 0),
    commandMinusPubackP50Us: diff.length > 0 ? diff[Math.floor(diff.length / 2)] : null,
    gateway: gatewaySide(runs),
    drain: runs[0].scenario === 'drain' ? runs.map(drainProgress) : null,
    counts: runs.map((r) => r.counts),
    final: runs.map((r) => r.final),
    load: runs.map((r) => r.load),
    skippedSlots: runs.reduce((n, r) => n + r.window.skippedSlots, 0),
    gcTrace: mergeGc(runs.map((r) => r.gcTrace)),
  }
}

const DESCRIBE: Record<ScenarioKey, string> = {
  idle: 'idle (no background), uplink live',
  load: '5k ev/s background, uplink live',
  drain: '5k ev/s + backlog draining',
  'load-normal': '5k ev/s, durability=normal',
  'fleet-1hz': '100 sensors x 1 Hz + 5k ev/s',
  'fleet-10hz': '100 sensors x 10 Hz + 5k ev/s',
}

function mergeGc (gs: GcStats[]): GcStats {
  const worst = (k: 'p99Ms' | 'maxMs'): number | null => gs.reduce<number | null>((m, g) => g[k] === null ? m : Math.max(m ?? 0, g[k]!), null)
  return { count: gs.reduce((n, g) => n + g.count, 0), totalMs: gs.reduce((n, g) => n + g.totalMs, 0), p99Ms: worst('p99Ms'), maxMs: worst('maxMs') }
}

/** Builds the report of the decision benchmark. */
export function report (settings: DecideSettings, fill: FillResult | null, runs: ScenarioRun[]): BenchReport {
  const keys = [...new Set(runs.map((r) => r.scenario))]
  const results = keys.map((k) => scenarioResult(runs.filter((r) => r.scenario === k)))
  const idle = results.find((r) => r.scenario === 'idle')
  const rows: string[][] = []
  const notes: string[] = []
  const failures: string[] = []
  const ratios: Array<Record<string, unknown>> = []

  for (const r of results) {
    const d = r.decisionUs
    const g = r.gateway
    const target = TARGET_P99_MS[r.scenario]
    const label = `${r.scenario}: ${DESCRIBE[r.scenario]}`
    let vs = '1.00x (peer)'
    if (idle && r !== idle) {
      const ratio = d.p99 / idle.decisionUs.p99
      ratios.push({ what: `decision p99, ${r.scenario} ÷ idle`, scenario: r.scenario, ratio })
      vs = `${ratio.toFixed(2)}x idle`
    }
    if (target !== null) {
      const met = ms(d.p99) <= target
      ratios.push({ what: `decision p99 ÷ target ${target} ms`, scenario: r.scenario, ratio: ms(d.p99) / target, meetsTarget: met })
      vs += `; p99 <= ${target} ms: ${met ? 'met' : 'MISSED'}`
    }
    if (g.decision.p99Ms !== null) ratios.push({ what: 'decision p99: gateway metric ÷ outside', scenario: r.scenario, ratio: g.decision.p99Ms / ms(d.p99) })
    const loadCpu = r.load.find((l) => l !== null)?.clientCpuPct ?? null
    const cpuCell = (v: number | null | undefined): string => v === null || v === undefined ? '-' : fix(v, 0)
    const other = g.cpuPct.machine === null || g.cpuPct.machine === undefined ? null : Math.max(0, g.cpuPct.machine - (g.cpuPct.gateway ?? 0) - (g.cpuPct.nats ?? 0) - (g.cpuPct.bench ?? 0) - (loadCpu ?? 0))
    if ((other ?? 0) > OTHER_CPU_WARN_PCT) notes.push(`${r.scenario}: other processes used ${fix(other, 0)}% of a core while measuring: skewed, rerun on a quiet machine`)
    rows.push([
      label,
      `${(r.probeWindowMs / 1000).toFixed(1)} s${r.runs > 1 ? ` (${r.runs} runs)` : ''}`,
      `${int(d.count)}/${int(r.measuredTriggers)}`,
      fix(ms(d.p50)), fix(ms(d.p99)), fix(ms(d.p999)), fix(ms(d.max), 2),
      `${fix(g.decision.p50Ms)} / ${fix(g.decision.p99Ms)}`,
      `${fix(ms(r.triggerPubackUs.p50), 2)} / ${fix(ms(r.triggerPubackUs.p99), 2)}`,
      `${fix(g.loopDelayMs.p99, 1)} / ${fix(g.loopDelayMs.max, 1)}`,
      formatGc(r.gcTrace),
      vs,
      [g.cpuPct.gateway, g.cpuPct.nats, loadCpu, other].map(cpuCell).join(' / '),
    ])
    const c = g.commit
    notes.push(`${r.scenario}: trigger PUBACK (commit incl.) p50 ${fix(ms(r.triggerPubackUs.p50), 2)} ms; command before its trigger's PUBACK for ${int(r.commandBeforePuback)} of ${int(d.count)} decisions (median command - PUBACK ${r.commandMinusPubackP50Us === null ? '?' : fix(ms(r.commandMinusPubackP50Us), 2)} ms); gateway commits ${fix(c.perSec, 0)}/s, ${fix(c.meanGroupEvents, 1)} items each, p50/p99 ${fix(c.p50Ms, 2)}/${fix(c.p99Ms, 2)} ms (bucket-derived), ${fix(c.totalMs / Math.max(1, g.windowMs) * 100, 1)}% of the window inside commits; WAL syncs ${fix(g.walSync.syncs / Math.max(1e-3, g.windowMs / 1000), 0)}/s, p50/p99 ${fix(g.walSync.p50Ms, 2)}/${fix(g.walSync.p99Ms, 2)} ms (bucket-derived); ${fix(g.uplinkBatchesPerSec, 0)} uplink batches/s (each two more transactions on the loop); GC ${g.gc.count} pauses (${g.gc.over1ms} over 1 ms, ${fix(g.gc.totalMs, 1)} ms in all); gateway loop delay p50 ${fix(g.loopDelayMs.p50, 2)} ms, mean ${fix(g.loopDelayMs.mean, 2)} ms; probe (measuring process) loop delay p99/max ${fix(Math.max(...r.counts.map((x) => x.probeLoopDelayMs.p99)), 1)}/${fix(Math.max(...r.counts.map((x) => x.probeLoopDelayMs.max)), 1)} ms; closing /metrics scrape took ${fix(g.scrapeMs, 1)} ms`)
    if (g.cpuPct.gatewayLoopRunQueue !== null && g.cpuPct.gatewayLoopRunQueue !== undefined) notes.push(`${r.scenario}: the gateway's loop thread was on a CPU ${fix(g.cpuPct.gatewayLoopOnCpu, 0)}% of the window and runnable but waiting for a CPU ${fix(g.cpuPct.gatewayLoopRunQueue, 1)}%, ${fix(1000 * g.cpuPct.gatewayLoopRunQueue / Math.max(1e-9, g.cpuPct.gatewayLoopSlices ?? 0), 0)} µs per turn on a CPU (the probe's loop thread ${fix(g.cpuPct.probeLoopRunQueue, 1)}%): the machine's scheduling, not the gateway's work (schedstat)`)
    if (d.count < FEW_FOR_P999) notes.push(`${r.scenario}: only ${d.count} decisions measured: p99.9 is about the maximum`)
    for (const p of r.drain ?? []) {
      notes.push(`drain run ${p.run}: backlog ${int(p.outboxEventsAtStart)} events in the outbox when the window opened (link up) -> ${int(p.outboxEventsAtEnd)} at the probe window's end ${fix(p.probeWindowMs / 1000, 2)} s later; ${int(p.backlogAcked)} backlog events acked by JetStream inside the gateway's window (${int(p.backlogEventsPerSec)} ev/s); ${p.drainedAtMs === null ? 'still draining when the run ended' : `drained (< ${int(settings.drainedBelowEvents)} left) ${fix(p.drainedAtMs / 1000, 2)} s after link-up`}; outbox every ${settings.pollMs} ms: ${p.outboxSeries.map(int).join(', ')}`)
      if (p.backlogAcked <= 0) failures.push(`drain run ${p.run}: no backlog event was acked inside the window: the drain did not run while measuring`)
    }
    r.counts.forEach((k, i) => {
      const at = `${r.scenario}${r.runs > 1 ? ` run ${i + 1}` : ''}`
      const f = r.final[i]
      if (k.mismatched > 0 || k.extra > 0 || k.missing > 0 || k.duplicateIds > 0) failures.push(`${at}: COUNT CHECK FAILED: ${k.triggers} triggers, ${k.commands} commands (${k.matched} matched, ${k.mismatched} wrong name, ${k.extra} extra, ${k.duplicateIds} duplicate ids, ${k.missing} missing)`)
      else notes.push(`${at}: count check ok: ${int(k.triggers)} triggers (warm-up included) -> ${int(k.matched)} commands, each the expected one, in order; gateway counted ${int(f.decisions)} decisions, commands ${Object.entries(f.commands).map(([s, n]) => `${s} ${int(n)}`).join(', ')}`)
      if (f.decisions !== k.triggers) failures.push(`${at}: the gateway counted ${f.decisions} decisions for ${k.triggers} triggers`)
      for (const bad of ['rejected', 'timed_out', 'expired']) if ((f.commands[bad] ?? 0) > 0) failures.push(`${at}: ${f.commands[bad]} command(s) ${bad}`)
      if (k.unacked > 0) failures.push(`${at}: ${k.unacked} trigger publish(es) never acknowledged`)
      if (k.disconnects > 0) failures.push(`${at}: ${k.disconnects} probe connection(s) dropped`)
      if (k.errors.length > 0) failures.push(`${at}: probe errors: ${k.errors.join('; ')}`)
      if (k.skippedSlots > 0) notes.push(`${at}: the probe missed ${k.skippedSlots} trigger slot(s) (its own timer was late); each counts as a decision waiting from its due time to the next command`)
      const l = r.load[i]
      if (l) {
        notes.push(`${at}: background ${l.publishers} devices, ${int(l.ackedPerSec)} ev/s acked (QoS 1, PUBACK p50/p99 ${fix(l.pubackMs.p50, 2)}/${fix(l.pubackMs.p99, 2)} ms)`)
        if (l.skipped > 0) notes.push(`${at}: background skipped ${l.skipped} publishes (window full): the offered 5k/s was not met`)
        if (l.disconnects > 0) failures.push(`${at}: background load lost ${l.disconnects} connection(s)`)
        if (l.errors.length > 0) failures.push(`${at}: background load errors: ${l.errors.join('; ')}`)
      }
    })
    // The drain's outage is staged: its reconnect warnings are expected and only counted.
    const lines = runs.filter((x) => x.scenario === r.scenario).flatMap((x) => x.gatewayStderr.split('\n')).filter((l) => l.trim() !== '')
    const outage = lines.filter((l) => l.includes('cannot reach the cloud')).length
    const rest = r.drain ? lines.filter((l) => !l.includes('cannot reach the cloud')) : lines
    if (outage > 0 && r.drain) notes.push(`${r.scenario}: ${outage} expected 'cannot reach the cloud' warnings while the cloud was stopped`)
    if (rest.length > 0) notes.push(`${r.scenario}: gateway log: ${rest.join(' | ').slice(0, 1500)}`)
    if (d.count === 0) failures.push(`${r.scenario}: no decision measured`)
  }
  // Node records whole timer intervals (>= ~10 ms, a timer may fire a little early); far below would mean it records the delay alone.
  if (results.some((r) => r.gateway.loopDelayMs.minRaw < LOOP_RESOLUTION_S * 1000 * 0.8)) notes.push('gateway loop delay: the smallest sampled interval is well under 10 ms, so subtracting the sampling interval is wrong for this Node version: read the raw values in the JSON')

  notes.unshift(
    `decision = sensor publish() call -> actuator 'message' event, one process and clock (performance.now()), one trigger every ${settings.triggerIntervalMs} ms alternating v=100/v=0 (QoS ${settings.triggerQos}); each is one decision and one QoS ${settings.commandQos} command on devices/act-x/commands, matched by order and checked by name; the actuator (persistent session) acknowledges each at once. fleet-*: ${settings.fleet.sensors} sensor/actuator pairs in the same probe process, each sensor triggering at its own rate, spread over the interval.`,
    'skipped slots: the probe keeps a fixed pace and never bursts; a slot its timer missed is recorded as a decision that waited from its due time to the command of the next trigger (no coordinated omission). decisions = measured / triggers in the window.',
    'gc = the gateway\'s GC pauses inside its window (count / p99 ms / max ms), traced in its process by a preloaded PerformanceObserver (bench/gc-trace.ts); several runs: counts summed, p99 and max the worst run\'s.',
    `window: ${fmtWindow(settings)}; /metrics is scraped only at the window's edges (a scrape blocks the gateway's loop ~2 ms), /readyz polled every ${settings.pollMs} ms in between.`,
    'gw metric = the gateway\'s gateway_decision_seconds (publish handed to ingest -> command handed to aedes), bucket-derived over the window; PUBACK = the trigger\'s own PUBACK (its commit, fsync with durability=full).',
    'gw loop delay = prom-client\'s event-loop delay over the gateway\'s window (monitorEventLoopDelay with a 10 ms timer, reset by the opening scrape), minus the 10 ms, ms; several runs: the worst.',
    'cpu = % of one core over the window: gateway / nats-server / background load client (its own measured interval) / everything else except the bench process and the probe process.',
    `durability: full (the default: fsync per commit group) except load-normal; uplink live to a fresh nats-server in every scenario${fill ? `; backlog ${int(fill.events)} telemetry events over ${fill.devices} devices filled in-process (${int(fill.eventsPerSec)} ev/s), a copy per drain run, the cloud stopped until the probe and the load run` : ''}.`,
  )
  return {
    settings: { ...settings },
    results: [{ fill }, ...results],
    ratios,
    table: { columns: ['scenario', 'window', 'decisions', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'gw metric p50/p99', 'PUBACK p50/p99', 'gw loop delay p99/max', 'gc count / p99 / max ms', 'vs idle; target', 'cpu % gw/nats/load/other'], rows },
    notes,
    failures,
  }
}

function fmtWindow (s: DecideSettings): string {
  return `${s.warmupMs} ms warm-up, then ${s.durationMs} ms (drain: from link-up to the last /readyz poll that still saw >= ${s.drainedBelowEvents} events in the outbox, at most ${s.drainCapMs} ms, runs repeated up to ${s.drainRuns} until they hold ${s.minDecisions} decisions, merged)`
}
