// Rule-set validation: every error names the rule and the field, and the example file shipped in
// deploy/ is valid and loads into the engine.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import { RuleEngine } from '../gateway/rules/engine.ts'
import { parseRuleSet, parseRuleSetText, RulesError } from '../proto/rules/schema.ts'

const THEN = [{ command: { device: 'cooler-1', name: 'on' } }]

/** The message of the RulesError that parsing `rules` (with `extra` at the top) throws. */
function errorOf (rules: unknown[], extra: Record<string, unknown> = {}): string {
  try {
    parseRuleSet({ version: 'v1', ...extra, rules })
  } catch (err) {
    assert.ok(err instanceof RulesError)
    assert.equal(err.code, 'GW_ERR_RULES')
    assert.equal(err.retryable, false)
    return err.message
  }
  assert.fail('expected a RulesError')
}

test('rules schema: errors name the rule id and the field path', () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ id: 'cooler-on', when: { reading: 'temperature', above: 'eight' }, then: THEN }, /rule "cooler-on": when\.above: expected number/],
    [{ id: 'band', when: { and: [{ reading: 't', above: 1 }, { reading: 't', below: null }] }, then: THEN }, /rule "band": when\.and\[1\]\.below: expected number/],
    [{ id: 'inf', when: { reading: 't', above: Infinity }, then: THEN }, /rule "inf": when\.above: expected a finite number/],
    [{ id: 'typo', when: { reading: 't', abov: 1 }, then: THEN }, /rule "typo": when\.abov: unknown key/],
    [{ id: 'no-then', when: { reading: 't', above: 1 }, then: [] }, /rule "no-then": then: needs at least 1 item/],
    [{ id: 'empty', devices: [], when: { reading: 't', above: 1 }, then: THEN }, /rule "empty": devices: needs at least 1 item/],
    [{ id: 'long', when: { reading: 't', window: { kind: 'sliding', ms: 2 * 86_400_000, agg: 'avg' }, above: 1 }, then: THEN }, /rule "long": when\.window\.ms: must be <= 86400000/],
    [{ id: 'big', when: { reading: 't', window: { kind: 'sliding', ms: 1000, agg: 'avg', maxPoints: 20_000 }, above: 1 }, then: THEN }, /rule "big": when\.window\.maxPoints: must be <= 10000/],
    [{ id: 'sev', when: { reading: 't', above: 1 }, then: [{ raiseAlert: { id: 'a', severity: 'huge', message: 'm' } }] }, /rule "sev": then\[0\]\.raiseAlert\.severity: expected one of "info", "warning", "critical"/],
    [{ when: { reading: 't', above: 1 }, then: THEN }, /rules\[0\]: id: required/],
  ]
  for (const [rule, pattern] of cases) assert.match(errorOf([rule]), pattern)
})

test('rules schema: cross-field checks name the rule and the field', () => {
  const groups = { freezers: ['f1', 'f2'] }
  const cases: Array<[unknown[], RegExp]> = [
    [[{ id: 'dup', when: { reading: 't', above: 1 }, then: THEN }, { id: 'dup', when: { reading: 't', above: 2 }, then: THEN }], /rule "dup": id: duplicate rule id \(also rules\[0\]\)/],
    [[{ id: 'freezer-warm', when: { group: 'freezerz', any: { reading: 't', above: -15 } }, then: THEN }], /rule "freezer-warm": when\.group: unknown group "freezerz"/],
    [[{ id: 'by-group', devices: { group: 'nope' }, when: { reading: 't', above: 1 }, then: THEN }], /rule "by-group": devices\.group: unknown group "nope"/],
    [[{ id: 'two', when: { reading: 't', above: 1, stale: { ms: 5 } }, then: THEN }], /rule "two": when: has reading and stale/],
    [[{ id: 'none', when: { for: 10 }, then: THEN }], /rule "none": when: expected one of reading, stale, group, and, or, not/],
    [[{ id: 'win', when: { reading: 't', window: { kind: 'tumbling', ms: 1000, agg: 'avg' } }, then: THEN }], /rule "win": when: a window condition needs exactly one of above, below/],
    [[{ id: 'rate', when: { reading: 't', rateOfChange: { perSecond: 1 }, above: 2 }, then: THEN }], /rule "rate": when\.above: does not apply to a rateOfChange condition/],
    [[{ id: 'any-all', when: { group: 'freezers', any: { stale: { ms: 5 } }, all: { stale: { ms: 5 } } }, then: THEN }], /rule "any-all": when: a group condition needs exactly one of any, all/],
    [[{ id: 'mixed', when: { and: [{ reading: 't', above: 1 }, { group: 'freezers', any: { stale: { ms: 5 } } }] }, then: THEN }], /rule "mixed": when: a rule with a group condition is evaluated once for the site/],
    [[{ id: 'nest', when: { group: 'freezers', any: { group: 'freezers', all: { stale: { ms: 5 } } } }, then: THEN }], /rule "nest": when\.any\.group: group conditions cannot nest/],
    [[{ id: 'both', when: { reading: 't', above: 1, for: 5 }, debounceMs: 5, then: THEN }], /rule "both": debounceMs: set either debounceMs or when\.for, not both/],
    [[{ id: 'act', when: { reading: 't', above: 1 }, then: [{ clearAlert: { id: 'a' }, raiseAlert: { id: 'a', severity: 'info', message: '' } }] }], /rule "act": then\[0\]: has raiseAlert and clearAlert/],
    [[{ id: 'ph', when: { reading: 't', above: 1 }, then: [{ clearAlert: { id: 'hot-{dev}' } }] }], /rule "ph": then\[0\]\.clearAlert\.id: unknown placeholder \{dev\}/],
  ]
  for (const [rules, pattern] of cases) assert.match(errorOf(rules, { groups }), pattern)
  let deep: unknown = { reading: 't', above: 1 }
  for (let i = 0; i < 10; i++) deep = { not: deep }
  assert.match(errorOf([{ id: 'deep', when: deep, then: THEN }]), /rule "deep": when(\.not)+: conditions nest more than 8 deep/)
})

test('rules schema: RulesError lists every issue with its rule id and path', () => {
  try {
    parseRuleSet({ version: 'v1', rules: [{ id: 'a', when: { reading: 't', above: 1 }, then: THEN }, { id: 'a', when: { reading: 't', above: 1 }, then: [{ clearAlert: { id: '{x}' } }] }] })
    assert.fail('expected a RulesError')
  } catch (err) {
    assert.ok(err instanceof RulesError)
    assert.deepEqual(err.issues.map((i) => [i.ruleId, i.path.join('.')]), [['a', 'rules.1.id'], ['a', 'rules.1.then.0.clearAlert.id']])
  }
  assert.throws(() => parseRuleSetText('version: [unclosed', 'rules.yaml'), /rules\.yaml is not valid YAML\/JSON/)
  assert.throws(() => parseRuleSetText('{"version": "1", "rules": [{"id": "x"}]}', 'kv rules.site-01'), /kv rules\.site-01: invalid rule set: rule "x": when: required/)
})

test('rules schema: the example rule set in deploy/ is valid and loads into the engine', () => {
  const text = readFileSync(new URL('../deploy/gateway/rules.example.yaml', import.meta.url), 'utf8')
  const rs = parseRuleSetText(text, 'rules.example.yaml')
  assert.ok(rs.rules.length >= 5)
  let t = 1_700_000_000_000
  const engine = new RuleEngine(rs, { now: () => t })
  assert.equal(engine.version, rs.version)
  const send = (deviceId: string, temperature: number): string[] =>
    engine.evaluate({ deviceId, eventTsMs: t, ingestTsMs: t, readings: [{ name: 'temperature', value: temperature }] }).map((d) => `${d.ruleId}:${d.kind}`)
  assert.deepEqual(send('coldroom-temp', 9), [])
  t += 60_000
  assert.deepEqual(engine.tick().map((d) => `${d.ruleId}:${d.kind}`), ['coldroom-cooling:fired'])
  assert.deepEqual(send('coldroom-temp', 7), [], 'between 6 and 8: hysteresis holds')
  assert.deepEqual(send('coldroom-temp', 5.5), ['coldroom-cooling:cleared'])
})
