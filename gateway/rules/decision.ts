// What the rules engine returns: decisions and what triggered them. Apart from engine.ts so that
// compiled.ts (which fills action templates from a trigger) does not import the engine back.
import type { Action } from '../../proto/rules/schema.ts'

/** What triggered a decision: the device, and the reading/value that flipped (when one did). */
export interface DecisionTrigger { deviceId: string, reading?: string, value?: number, eventTsMs?: number }

/** A rule fired (its `then` actions) or cleared (its `else` actions); alert actions already deduplicated. */
export interface Decision {
  ruleId: string
  ruleSetVersion: string
  trigger: DecisionTrigger
  actions: Action[]
  kind: 'fired' | 'cleared'
  /** Engine clock when decided. */
  atMs: number
  /** Time from the start of evaluate()/tick() to this decision, in microseconds. */
  evalMicros: number
}
