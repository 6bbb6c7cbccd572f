// A rule compiled for the engine: its condition tree and state layout, the devices it concerns,
// its actions prepared (frozen, placeholders split into templates) and a fingerprint of its
// definition that replaceRuleSet compares to decide whether the rule's state can be kept.
// RuleState, the per-device state of one rule, lives here too: engine.ts imports this file, never
// the other way round.
import { compileCondition, groupMembers, Layout, type CondNode, type Scope } from './conditions.ts'
import type { DecisionTrigger } from './decision.ts'
import type { Action, CommandAction, Condition, Rule } from '../../proto/rules/schema.ts'

/** An action ready to emit: shared and frozen; templates (device or id, message) when it has placeholders. */
export interface PreparedAction { action: Action, first: Template, second: Template, templated: boolean }

/** A validated rule compiled for evaluation; holds its per-device states. */
export class CompiledRule {
  readonly id: string
  /** Position in the rule set: decisions of one event come in this order. */
  order: number
  readonly fingerprint: string
  readonly layout = new Layout()
  readonly root: CondNode
  /** A group rule: one state for the site, evaluated on events of any member. */
  readonly site: boolean
  /** Devices whose events run this rule (group members for a site rule); null = every device. */
  readonly devices: string[] | null
  readonly cooldownMs: number
  readonly then: PreparedAction[]
  readonly else: PreparedAction[]
  /** States by device id ('' for a site rule); they move with the rule across unchanged swaps. */
  readonly states = new Map<string, RuleState>()

  constructor (def: Rule, order: number, groups: Record<string, string[]>) {
    this.id = def.id
    this.order = order
    this.fingerprint = fingerprint(def, groups)
    this.root = compileCondition(def.when, this.layout, groups, def.debounceMs ?? 0)
    const members = groupMembers(this.root)
    this.site = members.size > 0
    if (this.site) this.devices = [...members]
    else if (def.devices === undefined) this.devices = null
    else this.devices = [...new Set(Array.isArray(def.devices) ? def.devices : groups[def.devices.group])]
    this.cooldownMs = def.cooldownMs ?? 0
    this.then = def.then.map(prepare)
    this.else = (def.else ?? []).map(prepare)
  }
}

/** One rule for one device (deviceId '' for a group rule), with its edge state. */
export class RuleState {
  active = false
  lastFiredAt = -Infinity
  /** Earliest time the clock alone may change this state (a lower bound; tick re-evaluates then). A new state is due at once, so the first tick learns its real deadline. */
  deadline = -Infinity
  trigReading: string | undefined = undefined
  trigValue = NaN
  trigTsMs = NaN
  trigDevice = ''
  constructor (readonly rule: CompiledRule, readonly deviceId: string, readonly scope: Scope) {}
}

// Placeholders are split out at load, so filling one on the decision path is a concatenation, not
// a regex replace. The filling code is shared by every rule on purpose: closures made per rule
// each stay cold (interpreted) because each runs rarely. Measured with bench/rules-micro.ts, a
// decision with two templated actions took ~2.4 µs (p50) with per-rule closures and ~1.3 µs with
// this code; spreading the frozen actions had cost ~3 µs more.

/** Literal parts at even indexes and placeholder names at odd ones; null when there is none. */
type Template = string[] | null

function template (s: string): Template {
  const parts = s.split(/\{(device|reading|value)\}/)
  return parts.length === 1 ? null : parts
}

function fillText (tpl: Template, raw: string, t: DecisionTrigger): string {
  if (tpl === null) return raw
  let out = ''
  for (let i = 0; i < tpl.length; i++) {
    if (i % 2 === 0) out += tpl[i]
    else if (tpl[i] === 'device') out += t.deviceId
    else if (tpl[i] === 'reading') out += t.reading ?? ''
    else if (t.value !== undefined) out += String(t.value)
  }
  return out
}

/** Prepares an action: frozen (decisions share it), with templates for its placeholders if any. */
function prepare (a: Action): PreparedAction {
  // Decisions hand these objects to the integrator; freezing keeps one caller from editing the rule.
  const action = deepFreeze(structuredClone(a))
  const [first, second] = 'command' in action
    ? [template(action.command.device), null]
    : 'raiseAlert' in action ? [template(action.raiseAlert.id), template(action.raiseAlert.message)] : [template(action.clearAlert.id), null]
  return { action, first, second, templated: first !== null || second !== null }
}

/** The action of a decision: the shared frozen one, or a copy with {device}, {reading}, {value} filled. */
export function fillAction (p: PreparedAction, t: DecisionTrigger): Action {
  const a = p.action
  if (!p.templated) return a
  if ('command' in a) {
    // Field by field: spreading a frozen object takes V8's slow path.
    const command: CommandAction['command'] = { device: fillText(p.first, a.command.device, t), name: a.command.name }
    if (a.command.args !== undefined) command.args = a.command.args
    if (a.command.ttlMs !== undefined) command.ttlMs = a.command.ttlMs
    return { command }
  }
  if ('raiseAlert' in a) {
    const r = a.raiseAlert
    return { raiseAlert: { id: fillText(p.first, r.id, t), severity: r.severity, message: fillText(p.second, r.message, t) } }
  }
  return { clearAlert: { id: fillText(p.first, a.clearAlert.id, t) } }
}

function deepFreeze<T> (x: T): T {
  if (typeof x === 'object' && x !== null) {
    for (const v of Object.values(x)) deepFreeze(v)
    Object.freeze(x)
  }
  return x
}

// The definition plus the membership of the groups it uses: a group that gains a device changes
// the rule even when its text does not.
function fingerprint (def: Rule, groups: Record<string, string[]>): string {
  const used = new Set<string>()
  if (def.devices !== undefined && !Array.isArray(def.devices)) used.add(def.devices.group)
  collectGroups(def.when, used)
  const members = Object.fromEntries([...used].sort().map((g) => [g, groups[g]]))
  // The description documents the rule; editing it must not reset the rule's state.
  const { description: _description, ...behaviour } = def
  return stableStringify({ behaviour, members })
}

function collectGroups (c: Condition, out: Set<string>): void {
  if ('group' in c) {
    out.add(c.group)
    return collectGroups((c.any ?? c.all)!, out)
  }
  if ('and' in c) c.and.forEach((x) => collectGroups(x, out))
  else if ('or' in c) c.or.forEach((x) => collectGroups(x, out))
  else if ('not' in c) collectGroups(c.not, out)
}

function stableStringify (x: unknown): string {
  if (Array.isArray(x)) return `[${x.map(stableStringify).join(',')}]`
  if (typeof x === 'object' && x !== null) {
    const entries = Object.entries(x).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableStringify(v)}`).join(',')}}`
  }
  return JSON.stringify(x)
}
