// Promise 8 (secure by default): per-device credentials, hashed and never logged, and an ACL that
// keeps each device inside its own topic space. Real gateway, real MQTT clients, real SQLite file.
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import type { IClientOptions, MqttClient } from 'mqtt'
import { DeviceRegistry, openDb, telemetryTopic, commandTopic } from '../gateway/index.ts'
import { connectDevice, spawnGateway, startGateway, tempDir, type TestGateway, waitFor } from '../devkit/index.ts'

/** Runs cleanups in reverse order of registration after the test, pass or fail. */
function cleanups (t: TestContext): (fn: () => unknown) => void {
  const stack: Array<() => unknown> = []
  t.after(async () => {
    while (stack.length > 0) await stack.pop()!()
  })
  return (fn) => { stack.push(fn) }
}

/** Connects and registers the client for cleanup. */
async function connect (defer: (fn: () => unknown) => void, port: number, opts: IClientOptions): Promise<MqttClient> {
  const client = await connectDevice(port, opts)
  defer(() => client.endAsync(true))
  return client
}

/** The CONNACK refusal of a connection attempt (mqtt.js puts the return code in `code`). */
async function refusal (port: number, opts: IClientOptions): Promise<Error & { code?: number }> {
  let client: MqttClient | undefined
  try {
    client = await connectDevice(port, opts)
  } catch (err) {
    return err as Error & { code?: number }
  }
  client.end(true)
  assert.fail(`connection with ${JSON.stringify({ ...opts, password: opts.password === undefined ? undefined : '<set>' })} was accepted`)
}

async function rejectedCount (gw: TestGateway, reason: string): Promise<number> {
  const m = await gw.gateway.metrics.rejected.get()
  return m.values.find((v) => v.labels.reason === reason)?.value ?? 0
}

const eventCount = (gw: TestGateway): number => (gw.gateway.db.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n

/** The SUBACK return code granted for one filter (128 = refused). */
function subscribeGranted (client: MqttClient, filter: string): Promise<number> {
  return new Promise((resolve, reject) => {
    client.subscribe(filter, { qos: 1 }, (err, _granted, packet) => {
      const granted = (packet as { granted?: number[] } | undefined)?.granted
      if (granted && granted.length === 1) return resolve(granted[0])
      reject(err ?? new Error(`no SUBACK for ${filter}`))
    })
  })
}

test('auth: a registered device connects with its id and secret', async (t) => {
  const defer = cleanups(t)
  const gw = await startGateway()
  defer(() => gw.close())
  const secret = gw.gateway.registry.add('dev-1')
  assert.match(secret, /^[A-Za-z0-9_-]{16,}$/)
  const client = await connect(defer, gw.ports.mqtt, { clientId: 'dev-1', username: 'dev-1', password: secret })
  await client.publishAsync(telemetryTopic('dev-1'), JSON.stringify({ t: 21.5 }), { qos: 1 })
  assert.equal(eventCount(gw), 1)
})

test('auth: a wrong password is refused with CONNACK 4, an unknown device with 5', async (t) => {
  const defer = cleanups(t)
  const gw = await startGateway()
  defer(() => gw.close())
  const secret = gw.gateway.registry.add('dev-1')
  const wrong = await refusal(gw.ports.mqtt, { username: 'dev-1', password: secret.slice(0, -1) + (secret.endsWith('A') ? 'B' : 'A') })
  assert.equal(wrong.code, 4, `bad credentials: ${wrong.message}`)
  const empty = await refusal(gw.ports.mqtt, { username: 'dev-1', password: '' })
  assert.equal(empty.code, 4, `empty password: ${empty.message}`)
  const unknown = await refusal(gw.ports.mqtt, { username: 'dev-nobody', password: secret })
  assert.equal(unknown.code, 5, `unknown device: ${unknown.message}`)
  assert.equal(await rejectedCount(gw, 'bad_credentials'), 2)
  assert.equal(await rejectedCount(gw, 'unknown_device'), 1)
})

test('auth: a disabled device is refused and accepted again once enabled', async (t) => {
  const defer = cleanups(t)
  const gw = await startGateway()
  defer(() => gw.close())
  const secret = gw.gateway.registry.add('dev-1')
  gw.gateway.registry.setDisabled('dev-1', true)
  const refused = await refusal(gw.ports.mqtt, { username: 'dev-1', password: secret })
  assert.equal(refused.code, 5, refused.message)
  assert.equal(await rejectedCount(gw, 'disabled_device'), 1)
  gw.gateway.registry.setDisabled('dev-1', false)
  await connect(defer, gw.ports.mqtt, { username: 'dev-1', password: secret })
})

test('auth: after rotation the old secret is refused and the new one works', async (t) => {
  const defer = cleanups(t)
  const gw = await startGateway()
  defer(() => gw.close())
  const oldSecret = gw.gateway.registry.add('dev-1')
  await (await connectDevice(gw.ports.mqtt, { username: 'dev-1', password: oldSecret })).endAsync()
  const newSecret = gw.gateway.registry.rotate('dev-1')
  assert.notEqual(newSecret, oldSecret)
  const refused = await refusal(gw.ports.mqtt, { username: 'dev-1', password: oldSecret })
  assert.equal(refused.code, 4, refused.message)
  await connect(defer, gw.ports.mqtt, { username: 'dev-1', password: newSecret })
})

test('auth: a client without credentials is refused unless mqtt.allowAnonymous is true', async (t) => {
  const defer = cleanups(t)
  const strict = await startGateway()
  defer(() => strict.close())
  const refused = await refusal(strict.ports.mqtt, { clientId: 'dev-anon' })
  assert.equal(refused.code, 5, refused.message)
  assert.equal(await rejectedCount(strict, 'no_credentials'), 1)

  const open = await startGateway({ mqtt: { allowAnonymous: true } })
  defer(() => open.close())
  // Anonymous: the client id is the device id, and the ACL still applies to it.
  const client = await connect(defer, open.ports.mqtt, { clientId: 'dev-anon' })
  await client.publishAsync(telemetryTopic('dev-anon'), JSON.stringify({ t: 1 }), { qos: 1 })
  assert.equal(eventCount(open), 1)
})

test('acl: a device cannot publish into another device\'s telemetry topic', async (t) => {
  const defer = cleanups(t)
  const gw = await startGateway()
  defer(() => gw.close())
  const s1 = gw.gateway.registry.add('dev-1')
  gw.gateway.registry.add('dev-2')
  const intruder = await connect(defer, gw.ports.mqtt, { username: 'dev-1', password: s1 })
  // One own event first, so that the count below shows that nothing else arrived.
  await intruder.publishAsync(telemetryTopic('dev-1'), JSON.stringify({ t: 1 }), { qos: 1 })
  const before = eventCount(gw)
  let acked = false
  let closed = false
  intruder.once('close', () => { closed = true })
  // MQTT 3.1.1 has no per-message refusal: no PUBACK, the connection is closed.
  intruder.publish(telemetryTopic('dev-2'), JSON.stringify({ t: 99 }), { qos: 1 }, (err) => { if (!err) acked = true })
  await waitFor(() => closed || acked, 'the connection to close (or a PUBACK)')
  assert.equal(acked, false, 'the forbidden publish was acknowledged')
  assert.equal(await rejectedCount(gw, 'topic_not_allowed'), 1)
  // Give the gateway a chance to (wrongly) commit it before looking.
  await waitFor(() => gw.gateway.outbox.stats().pending === 0, 'outbox queue to drain')
  assert.equal(eventCount(gw), before)
  assert.equal(gw.gateway.outbox.lastSeqOf('dev-2'), 0)
  const dlq = gw.gateway.db.prepare('SELECT count(*) AS n FROM dead_letters').get() as { n: number }
  assert.equal(dlq.n, 0)
})

test('acl: a device cannot publish into its own command topic (only the gateway sends commands)', async (t) => {
  const defer = cleanups(t)
  const gw = await startGateway()
  defer(() => gw.close())
  const s1 = gw.gateway.registry.add('dev-1')
  const client = await connect(defer, gw.ports.mqtt, { username: 'dev-1', password: s1 })
  let closed = false
  client.once('close', () => { closed = true })
  client.publish('devices/dev-1/commands', 'spoofed command', { qos: 0 })
  await waitFor(() => closed, 'the connection to close')
  assert.equal(await rejectedCount(gw, 'topic_not_allowed'), 1)
})

test('acl: subscribing to another device\'s commands gets SUBACK 128; its own command topic is granted', async (t) => {
  const defer = cleanups(t)
  const gw = await startGateway()
  defer(() => gw.close())
  const s1 = gw.gateway.registry.add('dev-1')
  gw.gateway.registry.add('dev-2')
  const client = await connect(defer, gw.ports.mqtt, { username: 'dev-1', password: s1 })
  assert.equal(await subscribeGranted(client, commandTopic('dev-2')), 128)
  assert.equal(await subscribeGranted(client, 'devices/+/commands'), 128)
  assert.equal(await subscribeGranted(client, '#'), 128)
  assert.equal(await rejectedCount(gw, 'subscribe_not_allowed'), 3)
  // The connection stays up and its own command topic is granted (at the QoS asked for).
  assert.equal(client.connected, true)
  assert.equal(await subscribeGranted(client, commandTopic('dev-1')), 1)
  // And it really receives its commands there.
  const got = new Promise<string>((resolve) => client.once('message', (topic, payload) => resolve(`${topic} ${payload.toString()}`)))
  await gw.gateway.broker.publishCommand('dev-1', Buffer.from('open-valve'), { id: 'c-1', expiresAtMs: Date.now() + 60000 })
  assert.equal(await got, `${commandTopic('dev-1')} open-valve`)
})

test('auth: secrets are stored only as salted hashes, never in clear', async (t) => {
  const defer = cleanups(t)
  const gw = await startGateway()
  defer(() => gw.close())
  const secrets = [gw.gateway.registry.add('dev-1'), gw.gateway.registry.add('dev-2')]
  secrets.push(gw.gateway.registry.rotate('dev-2'))
  const rows = gw.gateway.db.prepare('SELECT * FROM devices').all() as Array<Record<string, unknown>>
  assert.equal(rows.length, 2)
  for (const row of rows) {
    for (const [column, value] of Object.entries(row)) {
      const text = Buffer.isBuffer(value) ? value.toString('latin1') : String(value)
      for (const s of secrets) {
        assert.ok(!text.includes(s), `devices.${column} holds a secret in clear`)
        if (Buffer.isBuffer(value)) assert.ok(!value.includes(Buffer.from(s, 'base64url')), `devices.${column} holds a secret's raw bytes`)
      }
    }
  }
  // Nowhere in the database files either (main file and WAL).
  gw.gateway.db.pragma('wal_checkpoint(FULL)')
  for (const file of ['gateway.db', 'gateway.db-wal']) {
    const path = join(gw.dataDir, file)
    if (!existsSync(path)) continue
    const bytes = readFileSync(path)
    for (const s of secrets) assert.ok(!bytes.includes(Buffer.from(s)), `${file} contains a secret in clear`)
  }
})

test('auth: secrets and passwords never appear in the gateway logs, even at trace level', async (t) => {
  const defer = cleanups(t)
  const tmp = tempDir()
  defer(() => tmp.cleanup())
  // Provision before start, as an operator would with the devices CLI.
  const db = openDb(tmp.dir)
  const registry = new DeviceRegistry(db)
  const secret = registry.add('dev-1')
  const rotatedAway = registry.add('dev-2')
  const secret2 = registry.rotate('dev-2')
  db.close()
  const wrongPassword = 'Wr0ngPassw0rd-' + secret.slice(0, 8)

  // The real process with its real root logger (gateway/log.ts), every log line captured.
  const gw = await spawnGateway(tmp.dir, [], { logLevel: 'trace', keepOutput: 'all' })
  defer(async () => { await gw.kill('SIGKILL') })
  const { child, exited } = gw
  const port = gw.ports.mqtt

  const client = await connectDevice(port, { username: 'dev-1', password: secret })
  await client.publishAsync(telemetryTopic('dev-1'), JSON.stringify({ t: 1 }), { qos: 1 })
  // Bad input is logged too, so include a publish whose payload is quarantined.
  await client.publishAsync(telemetryTopic('dev-1'), '{"t":', { qos: 1 })
  await client.endAsync()
  assert.equal((await refusal(port, { username: 'dev-1', password: wrongPassword })).code, 4)
  assert.equal((await refusal(port, { username: 'dev-2', password: rotatedAway })).code, 4)
  await (await connectDevice(port, { username: 'dev-2', password: secret2 })).endAsync()
  assert.equal((await refusal(port, { username: 'dev-nobody', password: secret })).code, 5)
  const c2 = await connectDevice(port, { username: 'dev-2', password: secret2 })
  let closed = false
  c2.once('close', () => { closed = true })
  c2.publish(telemetryTopic('dev-1'), 'x', { qos: 0 })
  await waitFor(() => closed, 'the connection to close')
  c2.end(true)

  child.kill('SIGTERM')
  assert.equal(await exited, 0, gw.stderr())
  const logs = gw.stderr()
  // The logs were really captured: the refusals are there.
  assert.match(logs, /connection refused/)
  assert.match(logs, /bad_credentials/)
  assert.match(logs, /gateway closed/)
  for (const [what, s] of [['secret', secret], ['rotated-away secret', rotatedAway], ['rotated secret', secret2], ['wrong password', wrongPassword]]) {
    assert.ok(!logs.includes(s), `the ${what} appears in the gateway logs`)
  }
})
