// Config (one schema; file < env < --set; a clear error naming the bad key), the devices CLI end to
// end against a real data directory and a real gateway, and the error codes as documented data.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { GatewayError, GatewayErrorCodes, loadConfig, parseConfig, telemetryTopic } from '../gateway/index.ts'
import { connectDevice, startGateway, tempDir } from '../devkit/index.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const run = promisify(execFile)

/** Runs cleanups in reverse order of registration after the test, pass or fail. */
function cleanups (t: TestContext): (fn: () => unknown) => void {
  const stack: Array<() => unknown> = []
  t.after(async () => {
    while (stack.length > 0) await stack.pop()!()
  })
  return (fn) => { stack.push(fn) }
}

/** This process's environment without GW_* variables, so that the runner's environment cannot leak into a child's config. */
function cleanEnv (extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GW_'))), ...extra }
}

/** Runs a TypeScript entry point of the repo; never rejects: resolves with exit code and output. */
async function runTs (script: string, args: string[], env: NodeJS.ProcessEnv = cleanEnv()): Promise<{ code: number, stdout: string, stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', script, ...args], { cwd: ROOT, env, timeout: 30000 })
    return { code: 0, stdout, stderr }
  } catch (err) {
    const e = err as { code?: number | string, stdout?: string, stderr?: string, signal?: string }
    if (typeof e.code !== 'number') throw err
    return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }
  }
}

/** The config error thrown by fn (fails the test when fn does not throw one). */
function configError (fn: () => unknown): GatewayError {
  try {
    fn()
  } catch (err) {
    assert.ok(err instanceof GatewayError, `expected a GatewayError, got ${String(err)}`)
    assert.equal(err.code, 'GW_ERR_CONFIG')
    assert.equal(err.retryable, false)
    return err
  }
  assert.fail('the config was accepted')
}

test('config: an unknown key is refused with GW_ERR_CONFIG and named', () => {
  assert.match(configError(() => parseConfig({ mqttt: { port: 1 } })).message, /mqttt/)
  const nested = configError(() => parseConfig({ mqtt: { prot: 1883 } })).message
  assert.match(nested, /\bmqtt\b/)
  assert.match(nested, /\bprot\b/)
  assert.match(configError(() => parseConfig({ outbox: { budget: 1 } })).message, /outbox.*\bbudget\b/)
})

test('config: a value of the wrong type is refused and its key named with its path', () => {
  assert.match(configError(() => parseConfig({ mqtt: { port: '1883' } })).message, /mqtt\.port\b/)
  assert.match(configError(() => parseConfig({ mqtt: { port: 70000 } })).message, /mqtt\.port\b/)
  assert.match(configError(() => parseConfig({ outbox: { budgetBytes: -1 } })).message, /outbox\.budgetBytes\b/)
  assert.match(configError(() => parseConfig({ mqtt: { allowAnonymous: 'yes' } })).message, /mqtt\.allowAnonymous\b/)
  assert.match(configError(() => parseConfig({ gatewayId: 'has space' })).message, /gatewayId\b/)
})

test('config: a value outside an enum is refused, naming the key and the allowed values', () => {
  const durability = configError(() => parseConfig({ outbox: { durability: 'sometimes' } })).message
  assert.match(durability, /outbox\.durability\b/)
  assert.match(durability, /full/)
  assert.match(durability, /normal/)
  assert.match(configError(() => parseConfig({ outbox: { overflow: 'drop-all' } })).message, /outbox\.overflow\b/)
  assert.match(configError(() => parseConfig({ logLevel: 'loud' })).message, /logLevel\b/)
})

test('config: unreadable or unparsable config files are refused with GW_ERR_CONFIG', (t) => {
  const tmp = tempDir()
  t.after(() => tmp.cleanup())
  const missing = join(tmp.dir, 'missing.yaml')
  assert.match(configError(() => loadConfig({ file: missing })).message, /missing\.yaml/)
  const broken = join(tmp.dir, 'broken.yaml')
  writeFileSync(broken, 'mqtt: [port: 1\n')
  assert.match(configError(() => loadConfig({ file: broken })).message, /broken\.yaml/)
  assert.match(configError(() => loadConfig({ sets: ['mqtt.port'] })).message, /mqtt\.port/)
})

test('config: defaults apply when nothing is set', () => {
  const cfg = loadConfig({})
  assert.equal(cfg.mqtt.port, 1883)
  assert.equal(cfg.mqtt.allowAnonymous, false)
  assert.equal(cfg.outbox.durability, 'full')
})

test('config: precedence is file < environment < --set', (t) => {
  const tmp = tempDir()
  t.after(() => tmp.cleanup())
  const file = join(tmp.dir, 'gateway.yaml')
  writeFileSync(file, [
    'gatewayId: site-a',
    'mqtt:',
    '  port: 1000',
    '  maxPayloadBytes: 2048',
    '  allowAnonymous: true',
    'outbox:',
    '  budgetBytes: 5000000',
    '  durability: normal',
    '',
  ].join('\n'))
  const env = { GW_MQTT__PORT: '1884', GW_OUTBOX__BUDGET_BYTES: '6000000', GW_MQTT__ALLOW_ANONYMOUS: 'false', OTHER_VAR: 'ignored' }

  const fileOnly = loadConfig({ file })
  assert.equal(fileOnly.gatewayId, 'site-a')
  assert.equal(fileOnly.mqtt.port, 1000)
  assert.equal(fileOnly.mqtt.allowAnonymous, true)
  assert.equal(fileOnly.outbox.budgetBytes, 5000000)

  const withEnv = loadConfig({ file, env })
  assert.equal(withEnv.mqtt.port, 1884)
  assert.equal(withEnv.outbox.budgetBytes, 6000000)
  assert.equal(withEnv.mqtt.allowAnonymous, false)
  // Keys set only in the file survive the overlay.
  assert.equal(withEnv.mqtt.maxPayloadBytes, 2048)
  assert.equal(withEnv.outbox.durability, 'normal')
  assert.equal(withEnv.gatewayId, 'site-a')

  const withSet = loadConfig({ file, env, sets: ['mqtt.port=1885', 'outbox.durability=full', 'http.port=null'] })
  assert.equal(withSet.mqtt.port, 1885)
  assert.equal(withSet.outbox.durability, 'full')
  assert.equal(withSet.http.port, null)
  assert.equal(withSet.outbox.budgetBytes, 6000000)
  assert.equal(withSet.mqtt.maxPayloadBytes, 2048)

  // The environment alone, without a file.
  assert.equal(loadConfig({ env: { GW_MQTT__PORT: '1884' } }).mqtt.port, 1884)
  // A bad value from the environment is named by its config key.
  assert.match(configError(() => loadConfig({ file, env: { GW_MQTT__PORT: 'eighteen' } })).message, /mqtt\.port\b/)
})

test('config: a string key set from the environment or --set keeps a numeric-looking value as a string', () => {
  // gatewayId and dataDir are strings; "0042" is a valid gateway id and "2024" a valid directory name.
  assert.equal(loadConfig({ sets: ['gatewayId=0042'] }).gatewayId, '0042')
  assert.equal(loadConfig({ env: { GW_GATEWAY_ID: '123' } }).gatewayId, '123')
  assert.equal(loadConfig({ sets: ['dataDir=2024'] }).dataDir, '2024')
})

test('gateway process: a bad --set value exits with code 2 and names the key', async () => {
  const res = await runTs('gateway/main.ts', ['--set', 'mqtt.port=notanumber', '--set', 'http.port=null', '--set', 'mqtt.wsPort=null'])
  assert.equal(res.code, 2, `exit code; stderr: ${res.stderr}`)
  assert.match(res.stderr, /GW_ERR_CONFIG/)
  assert.match(res.stderr, /mqtt\.port\b/)
})

test('devices CLI: --help prints the usage and exits 0; an unknown option prints the usage and exits 2', async () => {
  const help = await runTs('gateway/cli.ts', ['--help'])
  assert.equal(help.code, 0, help.stderr)
  assert.match(help.stdout, /^usage: devices <command>/)
  assert.doesNotMatch(help.stderr, /ERR_PARSE_ARGS|at /)
  const bad = await runTs('gateway/cli.ts', ['list', '--colour'])
  assert.equal(bad.code, 2)
  assert.match(bad.stderr, /Unknown option '--colour'/)
  assert.match(bad.stderr, /usage: devices <command>/)
  assert.doesNotMatch(bad.stderr, /\n\s+at /, 'no stack trace')
})

test('devices CLI: add, list, rotate and disable work end to end, and the printed secret authenticates', async (t) => {
  const defer = cleanups(t)
  const tmp = tempDir()
  defer(() => tmp.cleanup())
  const cli = (...args: string[]) => runTs('gateway/cli.ts', [...args, '--data-dir', tmp.dir])

  const added = await cli('add', 'dev-1', '--json')
  assert.equal(added.code, 0, added.stderr)
  const { deviceId, secret } = JSON.parse(added.stdout) as { deviceId: string, secret: string }
  assert.equal(deviceId, 'dev-1')
  assert.match(secret, /^[A-Za-z0-9_-]{16,}$/)
  assert.ok(existsSync(join(tmp.dir, 'gateway.db')))

  const again = await cli('add', 'dev-1', '--json')
  assert.equal(again.code, 1)
  assert.match(again.stderr, /GW_ERR_DEVICE_EXISTS/)
  assert.ok(!again.stdout.includes(secret))
  const badId = await cli('add', 'bad id/with slash')
  assert.equal(badId.code, 1)
  assert.match(badId.stderr, /GW_ERR_DEVICE_ID/)
  assert.equal((await cli('add', 'dev-2', '--json')).code, 0)

  const listed = await cli('list', '--json')
  assert.equal(listed.code, 0, listed.stderr)
  const devices = listed.stdout.trim().split('\n').map((l) => JSON.parse(l) as { deviceId: string, disabled: boolean })
  assert.deepEqual(devices.map((d) => [d.deviceId, d.disabled]), [['dev-1', false], ['dev-2', false]])
  assert.ok(!listed.stdout.includes(secret), 'list prints a secret')

  // A gateway on that data directory accepts the secret the CLI printed.
  const gw = await startGateway({}, { dataDir: tmp.dir, keepData: true })
  defer(() => gw.close())
  const client = await connectDevice(gw.ports.mqtt, { username: 'dev-1', password: secret })
  await client.publishAsync(telemetryTopic('dev-1'), JSON.stringify({ t: 1 }), { qos: 1 })
  await client.endAsync()

  // Rotate while the gateway runs: the old secret stops working at the next connect, the new one works.
  const rotated = await cli('rotate', 'dev-1', '--json')
  assert.equal(rotated.code, 0, rotated.stderr)
  const newSecret = (JSON.parse(rotated.stdout) as { secret: string }).secret
  assert.notEqual(newSecret, secret)
  await assert.rejects(connectDevice(gw.ports.mqtt, { username: 'dev-1', password: secret }), (err: { code?: number }) => err.code === 4)
  await (await connectDevice(gw.ports.mqtt, { username: 'dev-1', password: newSecret })).endAsync()
  const rotateUnknown = await cli('rotate', 'dev-nobody', '--json')
  assert.equal(rotateUnknown.code, 1)
  assert.match(rotateUnknown.stderr, /GW_ERR_DEVICE_UNKNOWN/)

  // Disable: refused at the next connect; list shows it; enable brings it back.
  const disabled = await cli('disable', 'dev-1')
  assert.equal(disabled.code, 0, disabled.stderr)
  await assert.rejects(connectDevice(gw.ports.mqtt, { username: 'dev-1', password: newSecret }), (err: { code?: number }) => err.code === 5)
  const after = (await cli('list', '--json')).stdout.trim().split('\n').map((l) => JSON.parse(l) as { deviceId: string, disabled: boolean })
  assert.deepEqual(after.map((d) => [d.deviceId, d.disabled]), [['dev-1', true], ['dev-2', false]])
  assert.equal((await cli('enable', 'dev-1')).code, 0)
  await (await connectDevice(gw.ports.mqtt, { username: 'dev-1', password: newSecret })).endAsync()

  const usage = await cli('frobnicate')
  assert.equal(usage.code, 2)
  assert.match(usage.stderr, /usage/)
})

test('errors: every GatewayErrorCodes code is unique, well-formed, documented and listed in README.md', () => {
  const codes = Object.keys(GatewayErrorCodes)
  assert.ok(codes.length > 0)
  assert.equal(new Set(codes.map((c) => c.toUpperCase())).size, codes.length, 'duplicate codes')
  const docs = new Set<string>()
  for (const [code, info] of Object.entries(GatewayErrorCodes) as Array<[keyof typeof GatewayErrorCodes, { retryable: boolean, doc: string }]>) {
    assert.match(code, /^GW_ERR_[A-Z_]+$/)
    assert.equal(typeof info.retryable, 'boolean', `${code}.retryable`)
    assert.equal(typeof info.doc, 'string', `${code}.doc`)
    assert.ok(info.doc.trim().length >= 10, `${code} has no real doc string`)
    assert.ok(!docs.has(info.doc), `${code} repeats another code's doc`)
    docs.add(info.doc)
    const err = new GatewayError(code, 'x')
    assert.equal(err.code, code)
    assert.equal(err.retryable, info.retryable)
  }
  const readme = new URL('../README.md', import.meta.url)
  assert.ok(existsSync(readme), 'README.md is missing: it must document every gateway error code')
  const text = readFileSync(readme, 'utf8')
  const missing = codes.filter((c) => !new RegExp(`\\b${c}\\b`).test(text))
  assert.deepEqual(missing, [], 'error codes not documented in README.md')
})
