// A light structural check of a rule set before the cloud stores it in the RULES bucket. The cloud
// does not import gateway/ (the gateway's parser is the authority: it refuses a bad set and keeps
// its running rules), so this only catches what is plainly not a rule set: text that does not
// parse, no version, no rules array, rules without ids or with the same id twice.
import { parse as parseYaml } from 'yaml'

/** Largest rule set accepted (bytes of text). */
export const MAX_RULE_SET_BYTES = 256 * 1024

export interface RuleSetSummary { version: string, rules: number, ruleIds: string[] }

export type RuleSetCheck = { ok: true, summary: RuleSetSummary } | { ok: false, message: string }

/** Checks the shape of a rule set given as YAML or JSON text (JSON is YAML). */
export function checkRuleSetText (text: string): RuleSetCheck {
  if (Buffer.byteLength(text, 'utf8') > MAX_RULE_SET_BYTES) return { ok: false, message: `rule set larger than ${MAX_RULE_SET_BYTES} bytes` }
  let doc: unknown
  try {
    doc = parseYaml(text, { maxAliasCount: 100 })
  } catch (err) {
    return { ok: false, message: `not YAML or JSON: ${(err as Error).message.split('\n')[0]}` }
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return { ok: false, message: 'a rule set is a mapping with version and rules' }
  const o = doc as Record<string, unknown>
  const version = typeof o.version === 'number' ? String(o.version) : o.version
  if (typeof version !== 'string' || version.length === 0 || version.length > 128) return { ok: false, message: 'version: expected a non-empty string (at most 128 characters)' }
  if (!Array.isArray(o.rules)) return { ok: false, message: 'rules: expected an array' }
  const ids: string[] = []
  for (let i = 0; i < o.rules.length; i++) {
    const r = o.rules[i] as Record<string, unknown> | null
    if (r === null || typeof r !== 'object' || Array.isArray(r)) return { ok: false, message: `rules[${i}]: expected a mapping` }
    if (typeof r.id !== 'string' || r.id.length === 0) return { ok: false, message: `rules[${i}].id: expected a non-empty string` }
    if (ids.includes(r.id)) return { ok: false, message: `rules[${i}].id: "${r.id}" is used twice` }
    if (r.when === undefined) return { ok: false, message: `rule "${r.id}": when is missing` }
    ids.push(r.id)
  }
  return { ok: true, summary: { version, rules: ids.length, ruleIds: ids } }
}
