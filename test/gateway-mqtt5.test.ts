// MQTT 5 devices (issue: MQTT 5 on aedes 2): every refusal answered with its reason code, counted in
// gateway_rejected_total{reason}, and, for a refused publish, the connection kept. Real gateway on a
// real socket, mqtt.js speaking MQTT 5, the real SQLite outbox; the third-party client (Debian's
// mosquitto-clients) is in gateway-mqtt5-mosquitto.test.ts.
import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { commandTopic, telemetryTopic } from '../proto/topics.ts'
import { connectDevice, startGateway, waitFor, type TestGateway } from '../devkit/index.ts'
import type { GatewayConfigInput } from '../gateway/config.ts'
import { v1 } from '../proto/index.ts'

const V5 = { protocolVersion: 5 as const }

function cleanups (t: TestContext): (fn: () => unknown) => void {
  const stack: Array<() => unknown> = []
  t.after(async () => { while (stack.length > 0) await stack.pop()!() })
  return (fn) => { stack.push(fn) }
}

async function gateway (defer: (fn: () => unknown) => void, cfg: GatewayConfigInput = {}): Promise<TestGateway> {
  const gw = await startGateway(cfg)
  defer(() => gw.close())
  return gw
}

/** Registers `id` and connects it over MQTT 5 with its own credentials and client id. */
async function device (defer: (fn: () => unknown) => void, gw: TestGateway, id: string, opts: IClientOptions = {}): Promise<MqttClient> {
  const secret = gw.gateway.registry.add(id)
  const client = await connectDevice(gw.ports.mqtt, { ...V5, username: id, password: secret, ...opts })
  defer(() => client.endAsync(true))
  return client
}

async function rejected (gw: TestGateway): Promise<Record<string, number>> {
  return Object.fromEntries((await gw.gateway.metrics.rejected.get()).values.filter((v) => v.value > 0).map((v) => [String(v.labels.reason), v.value]))
}

/** The reason code of a QoS 1 publish's PUBACK (0 when accepted). */
function pubackCode (client: MqttClient, topic: string, payload: string | Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    client.publish(topic, payload, { qos: 1 }, (err, packet) => {
      const code = (err as { code?: number } | undefined)?.code ?? (packet as { reasonCode?: number } | undefined)?.reasonCode ?? 0
      if (err && typeof (err as { code?: unknown }).code !== 'number') return reject(err)
      resolve(code)
    })
  })
}

/** The reason code of the server's DISCONNECT, once the client has been disconnected. */
function disconnectCode (client: MqttClient): Promise<number> {
  return new Promise((resolve) => client.once('disconnect', (packet) => resolve(packet.reasonCode ?? 0)))
}

/** The CONNACK reason code a connection attempt gets (0 when accepted). */
async function connackCode (port: number, opts: IClientOptions): Promise<number> {
  try {
    const c = await connectDevice(port, { ...V5, ...opts })
    await c.endAsync(true)
    return 0
  } catch (err) {
    const code = (err as { code?: unknown }).code
    if (typeof code !== 'number') throw err
    return code
  }
}

const stored = (gw: TestGateway, deviceId: string): number => (gw.gateway.db.prepare('SELECT count(*) AS n FROM events e JOIN device_seq d ON d.num = e.dev WHERE d.device_id = ?').get(deviceId) as { n: number }).n

test('mqtt5: a device connects, CONNACK announces the limits, readings are accepted with PUBACK 0x00 and stored', async (t) => {
  const defer = cleanups(t)
  const gw = await gateway(defer, { mqtt: { maxPacketBytes: 8192, receiveMaximum: 20, topicAliasMaximum: 4 } })
  const secret = gw.gateway.registry.add('v5-a')
  const connack = await new Promise<{ properties?: Record<string, unknown> }>((resolve, reject) => {
    const c = mqtt.connect(`mqtt://127.0.0.1:${gw.ports.mqtt}`, { ...V5, clientId: 'v5-a', username: 'v5-a', password: secret, reconnectPeriod: 0 })
    defer(() => c.endAsync(true))
    c.once('connect', (p) => resolve(p as { properties?: Record<string, unknown> }))
    c.once('error', reject)
  })
  assert.equal(connack.properties?.maximumPacketSize, 8192)
  assert.equal(connack.properties?.receiveMaximum, 20)
  assert.equal(connack.properties?.topicAliasMaximum, 4)
  const client = await device(defer, gw, 'v5-b')
  for (let i = 1; i <= 5; i++) assert.equal(await pubackCode(client, telemetryTopic('v5-b'), JSON.stringify({ temperature: i })), 0)
  assert.equal(stored(gw, 'v5-b'), 5)
  // A topic alias: the first publish names the topic, the next ones only the alias.
  await new Promise<void>((resolve, reject) => client.publish(telemetryTopic('v5-b'), JSON.stringify({ temperature: 6 }), { qos: 1, properties: { topicAlias: 1 } }, (err) => err ? reject(err) : resolve()))
  await new Promise<void>((resolve, reject) => client.publish('', JSON.stringify({ temperature: 7 }), { qos: 1, properties: { topicAlias: 1 } }, (err) => err ? reject(err) : resolve()))
  assert.equal(stored(gw, 'v5-b'), 7)
})

test('mqtt5: a refused publish gets its reason code and the connection stays up: 0x87 outside its topics, 0x90 unknown topic, 0x99 quarantined (dead letter durable first)', async (t) => {
  const defer = cleanups(t)
  const gw = await gateway(defer)
  const client = await device(defer, gw, 'v5-c')
  assert.equal(await pubackCode(client, telemetryTopic('someone-else'), JSON.stringify({ temperature: 1 })), 0x87)
  assert.equal(await pubackCode(client, commandTopic('v5-c'), JSON.stringify({ temperature: 1 })), 0x87)
  assert.equal(await pubackCode(client, 'devices/v5-c/telemetri', JSON.stringify({ temperature: 1 })), 0x90)
  assert.equal(await pubackCode(client, telemetryTopic('v5-c'), '{"temperature": 2'), 0x99)
  // The dead letter was committed before the PUBACK.
  const dead = gw.gateway.db.prepare('SELECT device_id, reason FROM dead_letters').all() as Array<{ device_id: string, reason: string }>
  assert.deepEqual(dead, [{ device_id: 'v5-c', reason: 'malformed_json' }])
  assert.equal(client.connected, true)
  assert.equal(await pubackCode(client, telemetryTopic('v5-c'), JSON.stringify({ temperature: 2 })), 0)
  assert.equal(stored(gw, 'v5-c'), 1)
  assert.deepEqual(await rejected(gw), { topic_not_allowed: 2, topic_invalid: 1, malformed_json: 1 })
})

test('mqtt5: at the disk budget with reject-new the PUBACK says 0x97 (quota exceeded), nothing is stored, the connection stays up', async (t) => {
  const defer = cleanups(t)
  const gw = await gateway(defer, { outbox: { budgetBytes: 2000, overflow: 'reject-new' } })
  const client = await device(defer, gw, 'v5-full')
  const codes: number[] = []
  for (let i = 0; i < 60 && !codes.includes(0x97); i++) codes.push(await pubackCode(client, telemetryTopic('v5-full'), JSON.stringify({ temperature: i, humidity: 40 + i, pressure: 1000 + i })))
  assert.equal(codes.at(-1), 0x97, `codes: ${codes.join(',')}`)
  assert.ok(codes.slice(0, -1).every((c) => c === 0))
  assert.equal(stored(gw, 'v5-full'), codes.length - 1)
  assert.equal(client.connected, true)
  assert.equal((await rejected(gw)).outbox_full, 1)
})

test('mqtt5: SUBSCRIBE outside its topics gets SUBACK 0x87 per filter, counted per filter, one log line per packet; its own command topic is granted', async (t) => {
  const defer = cleanups(t)
  const gw = await gateway(defer)
  const client = await device(defer, gw, 'v5-s')
  // mqtt.js rejects a SUBSCRIBE with any refused filter, and hands over the SUBACK.
  const suback = await client.subscribeAsync([commandTopic('v5-s'), commandTopic('other'), 'devices/#', '$SYS/#'], { qos: 1 }).then(() => null, (err: { packet?: { granted: number[] } }) => err.packet)
  assert.deepEqual(suback?.granted, [1, 0x87, 0x87, 0x87])
  assert.equal((await rejected(gw)).subscribe_not_allowed, 3)
  assert.equal(client.connected, true)
})

test('mqtt5: CONNACK reason codes: 0x86 bad password, 0x87 unknown or disabled device, 0x85 a client id not bound to the device or too long, 0x97 over the per-device and the gateway connection caps', async (t) => {
  const defer = cleanups(t)
  const gw = await gateway(defer, { mqtt: { clientIdPattern: '{device}-*', maxConnections: 3, maxClientIdBytes: 40 } })
  const port = gw.ports.mqtt
  const secret = gw.gateway.registry.add('v5-d')
  const other = gw.gateway.registry.add('v5-e')
  assert.equal(await connackCode(port, { clientId: 'v5-d-1', username: 'v5-d', password: secret + 'x' }), 0x86)
  assert.equal(await connackCode(port, { clientId: 'v5-nobody-1', username: 'v5-nobody', password: secret }), 0x87)
  gw.gateway.registry.setDisabled('v5-e', true)
  assert.equal(await connackCode(port, { clientId: 'v5-e-1', username: 'v5-e', password: other }), 0x87)
  gw.gateway.registry.setDisabled('v5-e', false)
  // Device v5-e, with its own valid credentials, may not take v5-d's client ids.
  assert.equal(await connackCode(port, { clientId: 'v5-d-1', username: 'v5-e', password: other }), 0x85)
  assert.equal(await connackCode(port, { clientId: 'v5-d', username: 'v5-d', password: secret }), 0x85, 'the pattern {device}-* needs the dash')
  assert.equal(await connackCode(port, { clientId: 'v5-d-' + 'x'.repeat(40), username: 'v5-d', password: secret }), 0x85)
  // One connection per device (default): a second client id of the same device is over quota...
  const a = await connectDevice(port, { ...V5, clientId: 'v5-d-1', username: 'v5-d', password: secret })
  defer(() => a.endAsync(true))
  assert.equal(await connackCode(port, { clientId: 'v5-d-2', username: 'v5-d', password: secret }), 0x97)
  assert.equal(a.connected, true)
  // ...and at the gateway's cap (3) a new device is refused 0x97 too.
  const b = await connectDevice(port, { ...V5, clientId: 'v5-e-1', username: 'v5-e', password: other })
  defer(() => b.endAsync(true))
  const s3 = gw.gateway.registry.add('v5-f')
  const c = await connectDevice(port, { ...V5, clientId: 'v5-f-1', username: 'v5-f', password: s3 })
  defer(() => c.endAsync(true))
  const s4 = gw.gateway.registry.add('v5-g')
  assert.equal(await connackCode(port, { clientId: 'v5-g-1', username: 'v5-g', password: s4 }), 0x97)
  assert.deepEqual(await rejected(gw), { bad_credentials: 1, unknown_device: 1, disabled_device: 1, client_id_not_bound: 2, client_id_too_long: 1, device_connection_limit: 1, too_many_connections: 1 })
})

test('mqtt5: a reconnect with the same client id takes the session over (the old connection gets DISCONNECT 0x8E); it is not a second connection', async (t) => {
  const defer = cleanups(t)
  const gw = await gateway(defer)
  const secret = gw.gateway.registry.add('v5-t')
  const old = await connectDevice(gw.ports.mqtt, { ...V5, username: 'v5-t', password: secret })
  defer(() => old.endAsync(true))
  const kicked = disconnectCode(old)
  const fresh = await connectDevice(gw.ports.mqtt, { ...V5, username: 'v5-t', password: secret })
  defer(() => fresh.endAsync(true))
  assert.equal(await kicked, 0x8E)
  assert.equal(await pubackCode(fresh, telemetryTopic('v5-t'), JSON.stringify({ temperature: 1 })), 0)
  assert.deepEqual(await rejected(gw), {})
})

test('mqtt5: DISCONNECT reason codes: 0x93 above the Receive Maximum, 0x95 a packet over mqtt.maxPacketBytes; other devices carry on', async (t) => {
  const defer = cleanups(t)
  const gw = await gateway(defer, { mqtt: { receiveMaximum: 3, maxPacketBytes: 2048 } })
  const bystander = await device(defer, gw, 'v5-ok')

  // Ten QoS 1 publishes written at once: more unacknowledged than the 3 announced.
  const greedy = await device(defer, gw, 'v5-greedy')
  const greedyGone = disconnectCode(greedy)
  for (let i = 0; i < 10; i++) greedy.publish(telemetryTopic('v5-greedy'), JSON.stringify({ temperature: i }), { qos: 1 }, () => {})
  assert.equal(await greedyGone, 0x93)

  const big = await device(defer, gw, 'v5-big')
  const bigGone = disconnectCode(big)
  big.publish(telemetryTopic('v5-big'), Buffer.alloc(8192, 0x20), { qos: 1 }, () => {})
  assert.equal(await bigGone, 0x95)

  await waitFor(() => !greedy.connected && !big.connected, 'both disconnected')
  assert.equal(await pubackCode(bystander, telemetryTopic('v5-ok'), JSON.stringify({ temperature: 1 })), 0)
  const r = await rejected(gw)
  assert.deepEqual({ receive: r.receive_maximum_exceeded, big: r.packet_too_large }, { receive: 1, big: 1 })
  // What was accepted before the breach is stored; nothing past it.
  assert.ok(stored(gw, 'v5-greedy') <= 3)
})

test('mqtt5: a device far above its publish rate gets DISCONNECT 0x96; the first, within its burst, was stored', async (t) => {
  const defer = cleanups(t)
  const gw = await gateway(defer, { mqtt: { ratePerDevice: 1, burstPerDevice: 1, maxThrottleMs: 0 } })
  const fast = await device(defer, gw, 'v5-fast')
  assert.equal(await pubackCode(fast, telemetryTopic('v5-fast'), JSON.stringify({ temperature: 1 })), 0)
  const fastGone = disconnectCode(fast)
  fast.publish(telemetryTopic('v5-fast'), JSON.stringify({ temperature: 2 }), { qos: 1 }, () => {})
  assert.equal(await fastGone, 0x96)
  assert.equal(stored(gw, 'v5-fast'), 1)
  assert.equal((await rejected(gw)).rate_limited, 1)
})

async function commandCount (gw: TestGateway, status: string): Promise<number> {
  return (await gw.gateway.metrics.commands.get()).values.find((v) => v.labels.status === status)?.value ?? 0
}

test('mqtt5: a command is a request (Response Topic = its ack topic, Correlation Data = its id, Message Expiry = its lifetime); the device answers with the correlation data alone; 3.1.1 JSON acks still work', async (t) => {
  const defer = cleanups(t)
  const gw = await gateway(defer)
  const client = await device(defer, gw, 'v5-act')
  await client.subscribeAsync(commandTopic('v5-act'), { qos: 1 })
  const got = new Promise<{ payload: Buffer, properties: Record<string, unknown> }>((resolve) => client.once('message', (_topic, payload, packet) => resolve({ payload, properties: (packet.properties ?? {}) as Record<string, unknown> })))
  const id = gw.gateway.commands.send({ deviceId: 'v5-act', name: 'open', args: { pct: 40 }, ttlMs: 30_000, origin: { source: 'rule' } })
  const msg = await got
  assert.equal(msg.properties.responseTopic, 'devices/v5-act/commands/ack')
  assert.equal(Buffer.from(msg.properties.correlationData as Uint8Array).toString(), id)
  const expiry = msg.properties.messageExpiryInterval as number
  assert.ok(expiry >= 29 && expiry <= 30, `message expiry ${expiry} s for a 30 s command`)
  assert.deepEqual(JSON.parse(msg.payload.toString()), { id, name: 'open', args: { pct: 40 }, expiresAtMs: JSON.parse(msg.payload.toString()).expiresAtMs })
  // The answer names the command by its correlation data only: no payload.
  await client.publishAsync(msg.properties.responseTopic as string, Buffer.alloc(0), { qos: 1, properties: { correlationData: msg.properties.correlationData as Buffer } })
  await waitFor(async () => await commandCount(gw, 'acknowledged') === 1, 'the command acknowledged')
  // A 3.1.1 device gets the same message without properties and answers with the JSON id.
  const secret = gw.gateway.registry.add('v3-act')
  const old = await connectDevice(gw.ports.mqtt, { username: 'v3-act', password: secret })
  defer(() => old.endAsync(true))
  await old.subscribeAsync(commandTopic('v3-act'), { qos: 1 })
  const got3 = new Promise<{ payload: Buffer, properties: unknown }>((resolve) => old.once('message', (_topic, payload, packet) => resolve({ payload, properties: packet.properties })))
  const id3 = gw.gateway.commands.send({ deviceId: 'v3-act', name: 'close', origin: { source: 'rule' } })
  const msg3 = await got3
  assert.equal(msg3.properties, undefined)
  await old.publishAsync('devices/v3-act/commands/ack', JSON.stringify({ id: id3, status: 'ok' }), { qos: 1 })
  await waitFor(async () => await commandCount(gw, 'acknowledged') === 2, 'the 3.1.1 command acknowledged')
})

test('mqtt5: a command that expires while its device is offline is never delivered; the one after it is', async (t) => {
  const defer = cleanups(t)
  const gw = await gateway(defer, { commands: { ackTimeoutMs: 5000 } })
  const session = { clean: false, clientId: 'v5-sleep', properties: { sessionExpiryInterval: 600 } }
  const first = await device(defer, gw, 'v5-sleep', session)
  await first.subscribeAsync(commandTopic('v5-sleep'), { qos: 1 })
  await first.endAsync()
  // Queued for the offline session: one that lives 1 s, one that lives a minute.
  const short = gw.gateway.commands.send({ deviceId: 'v5-sleep', name: 'short', ttlMs: 1000, origin: { source: 'rule' } })
  await waitFor(async () => await commandCount(gw, 'expired') === 1, 'the short command expired at the gateway')
  // Sent after the short one has expired (aedes keeps a session's queue in order).
  const long = gw.gateway.commands.send({ deviceId: 'v5-sleep', name: 'long', ttlMs: 60_000, origin: { source: 'rule' } })
  const secret = gw.gateway.registry.rotate('v5-sleep')
  const received: string[] = []
  const again = mqtt.connect(`mqtt://127.0.0.1:${gw.ports.mqtt}`, { ...V5, ...session, username: 'v5-sleep', password: secret, reconnectPeriod: 0 })
  defer(() => again.endAsync(true))
  again.on('message', (_topic, payload) => received.push((JSON.parse(payload.toString()) as { id: string }).id))
  await waitFor(() => received.includes(long), 'the long command delivered')
  assert.deepEqual(received, [long], `the expired command ${short} must not be delivered`)
})

test('mqtt5: user properties of a reading are stored with it, bounded (mqtt.maxUserProperties, key and value sizes); what does not fit is counted, the reading is kept', async (t) => {
  const defer = cleanups(t)
  const gw = await gateway(defer, { mqtt: { maxUserProperties: 2 } })
  const client = await device(defer, gw, 'v5-up')
  const userProperties = { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', site: 'hall-3', third: 'over the count', ['k'.repeat(65)]: 'key too long' }
  assert.equal(await new Promise<number>((resolve, reject) => client.publish(telemetryTopic('v5-up'), JSON.stringify({ temperature: 5 }), { qos: 1, properties: { userProperties } }, (err) => err ? reject(err) : resolve(0))), 0)
  const row = gw.gateway.db.prepare('SELECT e.body FROM events e JOIN device_seq d ON d.num = e.dev WHERE d.device_id = ?').get('v5-up') as { body: Buffer }
  const ev = v1.TelemetryEvent.decode(row.body)
  assert.deepEqual({ ...ev.userProperties }, { traceparent: userProperties.traceparent, site: 'hall-3' })
  assert.equal((await rejected(gw)).user_property_dropped, 2)
})
