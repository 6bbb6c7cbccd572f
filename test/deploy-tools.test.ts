// The operators' scripts in deploy/nats answer --help with their usage (exit 0) and an unknown
// option or a bad argument with the usage on stderr (exit 2), never with a stack trace.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { connect } from '@nats-io/transport-node'
import { startNats } from '../devkit/index.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const run = (script: string, args: string[]): { status: number | null, stdout: string, stderr: string } =>
  spawnSync(process.execPath, ['--import', 'tsx', script, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60000 })

for (const script of ['deploy/nats/gateway-user.ts', 'deploy/nats/streams.ts', 'deploy/nats/passwd.ts']) {
  test(`${script}: --help prints the usage and exits 0; an unknown option exits 2 with the usage`, () => {
    const help = run(script, ['--help'])
    assert.equal(help.status, 0, help.stderr)
    assert.match(help.stdout, /^usage: /)
    const bad = run(script, ['--no-such-option'])
    assert.equal(bad.status, 2, bad.stderr)
    assert.match(bad.stderr, /usage: /)
    assert.doesNotMatch(bad.stderr, /\n\s+at /, 'a stack trace')
  })
}

test('deploy/nats/gateway-user.ts: a bad gateway id exits 2; a good one prints its user block', () => {
  assert.equal(run('deploy/nats/gateway-user.ts', ['bad id!']).status, 2)
  const ok = run('deploy/nats/gateway-user.ts', ['site-x', '--password', 'pw'])
  assert.equal(ok.status, 0, ok.stderr)
  assert.match(ok.stdout, /user: "gw-site-x"/)
})

test('deploy/nats/passwd.ts: the bcrypt hash it prints is accepted by nats-server for the clear password, and only for it', { timeout: 60000 }, async (t) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'deploy/nats/passwd.ts'], { cwd: ROOT, input: 'a clear password', encoding: 'utf8', timeout: 60000 })
  assert.equal(r.status, 0, r.stderr)
  const hash = r.stdout.trim()
  assert.match(hash, /^\$2[abxy]\$11\$/)
  const nats = await startNats({ config: `authorization { user: ops, password: "${hash}" }` })
  t.after(() => nats.cleanup())
  const nc = await connect({ servers: nats.url, user: 'ops', pass: 'a clear password' })
  await nc.flush()
  await nc.close()
  await assert.rejects(connect({ servers: nats.url, user: 'ops', pass: 'another password', reconnect: false }), /authorization|auth/i)
})
