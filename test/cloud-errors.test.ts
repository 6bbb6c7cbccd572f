// The cloud's error codes are data: unique, documented, and (for those an API route answers with)
// carrying an HTTP status, so that the one error handler answers every route the same way.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Registry } from 'prom-client'
import { CloudError, CloudErrorCodes, errorWord, type CloudErrorCode } from '../cloud/errors.ts'
import { ApiServer } from '../cloud/http/api.ts'
import { createLogger } from '../cloud/log.ts'
import { MemoryViewStore } from '../cloud/store/view-store.ts'
import { FleetViews } from '../cloud/views/views.ts'

const codes = Object.keys(CloudErrorCodes) as CloudErrorCode[]

test('cloud errors: every code is unique, prefixed, documented and says whether a retry helps', () => {
  assert.equal(new Set(codes).size, codes.length)
  assert.equal(new Set(codes.map(errorWord)).size, codes.length, 'the API error words are unique too')
  for (const code of codes) {
    const info = CloudErrorCodes[code]
    assert.match(code, /^CLOUD_ERR_[A-Z_]+$/)
    assert.ok(info.doc.length > 10, `${code} has a doc`)
    assert.equal(typeof info.retryable, 'boolean', `${code} says whether a retry helps`)
  }
})

test('cloud errors: HTTP codes carry a 4xx or 5xx status and the error word the API answers with', () => {
  const http = codes.filter((c) => 'statusCode' in CloudErrorCodes[c])
  for (const c of ['CLOUD_ERR_BAD_REQUEST', 'CLOUD_ERR_UNAUTHORIZED', 'CLOUD_ERR_NOT_FOUND', 'CLOUD_ERR_INVALID_RULE_SET', 'CLOUD_ERR_UNAVAILABLE'] as const) assert.ok(http.includes(c), c)
  for (const code of http) {
    const status = (CloudErrorCodes[code] as { statusCode: number }).statusCode
    assert.ok(Number.isInteger(status) && status >= 400 && status < 600, `${code}: ${status}`)
    assert.equal(new CloudError(code, 'x').statusCode, status)
  }
  assert.deepEqual(['CLOUD_ERR_BAD_REQUEST', 'CLOUD_ERR_UNAVAILABLE', 'CLOUD_ERR_INVALID_RULE_SET', 'CLOUD_ERR_NOT_FOUND'].map((c) => errorWord(c as CloudErrorCode)), ['bad_request', 'unavailable', 'invalid_rule_set', 'not_found'])
})

test('cloud errors: the cause is kept', () => {
  const cause = new Error('nats down')
  const err = new CloudError('CLOUD_ERR_UNAVAILABLE', 'command not queued', { cause })
  assert.equal(err.cause, cause)
  assert.equal(err.retryable, true)
})

test('cloud API errors: every route answers { error, code, message } with the status of the code', async (t) => {
  const api = new ApiServer({ views: new FleetViews(new MemoryViewStore(), { offlineTimeoutMs: 15000 }), registry: new Registry(), log: createLogger('silent'), ready: () => ({ ready: true }), auth: 'off' })
  const base = `http://127.0.0.1:${await api.start('127.0.0.1', 0)}`
  t.after(() => api.close())
  const call = async (method: string, path: string, body?: string, type = 'application/json'): Promise<{ status: number, body: any }> => {
    const r = await fetch(base + path, { method, body, headers: body === undefined ? {} : { 'content-type': type } })
    return { status: r.status, body: await r.json() }
  }
  const cases: Array<[string, string, string | undefined, number, string, RegExp]> = [
    ['GET', '/api/gateways/bad.id', undefined, 400, 'bad_request', /^id: /],
    ['GET', '/api/alerts?limit=0', undefined, 400, 'bad_request', /^limit: an integer 1\.\.1000/],
    ['GET', '/api/devices/gw-1/d-1/history?res=2m', undefined, 400, 'bad_request', /^res: auto, raw, 1m, 5m or 1h/],
    ['GET', '/api/devices/gw-1/d-1/history?res=raw', undefined, 503, 'unavailable', /raw history needs the TELEMETRY stream/],
    ['GET', '/api/devices/gw-1/d-1/events?format=xml&limit=0', undefined, 400, 'bad_request', /^limit: .*; format: json, ndjson or csv/],
    ['GET', '/api/devices/gw-1/d-1/events', undefined, 503, 'unavailable', /raw history needs the TELEMETRY stream/],
    ['GET', '/api/devices/gw-1/d-1', undefined, 404, 'not_found', /no device gw-1\/d-1/],
    ['GET', '/api/no-such-route', undefined, 404, 'not_found', /^Route GET:\/api\/no-such-route not found$/],
    ['POST', '/api/commands', '{"gatewayId":"gw-1","deviceId":"d-1","name":"cool","ttlMs":0}', 400, 'bad_request', /^ttlMs: /],
    ['POST', '/api/commands', '{"gatewayId":"gw-1","deviceId":"d-1","name":"cool"}', 503, 'unavailable', /no NATS connection/],
    ['POST', '/api/commands', '{"gatewayId":', 400, 'bad_request', /JSON/],
    ['GET', '/api/rules', undefined, 503, 'unavailable', /no NATS connection/],
    ['GET', '/api/events', undefined, 503, 'unavailable', /live updates/],
  ]
  for (const [method, path, body, status, error, message] of cases) {
    const r = await call(method, path, body)
    assert.equal(r.status, status, `${method} ${path}: ${JSON.stringify(r.body)}`)
    assert.equal(r.body.error, error, path)
    assert.equal(r.body.code, `CLOUD_ERR_${error.toUpperCase()}`, path)
    assert.match(r.body.message, message, path)
  }
  // A rule set is checked with the gateway's schema and checker: the message names the rule and the field.
  const bad = await call('POST', '/api/rules/gw-1/validate', 'version: v1\nrules:\n  - id: hot\n    when: { reading: t, above: "x" }\n    then: [{ clearAlert: { id: a } }]\n', 'application/yaml')
  assert.deepEqual([bad.status, bad.body.error, bad.body.code], [422, 'invalid_rule_set', 'CLOUD_ERR_INVALID_RULE_SET'])
  assert.match(bad.body.message, /rule "hot": when\.above: expected number/)
  const ok = await call('POST', '/api/rules/gw-1/validate', 'version: v1\nrules: []\n', 'application/yaml')
  assert.deepEqual([ok.status, ok.body], [200, { ok: true, version: 'v1', rules: 0, ruleIds: [] }])
})
