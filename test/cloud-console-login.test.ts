// The console is always behind a login (DESIGN promise 8): with no password configured the first
// start generates one, shows it once and keeps only its hash; a Host allow-list stops DNS-rebinding
// pages; and the whole configuration is checked before NATS is touched.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { Registry } from 'prom-client'
import { Cloud } from '../cloud/cloud.ts'
import { parseCloudConfig, type CloudConfig, type CloudConfigInput } from '../cloud/config.ts'
import { ApiServer } from '../cloud/http/api.ts'
import { PASSWORD_HASH_FILE } from '../cloud/http/generated-password.ts'
import { allowedHostNames } from '../cloud/http/host-guard.ts'
import { createLogger } from '../cloud/log.ts'
import { MemoryViewStore } from '../cloud/store/view-store.ts'
import { FleetViews } from '../cloud/views/views.ts'
import { consoleLogin, startNats, tempDir, type NatsServer, withSession } from '../devkit/index.ts'
import { createRootLogger } from '../lib/log.ts'
import { deferrer, startCloud, TEST_CONSOLE } from './harness/cloud.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const PRINTED = /console password for user admin: (\S+) \(shown once; set console\.password or console\.passwordHash to choose your own\)/

/** A cloud on loopback whose log lines (warn and up) are kept in `lines`. */
async function startLogged (nats: NatsServer, input: CloudConfigInput): Promise<{ cloud: Cloud, api: string, lines: string[] }> {
  const lines: string[] = []
  const log = createRootLogger('warn', { service: 'cloud' }, { write: (line: string) => { lines.push(line) } })
  const cloud = new Cloud(parseCloudConfig({ nats: { servers: [nats.url] }, http: { host: '127.0.0.1', port: 0 }, ...input }), log, { defaultMetrics: false })
  const { http } = await cloud.start()
  return { cloud, api: `http://127.0.0.1:${http}`, lines }
}

/** A test nats-server and a temporary directory, both removed after the test. */
async function natsAndDir (t: Parameters<typeof deferrer>[0]): Promise<{ defer: ReturnType<typeof deferrer>, nats: NatsServer, dir: string }> {
  const defer = deferrer(t)
  const nats = await startNats()
  defer(() => nats.cleanup())
  const state = tempDir('cloud-state-')
  defer(() => state.cleanup())
  return { defer, nats, dir: state.dir }
}

/** A raw HTTP request with the Host header chosen (fetch sets its own). */
function raw (port: number, method: string, path: string, host: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: { ...headers, host } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { text += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

test('console login: with no password configured, the API answers 401; the one-time password shown once logs in and survives a restart', { timeout: 60000 }, async (t) => {
  const { defer, nats, dir } = await natsAndDir(t)
  const stateDir = join(dir, 'cloud')

  const first = await startLogged(nats, { console: { stateDir } })
  let firstClosed = false
  defer(() => firstClosed ? undefined : first.cloud.close())
  assert.equal((await fetch(`${first.api}/api/fleet`)).status, 401)
  const command = await fetch(`${first.api}/api/commands`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ gatewayId: 'gw-1', deviceId: 'd-1', name: 'open' }) })
  assert.equal(command.status, 401)
  assert.equal((await fetch(`${first.api}/api/rules/gw-1`, { method: 'PUT', headers: { 'content-type': 'application/yaml' }, body: 'version: v1\nrules: []\n' })).status, 401)

  const shown = first.lines.map((l) => PRINTED.exec(l)?.[1]).filter((p) => p !== undefined)
  assert.equal(shown.length, 1, `the password is shown once: ${first.lines.join('')}`)
  const password = shown[0]
  assert.equal(JSON.parse(first.lines.find((l) => PRINTED.test(l))!).level, 40, 'at warn level')
  const file = join(stateDir, PASSWORD_HASH_FILE)
  const hash = readFileSync(file, 'utf8').trim()
  assert.match(hash, /^scrypt\$/)
  assert.ok(!hash.includes(password), 'only the hash is stored')
  assert.equal(statSync(file).mode & 0o777, 0o600)
  assert.ok(!first.lines.some((l) => l.includes(hash)), 'the hash is never logged')

  const cookie = await consoleLogin(first.api, 'admin', password)
  assert.equal((await withSession(cookie)(`${first.api}/api/fleet`)).status, 200)
  await assert.rejects(consoleLogin(first.api, 'admin', `${password}x`), /HTTP 401/)
  await first.cloud.close()
  firstClosed = true

  // "First start" = no stored hash yet: a restart on the same state directory keeps the password and shows nothing.
  const second = await startLogged(nats, { console: { stateDir } })
  defer(() => second.cloud.close())
  assert.ok(!second.lines.some((l) => PRINTED.test(l) || l.includes(password) || l.includes(hash)), `nothing shown again: ${second.lines.join('')}`)
  assert.equal((await fetch(`${second.api}/api/fleet`)).status, 401)
  assert.equal((await withSession(await consoleLogin(second.api, 'admin', password))(`${second.api}/api/fleet`)).status, 200)
  assert.equal((await withSession(cookie)(`${second.api}/api/fleet`)).status, 200, 'sessions outlive the restart (the key comes from the stored hash)')
  assert.equal(readFileSync(file, 'utf8').trim(), hash)
})

test('console host check: another Host is refused on every route but the probes; localhost:PORT works', { timeout: 60000 }, async (t) => {
  const defer = deferrer(t)
  const nats = await startNats()
  defer(() => nats.cleanup())
  const { cloud, api } = await startCloud(nats)
  defer(() => cloud.close())
  const port = Number(new URL(api).port)
  const cookie = await consoleLogin(api, TEST_CONSOLE.user, TEST_CONSOLE.password)
  const evil = 'evil.example'
  const login = JSON.stringify(TEST_CONSOLE)
  for (const [method, path, headers, body] of [
    ['GET', '/api/fleet', { cookie }],
    ['POST', '/api/commands', { cookie, 'content-type': 'application/json' }, JSON.stringify({ gatewayId: 'gw-1', deviceId: 'd-1', name: 'open' })],
    ['POST', '/login', { 'content-type': 'application/json' }, login],
    ['GET', '/login', {}],
    ['GET', '/console/app.css', {}],
    ['GET', '/console/', { cookie }],
  ] as Array<[string, string, Record<string, string>, string?]>) {
    const r = await raw(port, method, path, `${evil}:${port}`, headers, body)
    assert.equal(r.status, 421, `${method} ${path}: ${r.body}`)
    assert.equal(JSON.parse(r.body).code, 'CLOUD_ERR_HOST_NOT_ALLOWED')
  }
  assert.equal((await raw(port, 'GET', '/api/fleet', evil, { cookie })).status, 421, 'without a port too')
  for (const path of ['/healthz', '/readyz', '/metrics']) assert.equal((await raw(port, 'GET', path, evil)).status, 200, path)
  for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, 'localhost']) {
    assert.equal((await raw(port, 'GET', '/api/fleet', host, { cookie })).status, 200, host)
  }
  assert.equal((await raw(port, 'POST', '/login', `localhost:${port}`, { 'content-type': 'application/json' }, login)).status, 200)
  assert.equal((await raw(port, 'GET', '/login', `localhost:${port}`)).status, 200)
})

test('console host check: http.allowedHosts and a non-wildcard http.host add names; a wildcard address adds none', async (t) => {
  const api = new ApiServer({ views: new FleetViews(new MemoryViewStore(), { offlineTimeoutMs: 15000 }), registry: new Registry(), log: createLogger('silent'), ready: () => ({ ready: true }), auth: 'off', allowedHosts: allowedHostNames('0.0.0.0', parseCloudConfig({ http: { allowedHosts: 'console.example,10.1.2.3:8080' } }).http.allowedHosts) })
  const port = await api.start('127.0.0.1', 0)
  t.after(() => api.close())
  for (const host of ['console.example', 'Console.Example:443', '10.1.2.3:9999', 'localhost:1']) assert.equal((await raw(port, 'GET', '/api/fleet', host)).status, 200, host)
  for (const host of ['0.0.0.0', 'evil.example', 'console.example.evil.example', 'console.example@evil.example']) assert.equal((await raw(port, 'GET', '/api/fleet', host)).status, 421, host)
  assert.ok(allowedHostNames('10.0.0.5').has('10.0.0.5'))
  assert.ok(allowedHostNames('::1').has('[::1]'))
  assert.equal(allowedHostNames('::').size, 3)
})

test('cloud config: an invalid configuration fails with CLOUD_ERR_CONFIG before NATS is touched (no connection, nothing provisioned)', { timeout: 60000 }, async (t) => {
  const { defer, nats, dir } = await natsAndDir(t)
  const notADir = join(dir, 'file')
  writeFileSync(notADir, 'x')
  // No password and a non-loopback host: valid (a password would be generated, in the test's directory).
  const valid = parseCloudConfig({ logLevel: 'silent', nats: { servers: [nats.url] }, http: { host: '0.0.0.0', port: 0 }, console: { stateDir: join(dir, 'state') } })
  const invalid: Array<[string, CloudConfig, RegExp]> = [
    // Built in code (as main.ts edits the parsed config), so the schema has not seen it yet.
    ['a malformed passwordHash', { ...valid, console: { ...valid.console, passwordHash: 'not-a-hash' } }, /console\.passwordHash: not an scrypt hash/],
    ['an unknown key', { ...valid, http: { ...valid.http, allowedHost: ['x'] } as CloudConfig['http'] }, /http\.allowedHost/],
    ['a state directory under a regular file', { ...valid, console: { ...valid.console, stateDir: join(notADir, 'cloud') } }, /console\.stateDir: cannot read .*ENOTDIR/],
  ]
  for (const [what, config, message] of invalid) {
    const cloud = new Cloud(config, createLogger('silent'), { defaultMetrics: false })
    await assert.rejects(cloud.start(), (err: { code?: string, message?: string }) => {
      assert.equal(err.code, 'CLOUD_ERR_CONFIG', `${what}: ${err.message}`)
      assert.match(err.message ?? '', message, what)
      return true
    })
    await cloud.close()
  }
  const connz = await (await fetch(`${nats.monitorUrl}/connz?state=all`)).json() as { connections?: Array<{ name?: string }> }
  assert.deepEqual((connz.connections ?? []).filter((c) => c.name === 'iot-cloud'), [], 'the cloud made no connection to NATS')
  const admin = await connect({ servers: nats.url })
  defer(() => admin.close())
  const streams = []
  for await (const s of (await jetstreamManager(admin)).streams.list()) streams.push(s.config.name)
  assert.deepEqual(streams, [], 'nothing was provisioned')
})

test('cloud main: an invalid configuration exits 2 with CLOUD_ERR_CONFIG at once, even with an unreachable NATS', { timeout: 30000 }, async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'cloud/main.ts', '--set', 'nats.servers=nats://127.0.0.1:1', '--set', 'console.passwordHash=not-a-hash', '--set', 'http.port=0'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr.on('data', (c: Buffer) => { out += c.toString() })
  const timer = setTimeout(() => child.kill('SIGKILL'), 20000)
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  clearTimeout(timer)
  assert.equal(code, 2, out)
  assert.match(out, /CLOUD_ERR_CONFIG: invalid cloud config: console\.passwordHash: not an scrypt hash/)
})
