// The rule-set format: rules are data (a YAML/JSON file, or a document from the cloud's rules
// bucket), validated before they replace the running rules. zod checks shapes and types; the
// walker in check.ts checks what zod cannot express (one kind per condition, known groups,
// unique ids). Every error names the rule and the field, so an operator can fix a file without
// reading the code: `rule "cooler-on": when.above: expected number`.
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { DEVICE_ID_RULE } from '../ids.ts'
import type { Action, Condition, RuleSet } from './types.ts'
import { checkRuleSet, ID_PATTERN, type RuleIssue } from './check.ts'

/** Longest window, debounce, cooldown or staleness span: a day; longer spans belong in the cloud. */
export const MAX_SPAN_MS = 24 * 60 * 60 * 1000
/** Most points a sliding window may keep; beyond it the oldest are dropped (and counted). */
export const MAX_WINDOW_POINTS = 10_000
/** Points a sliding window keeps when the rule does not say (the engine caps it further). */
export const DEFAULT_WINDOW_POINTS = 1000

export type * from './types.ts'

/**
 * Thrown when a rule set is invalid; `issues` lists each problem with the rule id and field path.
 * The code is the gateway's (GW_ERR_RULES): the gateway is the authority on a rule set, and the cloud
 * refuses with the very message the gateway would give.
 */
export class RulesError extends Error {
  readonly code = 'GW_ERR_RULES' as const
  readonly retryable = false
  readonly issues: RuleIssue[]

  constructor (message: string, issues: RuleIssue[], options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'RulesError'
    this.issues = issues
  }
}

const id = (what: string): z.ZodString => z.string().regex(ID_PATTERN, `${what} must be ${DEVICE_ID_RULE}`)
const span = z.number().int().min(0).max(MAX_SPAN_MS)
const positiveSpan = z.number().int().positive().max(MAX_SPAN_MS)

// One wide object rather than a union: a union would answer a typo with "Invalid input", while
// this names the field (when.above: expected number). check.ts then enforces one kind.
const conditionSchema: z.ZodType<Condition> = z.lazy(() => z.object({
  reading: z.string().min(1).max(64).optional(),
  above: z.number().optional(),
  below: z.number().optional(),
  hysteresis: z.number().min(0).optional(),
  rateOfChange: z.object({ perSecond: z.number().positive() }).strict().optional(),
  window: z.object({
    kind: z.enum(['tumbling', 'sliding']),
    ms: positiveSpan,
    agg: z.enum(['count', 'min', 'max', 'avg']),
    maxPoints: z.number().int().positive().max(MAX_WINDOW_POINTS).optional(),
  }).strict().optional(),
  stale: z.object({ ms: positiveSpan }).strict().optional(),
  group: id('a group name').optional(),
  any: conditionSchema.optional(),
  all: conditionSchema.optional(),
  and: z.array(conditionSchema).min(1).optional(),
  or: z.array(conditionSchema).min(1).optional(),
  not: conditionSchema.optional(),
  for: span.optional(),
}).strict()) as unknown as z.ZodType<Condition>

// Same reasoning as conditions: one object, exactly one key checked by check.ts.
const actionSchema = z.object({
  command: z.object({
    device: z.string().min(1).max(64),
    name: z.string().min(1).max(64),
    args: z.record(z.string(), z.unknown()).optional(),
    ttlMs: z.number().int().positive().max(MAX_SPAN_MS).optional(),
  }).strict().optional(),
  raiseAlert: z.object({
    id: z.string().min(1).max(128),
    severity: z.enum(['info', 'warning', 'critical']),
    message: z.string().max(1000),
  }).strict().optional(),
  clearAlert: z.object({ id: z.string().min(1).max(128) }).strict().optional(),
}).strict() as unknown as z.ZodType<Action>

const ruleSchema = z.object({
  id: id('a rule id'),
  description: z.string().max(1000).optional(),
  devices: z.union([z.array(id('a device id')).min(1), z.object({ group: id('a group name') }).strict()]).optional(),
  when: conditionSchema,
  then: z.array(actionSchema).min(1),
  else: z.array(actionSchema).optional(),
  debounceMs: span.optional(),
  cooldownMs: span.optional(),
}).strict()

/** The zod schema of a rule set (shapes and types; cross-field checks are in parseRuleSet). */
export const ruleSetSchema = z.object({
  version: z.string().min(1).max(128),
  groups: z.record(id('a group name'), z.array(id('a device id')).min(1).max(10_000)).optional(),
  rules: z.array(ruleSchema).max(10_000),
}).strict()

/** Validates a rule set (parsed YAML/JSON data); throws RulesError naming each bad rule and field. */
export function parseRuleSet (input: unknown): RuleSet {
  const result = ruleSetSchema.safeParse(input)
  const issues: RuleIssue[] = result.success
    ? checkRuleSet(result.data as RuleSet)
    : result.error.issues.flatMap((i) => zodIssues(i, []))
  if (issues.length > 0) {
    const rules = (input as { rules?: unknown } | null)?.rules
    const lines = issues.map((i) => formatIssue(i, rules))
    throw new RulesError(`invalid rule set: ${lines.join('; ')}`, issues)
  }
  return result.data as RuleSet
}

/** Parses YAML or JSON text and validates it; `source` (a file name, a KV key) prefixes errors. */
export function parseRuleSetText (text: string, source = 'rule set'): RuleSet {
  let data: unknown
  try {
    data = parseYaml(text)
  } catch (err) {
    throw new RulesError(`${source} is not valid YAML/JSON: ${(err as Error).message}`, [], { cause: err })
  }
  try {
    return parseRuleSet(data)
  } catch (err) {
    if (err instanceof RulesError) throw new RulesError(`${source}: ${err.message}`, err.issues, { cause: err })
    throw err
  }
}

/** `rule "cooler-on": when.and[1].above: expected number`, or `groups.cold: ...` outside rules. */
function formatIssue (issue: RuleIssue, rawRules: unknown): string {
  const p = issue.path
  if (p[0] === 'rules' && typeof p[1] === 'number') {
    const raw = Array.isArray(rawRules) ? rawRules[p[1]] as { id?: unknown } | undefined : undefined
    const name = typeof raw?.id === 'string' && raw.id !== '' ? `rule "${raw.id}"` : `rules[${p[1]}]`
    const rest = formatPath(p.slice(2))
    return rest === '' ? `${name}: ${issue.message}` : `${name}: ${rest}: ${issue.message}`
  }
  return `${formatPath(p) || '(root)'}: ${issue.message}`
}

function formatPath (path: Array<string | number>): string {
  let s = ''
  for (const k of path) s += typeof k === 'number' ? `[${k}]` : (s === '' ? k : `.${k}`)
  return s
}

// zod's messages are written for developers ("Invalid input: expected number, received string");
// operators get the short form, and a union answers with the branch that matched the input's type.
function zodIssues (i: z.core.$ZodIssue, base: Array<string | number>): RuleIssue[] {
  const path = [...base, ...i.path.map((k) => typeof k === 'symbol' ? String(k) : k)]
  switch (i.code) {
    case 'invalid_type': {
      if (/received undefined/.test(i.message)) return [{ path, message: `required (${i.expected})` }]
      if (/received (Infinity|NaN)/.test(i.message)) return [{ path, message: 'expected a finite number' }]
      return [{ path, message: i.expected === 'int' ? 'expected an integer' : `expected ${i.expected}` }]
    }
    case 'unrecognized_keys':
      return i.keys.map((k) => ({ path: [...path, k], message: 'unknown key' }))
    case 'invalid_union': {
      const branches = i.errors.filter((errs) => !errs.every((e) => e.code === 'invalid_type' && e.path.length === 0))
      if (branches.length === 0) {
        const expected = i.errors.map((errs) => errs[0]?.code === 'invalid_type' ? errs[0].expected : '?')
        return [{ path, message: `expected ${expected.join(' or ')}` }]
      }
      return branches[0].flatMap((e) => zodIssues(e, path))
    }
    case 'invalid_key':
      return i.issues.flatMap((e) => zodIssues(e, path))
    case 'invalid_value':
      return [{ path, message: `expected one of ${i.values.map((v) => JSON.stringify(v)).join(', ')}` }]
    case 'too_small':
      return [{ path, message: i.origin === 'number' ? `must be ${i.inclusive ? '>=' : '>'} ${String(i.minimum)}` : i.origin === 'array' ? `needs at least ${String(i.minimum)} item(s)` : `must have at least ${String(i.minimum)} character(s)` }]
    case 'too_big':
      return [{ path, message: i.origin === 'number' ? `must be ${i.inclusive ? '<=' : '<'} ${String(i.maximum)}` : i.origin === 'array' ? `has more than ${String(i.maximum)} items` : `is longer than ${String(i.maximum)} characters` }]
    default:
      return [{ path, message: i.message }]
  }
}

export type { RuleIssue } from './check.ts'
