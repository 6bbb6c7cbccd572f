// Cross-field checks of a rule set that zod's shapes cannot express: each condition is exactly one
// kind with the keys that kind takes, groups exist, ids are unique, placeholders are known, and a
// rule's evaluation cost is bounded (nesting depth, number of conditions).
import { DEVICE_ID_RULE, ID_PATTERN } from '../ids.ts'
import type { Action, Condition, RuleSet } from './types.ts'

/** One problem of a rule set: the rule (when inside one), the path of the field and what is wrong. */
export interface RuleIssue { ruleId?: string, path: Array<string | number>, message: string }

export { ID_PATTERN }
/** Placeholders that actions may use; filled from the decision's trigger. */
export const PLACEHOLDERS = ['device', 'reading', 'value'] as const

// Bounds on one rule's evaluation cost, checked at load so a rule file cannot slow the ingest path.
const MAX_DEPTH = 8
const MAX_LEAVES = 64

const KINDS = ['reading', 'stale', 'group', 'and', 'or', 'not'] as const
type Kind = typeof KINDS[number]
type Add = (path: Array<string | number>, message: string) => void

interface Tally { leaves: number, groups: number, outside: number }

/** Returns every cross-field problem of a rule set whose shapes zod already accepted. */
export function checkRuleSet (rs: RuleSet): RuleIssue[] {
  const issues: RuleIssue[] = []
  const groups = rs.groups ?? {}
  const seen = new Map<string, number>()
  rs.rules.forEach((rule, i) => {
    const add: Add = (path, message) => { issues.push({ ruleId: rule.id, path: ['rules', i, ...path], message }) }
    const prev = seen.get(rule.id)
    if (prev !== undefined) add(['id'], `duplicate rule id (also rules[${prev}])`)
    else seen.set(rule.id, i)
    if (rule.devices !== undefined && !Array.isArray(rule.devices) && !Object.hasOwn(groups, rule.devices.group)) {
      add(['devices', 'group'], `unknown group "${rule.devices.group}"`)
    }
    const tally: Tally = { leaves: 0, groups: 0, outside: 0 }
    checkCondition(rule.when, ['when'], 1, false, tally, add, groups)
    if (tally.leaves > MAX_LEAVES) add(['when'], `has ${tally.leaves} conditions; at most ${MAX_LEAVES}`)
    if (tally.groups > 0) {
      // One state for the site: a reading outside a group would have no device to belong to.
      if (tally.outside > 0) add(['when'], 'a rule with a group condition is evaluated once for the site: put its reading and stale conditions inside the group condition')
      if (rule.devices !== undefined) add(['devices'], 'a rule with a group condition is evaluated once for the site, so devices does not apply')
    }
    if (rule.debounceMs !== undefined && rule.when.for !== undefined) add(['debounceMs'], 'set either debounceMs or when.for, not both')
    rule.then.forEach((a, j) => checkAction(a, ['then', j], add))
    rule.else?.forEach((a, j) => checkAction(a, ['else', j], add))
  })
  return issues
}

function checkCondition (c: Condition, path: Array<string | number>, depth: number, inGroup: boolean, tally: Tally, add: Add, groups: Record<string, string[]>): void {
  if (depth > MAX_DEPTH) return add(path, `conditions nest more than ${MAX_DEPTH} deep`)
  const rec = c as unknown as Record<string, unknown>
  const kinds = KINDS.filter((k) => rec[k] !== undefined)
  if (kinds.length !== 1) {
    return add(path, kinds.length === 0
      ? 'expected one of reading, stale, group, and, or, not'
      : `has ${kinds.join(' and ')}, but a condition is exactly one of reading, stale, group, and, or, not`)
  }
  const kind: Kind = kinds[0]
  const only = (allowed: string[], what = `a ${kind} condition`): void => {
    for (const k of Object.keys(rec)) {
      if (rec[k] !== undefined && k !== 'for' && !allowed.includes(k)) add([...path, k], `does not apply to ${what}`)
    }
  }
  const has = (k: string): boolean => rec[k] !== undefined
  switch (kind) {
    case 'reading': {
      tally.leaves++
      if (!inGroup) tally.outside++
      if (has('window')) {
        only(['reading', 'window', 'above', 'below', 'hysteresis'], 'a window condition')
        if (has('above') === has('below')) add(path, 'a window condition needs exactly one of above, below')
        const w = rec.window as { kind: string, maxPoints?: number }
        if (w.kind === 'tumbling' && w.maxPoints !== undefined) add([...path, 'window', 'maxPoints'], 'applies to sliding windows only (a tumbling window keeps aggregates, not points)')
      } else if (has('rateOfChange')) {
        only(['reading', 'rateOfChange'], 'a rateOfChange condition')
      } else if (has('above') || has('below')) {
        only(['reading', 'above', 'below', 'hysteresis'], 'a threshold condition')
        if (has('above') && has('below')) add(path, 'has above and below (use and: [...] for a band)')
      } else {
        add(path, 'a reading condition needs one of above, below, rateOfChange, window')
      }
      return
    }
    case 'stale':
      tally.leaves++
      if (!inGroup) tally.outside++
      return only(['stale'])
    case 'group': {
      only(['group', 'any', 'all'])
      tally.groups++
      const name = rec.group as string
      if (inGroup) add([...path, 'group'], 'group conditions cannot nest')
      if (!Object.hasOwn(groups, name)) add([...path, 'group'], `unknown group "${name}"`)
      if (has('any') === has('all')) return add(path, 'a group condition needs exactly one of any, all')
      const key = has('any') ? 'any' : 'all'
      return checkCondition(rec[key] as Condition, [...path, key], depth + 1, true, tally, add, groups)
    }
    case 'and':
    case 'or':
      only([kind])
      ;(rec[kind] as Condition[]).forEach((child, i) => checkCondition(child, [...path, kind, i], depth + 1, inGroup, tally, add, groups))
      return
    case 'not':
      only(['not'])
      return checkCondition(rec.not as Condition, [...path, 'not'], depth + 1, inGroup, tally, add, groups)
  }
}

function checkAction (a: Action, path: Array<string | number>, add: Add): void {
  const rec = a as unknown as Record<string, unknown>
  const keys = ['command', 'raiseAlert', 'clearAlert'].filter((k) => rec[k] !== undefined)
  if (keys.length !== 1) {
    return add(path, keys.length === 0 ? 'expected one of command, raiseAlert, clearAlert' : `has ${keys.join(' and ')}, but an action is exactly one of command, raiseAlert, clearAlert`)
  }
  const checkText = (p: Array<string | number>, text: string): void => {
    for (const m of text.matchAll(/\{([^{}]*)\}/g)) {
      if (!(PLACEHOLDERS as readonly string[]).includes(m[1])) add([...path, ...p], `unknown placeholder {${m[1]}} (known: ${PLACEHOLDERS.map((x) => `{${x}}`).join(', ')})`)
    }
  }
  if ('command' in a) {
    checkText(['command', 'device'], a.command.device)
    // A placeholder stands for a device id, so the rest of the name must be of the same alphabet.
    if (!ID_PATTERN.test(a.command.device.replace(/\{[^{}]*\}/g, 'x'))) add([...path, 'command', 'device'], `a device id must be ${DEVICE_ID_RULE}`)
  } else if ('raiseAlert' in a) {
    checkText(['raiseAlert', 'id'], a.raiseAlert.id)
    checkText(['raiseAlert', 'message'], a.raiseAlert.message)
  } else {
    checkText(['clearAlert', 'id'], a.clearAlert.id)
  }
}
