// Scripts reach the API with HTTP Basic (the console's user and password on every request, no
// session): checked with curl, the client the docs show, and with fetch. Wrong credentials are
// refused and counted like a failed login; a cross-site state change is refused with them too.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { test } from 'node:test'
import { promisify } from 'node:util'
import { scrapeMetric, startNats } from '../devkit/index.ts'
import { deferrer, startCloud, TEST_CONSOLE } from './harness/cloud.ts'

const run = promisify(execFile)
const USER_PASS = `${TEST_CONSOLE.user}:${TEST_CONSOLE.password}`
const basic = (userPass: string): string => `Basic ${Buffer.from(userPass).toString('base64')}`

/** curl as a script would call it; resolves with the HTTP status and the body. */
async function curl (args: string[]): Promise<{ status: number, body: string }> {
  const { stdout } = await run('curl', ['-s', '-w', '\n%{http_code}', ...args])
  const nl = stdout.lastIndexOf('\n')
  return { status: Number(stdout.slice(nl + 1)), body: stdout.slice(0, nl) }
}

test('api basic auth: curl -u with the console credentials reads and writes the API without a session; wrong ones get 401 and count as failed logins', { timeout: 60000 }, async (t) => {
  const defer = deferrer(t)
  const nats = await startNats()
  defer(() => nats.cleanup())
  const { cloud, api } = await startCloud(nats)
  defer(() => cloud.close())

  const read = await curl(['-u', USER_PASS, `${api}/api/fleet`])
  assert.equal(read.status, 200, read.body)
  assert.ok(Array.isArray(JSON.parse(read.body).gateways), read.body)

  const rules = 'version: from-a-script\nrules: []\n'
  const put = await curl(['-u', USER_PASS, '-X', 'PUT', '-H', 'content-type: application/yaml', '--data-binary', rules, `${api}/api/rules/site-a`])
  assert.equal(put.status, 200, put.body)
  const back = await curl(['-u', USER_PASS, `${api}/api/rules/site-a`])
  assert.match(back.body, /from-a-script/)

  const before = await failedLogins(api)
  const wrong = await curl(['-u', `${TEST_CONSOLE.user}:not-the-password`, `${api}/api/fleet`])
  assert.equal(wrong.status, 401)
  assert.equal(JSON.parse(wrong.body).code, 'CLOUD_ERR_UNAUTHORIZED')
  assert.equal(await failedLogins(api), before + 1)
  const none = await curl([`${api}/api/fleet`])
  assert.equal(none.status, 401)

  // fetch: no cookie is set by a Basic request, and a cross-site POST is refused even with the credentials.
  const r = await fetch(`${api}/api/fleet`, { headers: { authorization: basic(USER_PASS) } })
  assert.equal(r.status, 200)
  assert.equal(r.headers.get('set-cookie'), null)
  const cross = await fetch(`${api}/api/rules/site-a/validate`, { method: 'POST', headers: { authorization: basic(USER_PASS), origin: 'http://evil.example', 'content-type': 'application/yaml' }, body: rules })
  assert.equal(cross.status, 403)
})

const failedLogins = (api: string): Promise<number> => scrapeMetric(Number(new URL(api).port), 'cloud_console_logins_total', { result: 'failed' })
