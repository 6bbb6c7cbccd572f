// The rules engine's semantics with a controllable clock: each condition kind, edge triggering,
// hysteresis, debounce, cooldown, alert state, the device index and hot swap. No I/O, no sleeps:
// time moves only when a test moves it.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { RuleEngine, type Decision, type RuleEngineOptions } from '../gateway/rules/engine.ts'
import { SlidingWindow } from '../gateway/rules/windows.ts'
import type { Action, Condition, Rule, RuleSet } from '../proto/rules/schema.ts'

/** A clock the test moves by hand; starts on a whole second so tumbling windows align. */
class Clock {
  t = 1_700_000_000_000
  readonly now = (): number => this.t
  advance (ms: number): void { this.t += ms }
}

const ON: Action[] = [{ command: { device: 'cooler-1', name: 'on' } }]
const OFF: Action[] = [{ command: { device: 'cooler-1', name: 'off' } }]

/** A rule on device s1 that commands the cooler on when it fires and off when it clears. */
function rule (id: string, when: Condition, extra: Partial<Rule> = {}): Rule {
  return { id, devices: ['s1'], when, then: ON, else: OFF, ...extra }
}

function setup (rules: Rule[], extra: Partial<RuleSet> = {}, opts: Partial<RuleEngineOptions> = {}) {
  const clock = new Clock()
  const engine = new RuleEngine({ version: 'v1', ...extra, rules }, { now: clock.now, ...opts })
  const send = (deviceId: string, readings: Record<string, number>, eventTsMs = clock.t): readonly Decision[] =>
    engine.evaluate({ deviceId, eventTsMs, ingestTsMs: clock.t, readings: Object.entries(readings).map(([name, value]) => ({ name, value })) })
  return { clock, engine, send }
}

/** Decisions as `rule:kind@device`, the shape most assertions compare. */
const kinds = (ds: readonly Decision[]): string[] => ds.map((d) => `${d.ruleId}:${d.kind}@${d.trigger.deviceId}`)

test('rules: threshold with hysteresis fires once on a flapping signal, clears only below level - hysteresis', () => {
  const { send, clock } = setup([rule('hot', { reading: 'temp', above: 30, hysteresis: 2 })])
  const all: Decision[] = []
  for (let i = 0; i < 1000; i++) all.push(...send('s1', { temp: i % 2 === 0 ? 30.5 : 29 }))
  assert.deepEqual(kinds(all), ['hot:fired@s1'])
  assert.deepEqual(all[0].actions, ON)
  assert.deepEqual(all[0].trigger, { deviceId: 's1', reading: 'temp', value: 30.5, eventTsMs: clock.t })
  assert.equal(all[0].ruleSetVersion, 'v1')
  assert.equal(all[0].atMs, clock.t)
  assert.ok(all[0].evalMicros >= 0 && all[0].evalMicros < 10_000)
  assert.deepEqual(kinds(send('s1', { temp: 28 })), [], '28 is not below 30 - 2')
  const cleared = send('s1', { temp: 27.9 })
  assert.deepEqual(kinds(cleared), ['hot:cleared@s1'])
  assert.deepEqual(cleared[0].actions, OFF)
  assert.deepEqual(kinds(send('s1', { temp: 30 })), [], 'the level itself is not above it')
  assert.deepEqual(kinds(send('s1', { temp: 30.1 })), ['hot:fired@s1'])
})

test('rules: below with hysteresis mirrors above', () => {
  const { send } = setup([rule('cold', { reading: 'temp', below: 5, hysteresis: 1 })])
  assert.deepEqual(kinds(send('s1', { temp: 5 })), [])
  assert.deepEqual(kinds(send('s1', { temp: 4.9 })), ['cold:fired@s1'])
  assert.deepEqual(kinds(send('s1', { temp: 5.9 })), [])
  assert.deepEqual(kinds(send('s1', { temp: 4 })), [])
  assert.deepEqual(kinds(send('s1', { temp: 6.1 })), ['cold:cleared@s1'])
})

test('rules: a rule keeps separate state per listed device and ignores other readings', () => {
  const { send } = setup([rule('hot', { reading: 'temp', above: 30 }, { devices: ['a', 'b'], then: [{ command: { device: '{device}-fan', name: 'on' } }] })])
  const a = send('a', { temp: 31, humidity: 99 })
  assert.deepEqual(kinds(a), ['hot:fired@a'])
  assert.deepEqual(a[0].actions, [{ command: { device: 'a-fan', name: 'on' } }], '{device} is filled from the trigger')
  assert.deepEqual(kinds(send('b', { humidity: 10 })), [], 'no temp reading: b stays as it was')
  assert.deepEqual(kinds(send('b', { temp: 35 })), ['hot:fired@b'])
  assert.deepEqual(kinds(send('a', { temp: 20 })), ['hot:cleared@a'])
  assert.deepEqual(kinds(send('b', { temp: 33 })), [])
})

test('rules: debounce fires only after the condition held for the whole `for`, via tick', () => {
  const { send, clock, engine } = setup([
    rule('door-open', { reading: 'door', above: 0.5, for: 5000 }),
    rule('door-open-2', { reading: 'door', above: 0.5 }, { devices: ['s2'], debounceMs: 5000 }),
  ])
  assert.deepEqual(kinds(send('s1', { door: 1 })), [])
  clock.advance(4999)
  assert.deepEqual(kinds(engine.tick()), [])
  assert.deepEqual(kinds(send('s1', { door: 0 })), [], 'closed before 5 s: nothing')
  clock.advance(1)
  assert.deepEqual(kinds(engine.tick()), [])
  send('s1', { door: 1 })
  send('s2', { door: 1 })
  clock.advance(4999)
  assert.deepEqual(kinds(engine.tick()), [])
  clock.advance(1)
  const fired = engine.tick()
  assert.deepEqual(kinds(fired), ['door-open:fired@s1', 'door-open-2:fired@s2'])
  assert.equal(fired[0].trigger.reading, 'door', 'a tick decision names the reading that started it')
  clock.advance(100)
  assert.deepEqual(kinds(engine.tick()), [])
  assert.deepEqual(kinds(send('s1', { door: 1 })), [], 'fires once, not on every event while true')
  assert.deepEqual(kinds(send('s1', { door: 0 })), ['door-open:cleared@s1'])
})

test('rules: rate of change uses device event time and skips out-of-order readings', () => {
  const { send, clock } = setup([rule('shock', { reading: 'vib', rateOfChange: { perSecond: 5 } })])
  const t0 = clock.t
  assert.deepEqual(kinds(send('s1', { vib: 20 }, t0)), [])
  assert.deepEqual(kinds(send('s1', { vib: 21 }, t0 + 1000)), [], '1/s')
  const fired = send('s1', { vib: 30 }, t0 + 2000)
  assert.deepEqual(kinds(fired), ['shock:fired@s1'], '9/s')
  assert.deepEqual(fired[0].trigger, { deviceId: 's1', reading: 'vib', value: 30, eventTsMs: t0 + 2000 })
  assert.deepEqual(kinds(send('s1', { vib: 100 }, t0 + 1500)), [], 'older than the last reading: skipped')
  assert.deepEqual(kinds(send('s1', { vib: 31 }, t0 + 3000)), ['shock:cleared@s1'])
  assert.deepEqual(kinds(send('s1', { vib: 20 }, t0 + 3500)), ['shock:fired@s1'], 'a fall counts too: |-22/s|')
})

test('rules: tumbling windows decide at window close (avg, min, max, count)', () => {
  const cases: Array<{ agg: 'avg' | 'min' | 'max' | 'count', cmp: { above: number } | { below: number }, values: number[], expect: number }> = [
    { agg: 'avg', cmp: { above: 10 }, values: [5, 20, 20], expect: 15 },
    { agg: 'min', cmp: { below: 0 }, values: [3, -1, 4], expect: -1 },
    { agg: 'max', cmp: { above: 50 }, values: [10, 60, 20], expect: 60 },
    { agg: 'count', cmp: { above: 2 }, values: [1, 1, 1], expect: 3 },
  ]
  for (const c of cases) {
    const { send, clock, engine } = setup([rule(c.agg, { reading: 'v', window: { kind: 'tumbling', ms: 1000, agg: c.agg }, ...c.cmp })])
    const t0 = clock.t
    for (const [i, v] of c.values.entries()) {
      clock.t = t0 + 100 * (i + 1)
      assert.deepEqual(kinds(send('s1', { v })), [], `${c.agg}: nothing before the window closes`)
    }
    clock.t = t0 + 999
    assert.deepEqual(kinds(engine.tick()), [])
    clock.t = t0 + 1000
    const fired = engine.tick()
    assert.deepEqual(kinds(fired), [`${c.agg}:fired@s1`])
    assert.equal(fired[0].trigger.value, c.expect, `${c.agg} of the closed window`)
    clock.t = t0 + 2000
    assert.deepEqual(kinds(engine.tick()), [`${c.agg}:cleared@s1`], `${c.agg}: an empty window does not meet the condition`)
    for (const [i, v] of c.values.entries()) {
      clock.t = t0 + 2000 + 100 * (i + 1)
      send('s1', { v })
    }
    clock.t = t0 + 4000
    assert.deepEqual(kinds(engine.tick()), [], `${c.agg}: with no tick for a whole window, the last window closed (empty) is what counts`)
  }
})

test('rules: sliding windows follow the last ms of points, and points age out on tick', () => {
  const { send, clock, engine } = setup([
    rule('burst', { reading: 'v', window: { kind: 'sliding', ms: 1000, agg: 'count' }, above: 3 }),
    rule('peak', { reading: 'v', window: { kind: 'sliding', ms: 1000, agg: 'max' }, above: 50 }),
  ])
  const t0 = clock.t
  assert.deepEqual(kinds(send('s1', { v: 60 })), ['peak:fired@s1'])
  clock.t = t0 + 100
  send('s1', { v: 10 })
  clock.t = t0 + 200
  send('s1', { v: 20 })
  clock.t = t0 + 300
  assert.deepEqual(kinds(send('s1', { v: 5 })), ['burst:fired@s1'], 'fourth point inside 1 s')
  clock.t = t0 + 999
  assert.deepEqual(kinds(engine.tick()), [])
  clock.t = t0 + 1000
  assert.deepEqual(kinds(engine.tick()), ['burst:cleared@s1', 'peak:cleared@s1'], 'the 60 at t0 left the window')
})

test('rules: staleness fires via tick for listed devices that never report, clears on data', () => {
  const { send, clock, engine } = setup([rule('silent', { stale: { ms: 5000 } }, { devices: ['s1', 's2'] })])
  clock.advance(4999)
  assert.deepEqual(kinds(engine.tick()), [])
  send('s2', { temp: 1 })
  clock.advance(1)
  const fired = engine.tick()
  assert.deepEqual(kinds(fired), ['silent:fired@s1'])
  assert.deepEqual(fired[0].trigger, { deviceId: 's1' }, 'no reading triggered it')
  assert.deepEqual(kinds(send('s1', { temp: 1 })), ['silent:cleared@s1'])
  clock.advance(4999)
  assert.deepEqual(kinds(engine.tick()), ['silent:fired@s2'])
})

test('rules: group any/all evaluate over the latest state of each member, one state per rule', () => {
  const { send, engine } = setup([
    { id: 'any-warm', when: { group: 'freezers', any: { reading: 'temp', above: -15 } }, then: [{ raiseAlert: { id: 'freezer-warm', severity: 'critical', message: '{device} is warm' } }], else: [{ clearAlert: { id: 'freezer-warm' } }] },
    { id: 'all-cold', when: { group: 'freezers', all: { reading: 'temp', below: -18 } }, then: ON, else: OFF },
  ], { groups: { freezers: ['f1', 'f2', 'f3'] } })
  assert.equal(engine.stats().states, 2)
  assert.deepEqual(kinds(send('f1', { temp: -20 })), [])
  assert.deepEqual(kinds(send('f2', { temp: -20 })), [], 'f3 has not reported: not all')
  assert.deepEqual(kinds(send('f3', { temp: -20 })), ['all-cold:fired@f3'])
  const warm = send('f2', { temp: -10 })
  assert.deepEqual(kinds(warm), ['any-warm:fired@f2', 'all-cold:cleared@f2'])
  assert.deepEqual(warm[0].actions, [{ raiseAlert: { id: 'freezer-warm', severity: 'critical', message: 'f2 is warm' } }])
  assert.deepEqual(kinds(send('f3', { temp: -12 })), [], 'already any')
  assert.deepEqual(kinds(send('f2', { temp: -20 })), [], 'f3 is still warm')
  assert.deepEqual(kinds(send('f3', { temp: -20 })), ['any-warm:cleared@f3', 'all-cold:fired@f3'])
  assert.deepEqual(kinds(send('x9', { temp: 50 })), [], 'not a member')
})

test('rules: and/or/not compose, every leaf consumes every event', () => {
  const { send } = setup([
    rule('cool-if-closed', { and: [{ reading: 'temp', above: 8 }, { not: { reading: 'door', above: 0.5 } }] }),
    rule('either', { or: [{ reading: 'temp', above: 20 }, { reading: 'hum', above: 90 }] }),
  ])
  assert.deepEqual(kinds(send('s1', { temp: 9, door: 1 })), [], 'door open')
  assert.deepEqual(kinds(send('s1', { door: 0 })), ['cool-if-closed:fired@s1'], 'temp is still above 8')
  assert.deepEqual(kinds(send('s1', { door: 1 })), ['cool-if-closed:cleared@s1'])
  assert.deepEqual(kinds(send('s1', { hum: 95 })), ['either:fired@s1'])
  assert.deepEqual(kinds(send('s1', { temp: 25 })), [])
  assert.deepEqual(kinds(send('s1', { hum: 50 })), [], 'temp still above 20')
  assert.deepEqual(kinds(send('s1', { temp: 10 })), ['either:cleared@s1'])
})

test('rules: cooldown spaces firings; a firing due inside it waits for its end if still true', () => {
  const { send, clock, engine } = setup([rule('hot', { reading: 'temp', above: 30 }, { cooldownMs: 10_000 })])
  const t0 = clock.t
  assert.deepEqual(kinds(send('s1', { temp: 31 })), ['hot:fired@s1'])
  clock.t = t0 + 1000
  assert.deepEqual(kinds(send('s1', { temp: 20 })), ['hot:cleared@s1'], 'clearing is not held back')
  clock.t = t0 + 2000
  assert.deepEqual(kinds(send('s1', { temp: 31 })), [], 'inside the cooldown')
  clock.t = t0 + 9999
  assert.deepEqual(kinds(engine.tick()), [])
  clock.t = t0 + 10_000
  assert.deepEqual(kinds(engine.tick()), ['hot:fired@s1'], 'still true at the end of the cooldown')
  clock.t = t0 + 11_000
  send('s1', { temp: 20 })
  send('s1', { temp: 31 })
  assert.deepEqual(kinds(send('s1', { temp: 20 })), [], 'true then false inside the cooldown: nothing')
  clock.t = t0 + 30_000
  assert.deepEqual(kinds(engine.tick()), [])
})

test('rules: alerts are stateful: no second raise of a raised id, no clear of an alert not raised', () => {
  const raise: Action[] = [{ raiseAlert: { id: 'site-hot', severity: 'warning', message: 'hot' } }]
  const clear: Action[] = [{ clearAlert: { id: 'site-hot' } }]
  const { send, engine } = setup([
    rule('a', { reading: 'temp', above: 30 }, { devices: ['s1'], then: raise, else: clear }),
    rule('b', { reading: 'temp', above: 30 }, { devices: ['s2'], then: raise, else: clear }),
    rule('c', { reading: 'temp', above: 30 }, { devices: ['s1', 's2'], then: [{ raiseAlert: { id: 'hot-{device}', severity: 'info', message: '{reading}={value}' } }] }),
  ])
  const first = send('s1', { temp: 31 })
  assert.deepEqual(first.map((d) => d.actions), [raise, [{ raiseAlert: { id: 'hot-s1', severity: 'info', message: 'temp=31' } }]])
  const second = send('s2', { temp: 32 })
  assert.deepEqual(kinds(second), ['b:fired@s2', 'c:fired@s2'], 'the rule still fires and is recorded')
  assert.deepEqual(second[0].actions, [], 'site-hot is already raised')
  assert.deepEqual(engine.activeAlerts().map((a) => [a.id, a.ruleId, a.deviceId]), [['site-hot', 'a', 's1'], ['hot-s1', 'c', 's1'], ['hot-s2', 'c', 's2']])
  assert.deepEqual(send('s1', { temp: 20 })[0].actions, clear)
  assert.deepEqual(send('s2', { temp: 20 })[0].actions, [], 'site-hot is no longer raised')
  assert.equal(engine.stats().activeAlerts, 2)
  const after = setup([rule('a', { reading: 'temp', above: 30 }, { then: raise, else: clear })])
  after.engine.restoreAlerts([{ id: 'site-hot', severity: 'warning', message: 'hot', ruleId: 'a', deviceId: 's1', raisedAtMs: 0 }])
  after.send('s1', { temp: 31 })
  assert.deepEqual(after.send('s1', { temp: 20 })[0].actions, clear, 'an alert restored after a restart can be cleared')
})

test('rules: only the rules that concern the event\'s device run; ticks run only due states', () => {
  const { send, engine } = setup([
    rule('r-a', { reading: 't', above: 1 }, { devices: ['a'] }),
    rule('r-b', { reading: 't', above: 1 }, { devices: ['b'] }),
    rule('r-ac', { reading: 't', above: 1 }, { devices: ['a', 'c'] }),
    rule('r-g', { reading: 't', above: 1 }, { devices: { group: 'g' } }),
    { id: 'site', when: { group: 'g', any: { reading: 't', above: 1 } }, then: ON },
  ], { groups: { g: ['c', 'd'] } })
  const evaluated = (dev: string): number => {
    const before = engine.stats().rulesEvaluated
    send(dev, { t: 0 })
    return engine.stats().rulesEvaluated - before
  }
  assert.equal(evaluated('a'), 2)
  assert.equal(evaluated('b'), 1)
  assert.equal(evaluated('c'), 3, 'r-ac, r-g and the site rule')
  assert.equal(evaluated('d'), 2)
  assert.equal(evaluated('zz'), 0)
  assert.equal(engine.stats().events, 4, 'an event of a device without rules costs one map lookup')
  engine.tick()
  const first = engine.stats().tickEvaluations
  assert.ok(first <= engine.stats().states, 'the first tick learns each state\'s deadline')
  for (let i = 0; i < 10; i++) engine.tick()
  assert.equal(engine.stats().tickEvaluations, first, 'no time-based condition: later ticks evaluate nothing')
})

test('rules: a rule without devices applies to every device, with state per device', () => {
  const { send, engine } = setup([{ id: 'any-hot', when: { reading: 't', above: 50 }, then: ON }, rule('s1-only', { reading: 't', above: 50 })], {}, { maxDevices: 3 })
  assert.deepEqual(kinds(send('s1', { t: 60 })), ['any-hot:fired@s1', 's1-only:fired@s1'], 'rule-set order')
  assert.deepEqual(kinds(send('x', { t: 60 })), ['any-hot:fired@x'])
  assert.deepEqual(kinds(send('y', { t: 60 })), ['any-hot:fired@y'])
  assert.deepEqual(kinds(send('z', { t: 60 })), [], 'beyond maxDevices')
  assert.equal(engine.stats().untrackedDevices, 1)
})

test('rules: hot swap keeps the state of unchanged rules and resets changed ones', () => {
  const v1: Rule[] = [
    rule('keep', { reading: 'temp', above: 30 }, { description: 'edited below: not a change' }),
    rule('change', { reading: 'temp', above: 30 }),
    rule('gone', { reading: 'temp', above: 30 }),
    rule('debounced', { reading: 'door', above: 0.5, for: 5000 }),
  ]
  const { send, clock, engine } = setup(v1)
  assert.deepEqual(kinds(send('s1', { temp: 31, door: 1 })), ['keep:fired@s1', 'change:fired@s1', 'gone:fired@s1'])
  clock.advance(3000)
  const swap = engine.replaceRuleSet({
    version: 'v2',
    rules: [
      { ...v1[0], description: 'new words' },
      rule('change', { reading: 'temp', above: 25 }),
      v1[3],
      rule('new', { reading: 'temp', above: 30 }),
    ],
  })
  assert.equal(engine.version, 'v2')
  assert.deepEqual(swap, {
    version: 'v2',
    previousVersion: 'v1',
    kept: ['keep', 'debounced'],
    added: ['new'],
    changed: ['change'],
    removed: ['gone'],
    droppedActive: [{ ruleId: 'change', deviceId: 's1' }, { ruleId: 'gone', deviceId: 's1' }],
  })
  assert.equal(engine.isActive('keep', 's1'), true)
  assert.equal(engine.isActive('change', 's1'), false)
  clock.advance(2000)
  const ticked = engine.tick()
  assert.deepEqual(kinds(ticked), ['debounced:fired@s1'], 'the debounce kept counting across the swap')
  assert.equal(ticked[0].ruleSetVersion, 'v2')
  assert.deepEqual(kinds(send('s1', { temp: 31 })), ['change:fired@s1', 'new:fired@s1'], 'keep is still fired: no second decision')
  assert.throws(() => engine.replaceRuleSet({ version: 'v3', rules: [rule('x', { reading: 'temp', above: Number.NaN })] }), { code: 'GW_ERR_RULES' })
  assert.equal(engine.version, 'v2', 'a bad rule set leaves the running one in place')
  assert.deepEqual(kinds(send('s1', { temp: 20 })), ['keep:cleared@s1', 'change:cleared@s1', 'new:cleared@s1'])
})

test('rules: a sliding window caps its points, dropping (and counting) the oldest', () => {
  const { send, engine } = setup([
    rule('many', { reading: 'v', window: { kind: 'sliding', ms: 60_000, agg: 'count' }, above: 8 }),
    rule('few', { reading: 'v', window: { kind: 'sliding', ms: 60_000, agg: 'count', maxPoints: 5 }, above: 5 }),
  ], {}, { maxWindowPoints: 10 })
  const all: Decision[] = []
  for (let i = 0; i < 25; i++) all.push(...send('s1', { v: i }))
  assert.deepEqual(kinds(all), ['many:fired@s1'], 'the 9th point fires many; few never holds more than 5')
  assert.equal(engine.stats().windowPointsDropped, (25 - 10) + (25 - 5))
})

test('rules: sliding window aggregates match a brute-force recomputation (random points, growth, cap)', () => {
  let seed = 7
  const rand = (): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff }
  for (const agg of ['count', 'min', 'max', 'avg'] as const) {
    seed = 7
    const pts: Array<{ t: number, v: number }> = []
    const w = new SlidingWindow(1000, agg, 50)
    let t = 0
    for (let i = 0; i < 5000; i++) {
      t += Math.floor(rand() * 40)
      const v = Math.round(rand() * 200 - 100)
      w.expire(t)
      w.add(t, v)
      while (pts.length > 0 && pts[0].t <= t - 1000) pts.shift()
      pts.push({ t, v })
      if (pts.length > 50) pts.shift()
      const vs = pts.map((p) => p.v)
      const want = agg === 'count' ? vs.length : agg === 'min' ? Math.min(...vs) : agg === 'max' ? Math.max(...vs) : vs.reduce((a, b) => a + b, 0) / vs.length
      assert.ok(Math.abs(w.value() - want) < 1e-9, `${agg} at point ${i}: ${w.value()} != ${want}`)
    }
  }
})

test('rules: a reading that is not a finite number is ignored', () => {
  const { send } = setup([rule('hot', { reading: 'temp', above: 30 })])
  assert.deepEqual(kinds(send('s1', { temp: 31 })), ['hot:fired@s1'])
  assert.deepEqual(kinds(send('s1', { temp: Number.NaN })), [])
  assert.deepEqual(kinds(send('s1', { temp: -Infinity })), [])
  assert.deepEqual(kinds(send('s1', { temp: 29 })), ['hot:cleared@s1'])
})
