// How the cloud checks a rule set before it stores it in the RULES bucket: with the very schema and
// checker the gateway loads it with (proto/rules/schema.ts), so a set the cloud accepts is one the
// gateway runs, and a refusal names the rule and the field just as the gateway would. On top, a size
// bound: a KV value (and a gateway's memory) is not the place for megabytes of rules.
import { parseRuleSetText, RulesError } from '../../proto/rules/schema.ts'
import { CloudError } from '../errors.ts'

/** Largest rule set accepted (bytes of text). */
export const MAX_RULE_SET_BYTES = 256 * 1024

export interface RuleSetSummary { version: string, rules: number, ruleIds: string[] }

export type RuleSetCheck = { ok: true, summary: RuleSetSummary } | { ok: false, message: string }

/** The summary of a valid rule set; CLOUD_ERR_INVALID_RULE_SET (the RulesError as cause) otherwise. */
export function ruleSetSummary (text: string): RuleSetSummary {
  if (Buffer.byteLength(text, 'utf8') > MAX_RULE_SET_BYTES) throw new CloudError('CLOUD_ERR_INVALID_RULE_SET', `rule set larger than ${MAX_RULE_SET_BYTES} bytes`)
  try {
    const rs = parseRuleSetText(text)
    return { version: rs.version, rules: rs.rules.length, ruleIds: rs.rules.map((r) => r.id) }
  } catch (err) {
    if (err instanceof RulesError) throw new CloudError('CLOUD_ERR_INVALID_RULE_SET', err.message, { cause: err })
    throw err
  }
}

/** The same check as a result: for listings, where an invalid stored set shows as "no version". */
export function checkRuleSetText (text: string): RuleSetCheck {
  try {
    return { ok: true, summary: ruleSetSummary(text) }
  } catch (err) {
    if (err instanceof CloudError) return { ok: false, message: err.message }
    throw err
  }
}
