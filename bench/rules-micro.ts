// Micro-benchmark of RuleEngine.evaluate() on the ingest path: 100 rules over 1000 devices, each
// device concerned by ~3 of them (thresholds with hysteresis, debounce, rate of change, sliding and
// tumbling windows, and/or/not, group any). Standalone, not part of `npm run bench`:
//   node --import tsx bench/rules-micro.ts [--quick] [--events N] [--out results.json]
// Reports mean ns/event (timed in bulk), per-call p50/p99/p99.9 (each call timed; the timer's own
// cost is measured and shown beside them), the cost of a device without rules in the same run
// (the floor: one map lookup), and tick() cost.
import { writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { RuleEngine, type RuleEvent } from '../gateway/rules/engine.ts'
import type { Condition, Rule, RuleSet } from '../proto/rules/schema.ts'

const DEVICES = 1000
const RULES = 100
const DEVICES_PER_RULE = 30 // 100 x 30 / 1000 = 3 rules per device
const EVENTS_PER_SEC = 5000 // simulated ingest rate: sets how fast the clock moves per event
const TICK_MS = 100

const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, events: { type: 'string' }, out: { type: 'string' } } })
const measured = Number(values.events ?? (values.quick ? 200_000 : 1_000_000))
// Warm-up covers more than the longest window (60 s of simulated time), so windows are full and
// their rings grown before anything is measured.
const warmup = 400_000

const dev = (i: number): string => `dev-${String(i % DEVICES).padStart(4, '0')}`

/** Rule r concerns devices r*10 .. r*10+29 (mod 1000), so each device is in exactly 3 rules. */
function buildRuleSet (): RuleSet {
  const groups: Record<string, string[]> = {}
  const rules: Rule[] = []
  for (let r = 0; r < RULES; r++) {
    const devices = Array.from({ length: DEVICES_PER_RULE }, (_, j) => dev(r * 10 + j))
    const conditions: Condition[] = [
      { reading: 'temperature', above: 30, hysteresis: 2 },
      { reading: 'temperature', below: 5, for: 5000 },
      { reading: 'vibration', rateOfChange: { perSecond: 50 } },
      { reading: 'temperature', window: { kind: 'sliding', ms: 60_000, agg: 'avg', maxPoints: 1000 }, above: 25 },
      { reading: 'temperature', window: { kind: 'tumbling', ms: 10_000, agg: 'max' }, above: 35 },
      { and: [{ reading: 'temperature', above: 28 }, { not: { reading: 'vibration', below: 1 } }] },
      { or: [{ reading: 'temperature', above: 33 }, { stale: { ms: 30_000 } }] },
      { reading: 'temperature', window: { kind: 'sliding', ms: 10_000, agg: 'max', maxPoints: 200 }, above: 34 },
      { reading: 'temperature', above: 32, hysteresis: 1, for: 2000 },
      { reading: 'temperature', above: 31 }, // replaced by a group rule below
    ]
    const then = [{ command: { device: '{device}-act', name: 'on', ttlMs: 5000 } }, { raiseAlert: { id: `r${r}-{device}`, severity: 'warning' as const, message: '{reading}={value}' } }]
    const els = [{ command: { device: '{device}-act', name: 'off' } }, { clearAlert: { id: `r${r}-{device}` } }]
    if (r % 10 === 9) {
      groups[`g${r}`] = devices
      rules.push({ id: `rule-${r}`, when: { group: `g${r}`, any: { reading: 'temperature', above: 31, hysteresis: 1 } }, then: [{ raiseAlert: { id: `g${r}-warm`, severity: 'critical', message: '{device} warm' } }], else: [{ clearAlert: { id: `g${r}-warm` } }] })
    } else {
      rules.push({ id: `rule-${r}`, devices, when: conditions[r % 10], then, else: els, cooldownMs: r % 3 === 0 ? 10_000 : undefined })
    }
  }
  return { version: 'bench-1', groups, rules }
}

// A noisy signal around 20 with rare spikes, so rules do fire and clear now and then.
let seed = 42
const rand = (): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff }

function run (): Record<string, unknown> {
  let now = 1_700_000_000_000
  const engine = new RuleEngine(buildRuleSet(), { now: () => now })
  // One reusable event object per device: the loop mutates values instead of allocating.
  const pool: RuleEvent[] = Array.from({ length: DEVICES }, (_, i) => ({
    deviceId: dev(i), eventTsMs: now, ingestTsMs: now, readings: [{ name: 'temperature', value: 20 }, { name: 'vibration', value: 2 }],
  }))
  const stranger: RuleEvent = { deviceId: 'no-rules-device', eventTsMs: now, ingestTsMs: now, readings: [{ name: 'temperature', value: 20 }] }
  const stepMs = 1000 / EVENTS_PER_SEC
  let nextTick = now + TICK_MS
  let decisions = 0
  let tickTimeMs = 0
  let ticks = 0
  const prepare = (): RuleEvent => {
    now += stepMs
    const ev = pool[Math.floor(rand() * DEVICES)]
    ev.eventTsMs = now
    ev.ingestTsMs = now
    const spike = rand() < 0.002 ? 20 : 0
    ev.readings[0].value = 20 + (rand() - 0.5) * 4 + spike
    ev.readings[1].value = 2 + rand() + (rand() < 0.001 ? 100 : 0)
    return ev
  }
  const maybeTick = (): void => {
    if (now < nextTick) return
    nextTick += TICK_MS
    const t = performance.now()
    decisions += engine.tick().length
    tickTimeMs += performance.now() - t
    ticks++
  }
  for (let i = 0; i < warmup; i++) { decisions += engine.evaluate(prepare()).length; maybeTick() }

  // Bulk: the mean without a timer around each call (the timer costs about as much as a call).
  const evs: RuleEvent[] = []
  let bulkMs = 0
  for (let done = 0; done < measured;) {
    const n = Math.min(1000, measured - done)
    // Prepared outside the timed loop, and copied: the pool's objects are reused.
    evs.length = 0
    for (let i = 0; i < n; i++) evs.push(structuredCloneEvent(prepare()))
    const t = performance.now()
    for (let i = 0; i < n; i++) decisions += engine.evaluate(evs[i]).length
    bulkMs += performance.now() - t
    maybeTick()
    done += n
  }

  // Per call: each evaluate() timed on its own, for the tail.
  const samples = new Float64Array(measured)
  // The same calls split by outcome: a decision allocates and fills actions, most calls do not.
  const quiet = new Float64Array(measured)
  const deciding = new Float64Array(measured)
  let nQuiet = 0
  let nDeciding = 0
  for (let i = 0; i < measured; i++) {
    const ev = prepare()
    const t = performance.now()
    const n = engine.evaluate(ev).length
    samples[i] = performance.now() - t
    decisions += n
    if (n > 0) deciding[nDeciding++] = samples[i]
    else quiet[nQuiet++] = samples[i]
    maybeTick()
  }
  const timer = new Float64Array(100_000)
  for (let i = 0; i < timer.length; i++) { const t = performance.now(); timer[i] = performance.now() - t }
  const noRulesNs = floorNs(engine, stranger, measured)
  samples.sort()
  timer.sort()
  const quietSorted = quiet.subarray(0, nQuiet).sort()
  const decidingSorted = deciding.subarray(0, nDeciding).sort()
  const pct = (a: Float64Array, p: number): number => a.length === 0 ? NaN : a[Math.min(a.length - 1, Math.floor(a.length * p))] * 1e6
  const stats = engine.stats()
  return {
    settings: { devices: DEVICES, rules: RULES, rulesPerDevice: (RULES * DEVICES_PER_RULE) / DEVICES, simulatedEventsPerSec: EVENTS_PER_SEC, tickMs: TICK_MS, warmup, measured, node: process.version },
    bulkNsPerEvent: (bulkMs * 1e6) / measured,
    perCallNs: { p50: pct(samples, 0.5), p99: pct(samples, 0.99), p999: pct(samples, 0.999), max: samples[samples.length - 1] * 1e6 },
    perCallNoDecisionNs: { count: quietSorted.length, p50: pct(quietSorted, 0.5), p99: pct(quietSorted, 0.99), p999: pct(quietSorted, 0.999) },
    perCallWithDecisionNs: { count: decidingSorted.length, p50: pct(decidingSorted, 0.5), p99: pct(decidingSorted, 0.99), p999: pct(decidingSorted, 0.999) },
    timerOverheadNs: { p50: pct(timer, 0.5), p99: pct(timer, 0.99) },
    noRulesDeviceNsPerEvent: noRulesNs,
    tick: { count: ticks, meanUs: (tickTimeMs * 1000) / Math.max(1, ticks) },
    decisions,
    engine: stats,
  }
}

// The floor, timed in bulk like the mean: an event of a device that no rule concerns (one map
// lookup). Its own small function, run three times, so it is measured optimised.
function floorNs (engine: RuleEngine, ev: RuleEvent, n: number): number {
  let ns = 0
  let sink = 0
  for (let round = 0; round < 3; round++) {
    const t = performance.now()
    for (let i = 0; i < n; i++) sink += engine.evaluate(ev).length
    ns = ((performance.now() - t) * 1e6) / n
  }
  return sink === 0 ? ns : NaN
}

// Bulk timing needs distinct objects per call in a batch (the pool holds one per device).
function structuredCloneEvent (ev: RuleEvent): RuleEvent {
  return { deviceId: ev.deviceId, eventTsMs: ev.eventTsMs, ingestTsMs: ev.ingestTsMs, readings: ev.readings.map((r) => ({ name: r.name, value: r.value })) }
}

const r = run()
const f = (x: number): string => x.toFixed(0)
const pc = r.perCallNs as Record<string, number>
const tm = r.timerOverheadNs as Record<string, number>
const nd = r.perCallNoDecisionNs as Record<string, number>
const wd = r.perCallWithDecisionNs as Record<string, number>
const eng = r.engine as { rulesEvaluated: number, events: number, windowPointsDropped: number }
const rows: Array<[string, string]> = [
  ['evaluate(), mean (bulk)', `${f(r.bulkNsPerEvent as number)} ns/event`],
  ['evaluate(), per call p50 / p99 / p99.9', `${f(pc.p50)} / ${f(pc.p99)} / ${f(pc.p999)} ns (timer itself: p50 ${f(tm.p50)} ns)`],
  ['  calls without a decision p50 / p99 / p99.9', `${f(nd.p50)} / ${f(nd.p99)} / ${f(nd.p999)} ns (${String(nd.count)} calls)`],
  ['  calls with decisions p50 / p99 / p99.9', `${f(wd.p50)} / ${f(wd.p99)} / ${f(wd.p999)} ns (${String(wd.count)} calls)`],
  ['device without rules (floor), mean (bulk)', `${f(r.noRulesDeviceNsPerEvent as number)} ns/event`],
  ['rule states run per event (of 100 rules)', (eng.rulesEvaluated / eng.events).toFixed(2)],
  ['tick() every 100 ms (simulated), mean', `${((r.tick as { meanUs: number }).meanUs).toFixed(1)} µs`],
  ['decisions / window points dropped', `${String(r.decisions)} / ${String(eng.windowPointsDropped)}`],
]
const w = Math.max(...rows.map((x) => x[0].length))
console.log(`rules-micro: ${RULES} rules, ${DEVICES} devices, ~3 rules/device, ${measured} events measured\n`)
for (const [k, v] of rows) console.log(`${k.padEnd(w)} | ${v}`)
if (values.out) writeFileSync(values.out, JSON.stringify(r, null, 2) + '\n')
