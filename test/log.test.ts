// One root logger for both processes: credentials redacted wherever they sit, errors logged with
// their code and cause (pino's err serializer).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createRootLogger } from '../lib/log.ts'
import { GatewayError } from '../gateway/errors.ts'
import { CloudError } from '../cloud/errors.ts'

function capture (): { lines: () => Array<Record<string, unknown>>, stream: { write: (s: string) => void } } {
  const out: string[] = []
  return { lines: () => out.map((l) => JSON.parse(l) as Record<string, unknown>), stream: { write: (s: string) => { out.push(s) } } }
}

test('log: secrets are redacted at the top level, one level down and in nested config paths', () => {
  const c = capture()
  const log = createRootLogger('info', { service: 'test' }, c.stream)
  log.info({ password: 'p1', token: 't1', creds: 'c1', uplink: { pass: 'p2', user: 'gw' }, config: { nats: { pass: 'p3' }, console: { passwordHash: 'scrypt$x' } } }, 'hello')
  const text = JSON.stringify(c.lines())
  for (const secret of ['p1', 't1', 'c1', 'p2', 'p3', 'scrypt$x']) assert.ok(!text.includes(`"${secret}"`), `${secret} was logged`)
  assert.equal((c.lines()[0].uplink as Record<string, unknown>).user, 'gw')
})

test('log: an error logged as { err } keeps its code, its cause and its stack', () => {
  for (const err of [new GatewayError('GW_ERR_OUTBOX_COMMIT', 'commit failed', { cause: new Error('disk I/O error') }), new CloudError('CLOUD_ERR_PROVISION', 'provision failed', { cause: new Error('timeout') })]) {
    const c = capture()
    createRootLogger('info', {}, c.stream).error({ err }, 'failed')
    const logged = c.lines()[0].err as Record<string, unknown>
    assert.equal(logged.code, err.code)
    assert.match(String(logged.message), /failed/)
    assert.match(String(logged.stack), /Error/)
    assert.match(JSON.stringify(logged), /disk I\/O error|timeout/)
  }
})
