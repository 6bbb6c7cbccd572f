// The rules engine's pure core: no I/O and a clock passed in, so it runs on the ingest path
// (promise 4: control never waits) and every semantic is testable without sleeping. Rules are
// indexed by device at construction; an event runs only the rules that concern its device, and
// returns decisions for the caller to act on (publish commands, record decisions, track acks).
// Time-based changes (staleness, debounce completion, windows closing, cooldown ends) come from
// tick(), which the caller runs every ~100 ms.
import { Evaluator, Scope, type RuleEvent } from './conditions.ts'
import { CompiledRule, fillAction, RuleState } from './compiled.ts'
import type { Decision, DecisionTrigger } from './decision.ts'
import { MAX_WINDOW_POINTS, parseRuleSet, type Action, type RuleSet } from '../../proto/rules/schema.ts'

export type { RuleEvent } from './conditions.ts'
export type { Decision, DecisionTrigger } from './decision.ts'

/** Options of the engine. */
export interface RuleEngineOptions {
  /** The clock (ms). Date.now in production; a controllable clock in tests. */
  now: () => number
  /** Ceiling on points any sliding window keeps (default and maximum 10,000). */
  maxWindowPoints?: number
  /** Devices that rules without a device list keep state for (default 100,000); beyond it, counted and ignored. */
  maxDevices?: number
}

/** Counters of the engine, for metrics and tests. */
export interface RuleEngineStats {
  events: number
  /** Rule evaluations (rule x device) caused by events: the cost the device index keeps small. */
  rulesEvaluated: number
  ticks: number
  /** Rule evaluations caused by ticks (only states with a due deadline run). */
  tickEvaluations: number
  fired: number
  cleared: number
  windowPointsDropped: number
  /** Rule states held (rule x device, one per group rule). */
  states: number
  activeAlerts: number
  /** Devices refused state for rules without a device list, beyond maxDevices. */
  untrackedDevices: number
}

/** An alert currently raised, with the decision that raised it. */
export interface ActiveAlert { id: string, severity: 'info' | 'warning' | 'critical', message: string, ruleId: string, deviceId: string, raisedAtMs: number }

/** What replaceRuleSet did, by rule id. */
export interface RuleSetSwap {
  version: string
  previousVersion: string
  kept: string[]
  added: string[]
  changed: string[]
  removed: string[]
  /** Rule states that were fired when their rule changed or went away: their else-actions will not run. */
  droppedActive: Array<{ ruleId: string, deviceId: string }>
}

// Rule states that concern one device, in rule-set order; wildcard rules attach on its first event.
interface DeviceEntry { states: RuleState[], wildcardsAttached: boolean }

const NO_DECISIONS: readonly Decision[] = Object.freeze([])

/** Evaluates a rule set against ingested events and the clock; returns decisions, does no I/O. */
export class RuleEngine {
  private readonly now: () => number
  private readonly maxWindowPoints: number
  private readonly maxDevices: number
  private readonly ev = new Evaluator()
  private ruleSet!: RuleSet
  private rules: CompiledRule[] = []
  private wildcards: CompiledRule[] = []
  private index = new Map<string, DeviceEntry>()
  private all: RuleState[] = []
  private minDeadline = Infinity
  private readonly alerts = new Map<string, ActiveAlert>()
  private readonly counters = { events: 0, rulesEvaluated: 0, ticks: 0, tickEvaluations: 0, fired: 0, cleared: 0, untrackedDevices: 0 }

  constructor (ruleSet: RuleSet, opts: RuleEngineOptions) {
    this.now = opts.now
    this.maxWindowPoints = Math.min(opts.maxWindowPoints ?? MAX_WINDOW_POINTS, MAX_WINDOW_POINTS)
    this.maxDevices = opts.maxDevices ?? 100_000
    this.install(parseRuleSet(ruleSet), new Map())
  }

  /** Version of the rule set in force. */
  get version (): string { return this.ruleSet.version }

  /** Evaluates the rules that concern ev.deviceId; call once per committed event, in ingest order. */
  evaluate (event: RuleEvent): readonly Decision[] {
    let entry = this.index.get(event.deviceId)
    if (entry === undefined || !entry.wildcardsAttached) {
      if (this.wildcards.length === 0 && entry === undefined) return NO_DECISIONS
      entry = this.attachWildcards(event.deviceId, entry)
      if (entry === undefined) return NO_DECISIONS
    }
    const t0 = performance.now()
    const now = this.now()
    this.counters.events++
    const states = entry.states
    let out: Decision[] | null = null
    for (let i = 0; i < states.length; i++) {
      const st = states[i]
      const d = this.step(st, event, now, t0)
      if (d !== null) (out ??= []).push(d)
      if (st.deadline < this.minDeadline) this.minDeadline = st.deadline
    }
    this.counters.rulesEvaluated += states.length
    return out ?? NO_DECISIONS
  }

  /** Applies the clock: staleness, debounce completion, windows closing, cooldown ends. */
  tick (): readonly Decision[] {
    const now = this.now()
    this.counters.ticks++
    if (now < this.minDeadline) return NO_DECISIONS
    const t0 = performance.now()
    let out: Decision[] | null = null
    let min = Infinity
    for (let i = 0; i < this.all.length; i++) {
      const st = this.all[i]
      if (st.deadline <= now) {
        this.counters.tickEvaluations++
        const d = this.step(st, null, now, t0)
        if (d !== null) (out ??= []).push(d)
      }
      if (st.deadline < min) min = st.deadline
    }
    this.minDeadline = min
    return out ?? NO_DECISIONS
  }

  /** Hot swap: rules whose id and definition (groups included) are unchanged keep their state. */
  replaceRuleSet (newSet: RuleSet): RuleSetSwap {
    const parsed = parseRuleSet(newSet)
    const previousVersion = this.ruleSet.version
    const old = new Map(this.rules.map((r) => [r.id, r]))
    const kept = this.install(parsed, old)
    const swap: RuleSetSwap = { version: parsed.version, previousVersion, kept: [], added: [], changed: [], removed: [], droppedActive: [] }
    for (const r of this.rules) {
      if (kept.has(r.id)) swap.kept.push(r.id)
      else if (old.has(r.id)) swap.changed.push(r.id)
      else swap.added.push(r.id)
    }
    const current = new Set(this.rules.map((r) => r.id))
    for (const [id, r] of old) {
      if (kept.has(id)) continue
      if (!current.has(id)) swap.removed.push(id)
      for (const st of r.states.values()) if (st.active) swap.droppedActive.push({ ruleId: id, deviceId: st.deviceId })
    }
    return swap
  }

  /** Counters since construction (they survive replaceRuleSet). */
  stats (): RuleEngineStats {
    return { ...this.counters, windowPointsDropped: this.ev.droppedPoints, states: this.all.length, activeAlerts: this.alerts.size }
  }

  /** Alerts raised and not cleared, across rule-set swaps. */
  activeAlerts (): ActiveAlert[] {
    return [...this.alerts.values()]
  }

  /**
   * Seeds the alert state, e.g. at start from alerts persisted before a restart: without it, a
   * clear after a restart would be suppressed as "not raised" and the alert would stay up.
   */
  restoreAlerts (alerts: Iterable<ActiveAlert>): void {
    for (const a of alerts) this.alerts.set(a.id, { ...a })
  }

  /** Whether a rule is fired for a device ('' or omitted for a group rule). */
  isActive (ruleId: string, deviceId = ''): boolean {
    return this.rules.find((r) => r.id === ruleId)?.states.get(deviceId)?.active ?? false
  }

  // Builds the index for a rule set, reusing compiled rules (and so their states) from `old` whose
  // fingerprint is unchanged. Everything is built before anything is replaced: a failure leaves the
  // running rules in place.
  private install (rs: RuleSet, old: Map<string, CompiledRule>): Set<string> {
    const now = this.now()
    const kept = new Set<string>()
    const rules = rs.rules.map((def, i) => {
      const fresh = new CompiledRule(def, i, rs.groups ?? {})
      const prev = old.get(def.id)
      if (prev !== undefined && prev.fingerprint === fresh.fingerprint) {
        kept.add(def.id)
        return prev
      }
      return fresh
    })
    const index = new Map<string, DeviceEntry>()
    const all: RuleState[] = []
    const entry = (id: string): DeviceEntry => {
      let e = index.get(id)
      if (e === undefined) index.set(id, e = { states: [], wildcardsAttached: false })
      return e
    }
    for (const r of rules) {
      if (r.devices === null) {
        for (const st of r.states.values()) all.push(st)
        continue
      }
      const ids = r.site ? [''] : r.devices
      for (const id of ids) {
        let st = r.states.get(id)
        if (st === undefined) r.states.set(id, st = new RuleState(r, id, new Scope(id, r.layout, now, this.maxWindowPoints)))
        all.push(st)
        for (const dev of r.site ? r.devices : [id]) entry(dev).states.push(st)
      }
    }
    const wildcards = rules.filter((r) => r.devices === null)
    if (wildcards.length === 0) for (const e of index.values()) e.wildcardsAttached = true
    rules.forEach((r, i) => { r.order = i })
    this.ruleSet = rs
    this.rules = rules
    this.wildcards = wildcards
    this.index = index
    this.all = all
    // Kept states may have deadlines already due; the next tick recomputes the minimum exactly.
    this.minDeadline = -Infinity
    return kept
  }

  // First event of a device since install: give it the states of the rules without a device list.
  private attachWildcards (deviceId: string, entry: DeviceEntry | undefined): DeviceEntry | undefined {
    if (entry === undefined) {
      if (this.index.size >= this.maxDevices) {
        this.counters.untrackedDevices++
        return undefined
      }
      this.index.set(deviceId, entry = { states: [], wildcardsAttached: false })
    }
    const now = this.now()
    for (const r of this.wildcards) {
      let st = r.states.get(deviceId)
      if (st === undefined) {
        r.states.set(deviceId, st = new RuleState(r, deviceId, new Scope(deviceId, r.layout, now, this.maxWindowPoints)))
        this.all.push(st)
      }
      entry.states.push(st)
    }
    entry.states.sort((a, b) => a.rule.order - b.rule.order)
    entry.wildcardsAttached = true
    return entry
  }

  // One rule state through one event (or a tick, ev === null): condition, then the edge logic.
  private step (st: RuleState, event: RuleEvent | null, now: number, t0: number): Decision | null {
    const r = st.rule
    const ev = this.ev
    ev.begin()
    if (event !== null && !r.site) st.scope.lastSeenMs = now
    const cond = ev.evalNode(r.root, st.scope, event, now)
    if (ev.flipped || (event !== null && ev.reading !== undefined)) {
      st.trigReading = ev.reading
      st.trigValue = ev.value
      st.trigTsMs = event?.eventTsMs ?? NaN
    }
    if (event !== null) st.trigDevice = event.deviceId
    else if (ev.flipDevice !== undefined) st.trigDevice = ev.flipDevice
    let deadline = ev.deadline
    let decision: Decision | null = null
    if (cond) {
      if (!st.active) {
        const ready = st.lastFiredAt + r.cooldownMs
        if (now >= ready) {
          st.active = true
          st.lastFiredAt = now
          decision = this.decide(st, 'fired', now, t0)
        } else if (ready < deadline) {
          deadline = ready
        }
      }
    } else if (st.active) {
      st.active = false
      decision = this.decide(st, 'cleared', now, t0)
    }
    // An event re-evaluates only its own member of a group rule, so the others' deadlines stand.
    st.deadline = event !== null && r.site ? Math.min(deadline, st.deadline) : deadline
    return decision
  }

  private decide (st: RuleState, kind: 'fired' | 'cleared', now: number, t0: number): Decision {
    const r = st.rule
    const trigger: DecisionTrigger = { deviceId: st.deviceId || st.trigDevice }
    if (st.trigReading !== undefined) {
      trigger.reading = st.trigReading
      trigger.value = st.trigValue
    }
    if (!Number.isNaN(st.trigTsMs)) trigger.eventTsMs = st.trigTsMs
    const actions: Action[] = []
    for (const a of kind === 'fired' ? r.then : r.else) {
      const act = fillAction(a, trigger)
      // Alerts are stateful across rules and devices: no second raise, no clear of nothing.
      if ('raiseAlert' in act) {
        if (this.alerts.has(act.raiseAlert.id)) continue
        const { id, severity, message } = act.raiseAlert
        this.alerts.set(id, { id, severity, message, ruleId: r.id, deviceId: trigger.deviceId, raisedAtMs: now })
      } else if ('clearAlert' in act) {
        if (!this.alerts.delete(act.clearAlert.id)) continue
      }
      actions.push(act)
    }
    if (kind === 'fired') this.counters.fired++
    else this.counters.cleared++
    return { ruleId: r.id, ruleSetVersion: this.ruleSet.version, trigger, actions, kind, atMs: now, evalMicros: (performance.now() - t0) * 1000 }
  }
}
