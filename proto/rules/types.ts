// The rule-set format as types: rules are data (a YAML/JSON file, or a document from the cloud's
// rules bucket). schema.ts validates text into these; check.ts adds the cross-field checks.

/** A sliding or tumbling window over one reading of one device, on the gateway's clock. */
export interface WindowSpec { kind: 'tumbling' | 'sliding', ms: number, agg: 'count' | 'min' | 'max' | 'avg', maxPoints?: number }

interface Debounce {
  /** Debounce: the condition counts as true only once it has been true continuously for this many ms. */
  for?: number
}
/** `reading` above a level; with hysteresis it turns false again only below level - hysteresis. */
export interface AboveCondition extends Debounce { reading: string, above: number, hysteresis?: number }
/** `reading` below a level; with hysteresis it turns false again only above level + hysteresis. */
export interface BelowCondition extends Debounce { reading: string, below: number, hysteresis?: number }
/** |d reading / dt| >= perSecond between two consecutive readings (device event time). */
export interface RateCondition extends Debounce { reading: string, rateOfChange: { perSecond: number } }
/** An aggregate of a window of `reading` compared with a level (exactly one of above/below). */
export interface WindowCondition extends Debounce { reading: string, window: WindowSpec, above?: number, below?: number, hysteresis?: number }
/** No event from the device for `ms`. */
export interface StaleCondition extends Debounce { stale: { ms: number } }
/** Across the devices of a group, each with its own state: any or all of them meet `any`/`all`. */
export interface GroupCondition extends Debounce { group: string, any?: Condition, all?: Condition }
/** All of the conditions. */
export interface AndCondition extends Debounce { and: Condition[] }
/** At least one of the conditions. */
export interface OrCondition extends Debounce { or: Condition[] }
/** The negation of a condition. */
export interface NotCondition extends Debounce { not: Condition }

/** A rule's condition: composable; checked by check.ts to be exactly one of these kinds. */
export type Condition =
  | AboveCondition | BelowCondition | RateCondition | WindowCondition | StaleCondition
  | GroupCondition | AndCondition | OrCondition | NotCondition

/** Publish a command to an actuator; `{device}`, `{reading}`, `{value}` in strings are filled from the trigger. */
export interface CommandAction { command: { device: string, name: string, args?: Record<string, unknown>, ttlMs?: number } }
/** Raise an alert; the engine raises an id at most once until it is cleared. */
export interface RaiseAlertAction { raiseAlert: { id: string, severity: 'info' | 'warning' | 'critical', message: string } }
/** Clear an alert; clearing an alert that is not raised does nothing. */
export interface ClearAlertAction { clearAlert: { id: string } }
/** What a rule does when it fires (then) or clears (else). */
export type Action = CommandAction | RaiseAlertAction | ClearAlertAction

/** One rule: per device (devices listed, a group, or every device when omitted) or, with group conditions, once for the site. */
export interface Rule {
  id: string
  description?: string
  devices?: string[] | { group: string }
  when: Condition
  then: Action[]
  /** Run when the condition turns from true to false (the rule clears). */
  else?: Action[]
  /** Same as `for` on `when`: the condition must hold this long before the rule fires. */
  debounceMs?: number
  /** Least time between two firings; a firing due inside it waits for its end if still true. */
  cooldownMs?: number
}

/** A versioned rule set; `groups` name sets of device ids of the site. */
export interface RuleSet { version: string, groups?: Record<string, string[]>, rules: Rule[] }
