// Bad MQTT on the wire, byte by byte (a raw socket and mqtt-packet, since a well-behaved client will
// not send it): each refusal gets aedes' answer, is counted in gateway_rejected_total{reason}, and
// touches no other device.
import assert from 'node:assert/strict'
import { connect as tcpConnect, type Socket } from 'node:net'
import { test, type TestContext } from 'node:test'
import mqttPacket, { type Packet } from 'mqtt-packet'
import { connectDevice, startGateway, waitFor, type TestGateway } from '../devkit/index.ts'
import { commandTopic, telemetryTopic } from '../proto/topics.ts'

interface Wire { sock: Socket, packets: Packet[], closed: Promise<void> }

/** A raw connection that parses what the gateway sends back (as MQTT `version`). */
async function wire (t: TestContext, port: number, version: 3 | 4 | 5): Promise<Wire> {
  const sock = tcpConnect(port, '127.0.0.1')
  t.after(() => { sock.destroy() })
  await new Promise<void>((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject) })
  const parser = mqttPacket.parser({ protocolVersion: version })
  const packets: Packet[] = []
  parser.on('packet', (p) => packets.push(p))
  sock.on('data', (d) => parser.parse(d))
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()))
  return { sock, packets, closed }
}

const send = (w: Wire, p: Packet, version: 3 | 4 | 5): void => { w.sock.write(mqttPacket.generate(p, { protocolVersion: version })) }

async function rejected (gw: TestGateway): Promise<Record<string, number>> {
  return Object.fromEntries((await gw.gateway.metrics.rejected.get()).values.filter((v) => v.value > 0).map((v) => [String(v.labels.reason), v.value]))
}

async function anonGateway (t: TestContext): Promise<TestGateway> {
  const gw = await startGateway({ mqtt: { allowAnonymous: true } })
  t.after(() => gw.close())
  return gw
}

test('protocol: refused CONNECTs of any protocol version are counted: an unknown level is closed unparsed, an MQTT 3.1 client id over 23 characters gets CONNACK 2', async (t) => {
  const gw = await anonGateway(t)
  const w = await wire(t, gw.ports.mqtt, 4)
  // CONNECT, protocol name MQTT, level 6, clean session, keep-alive 60, client id "p-6".
  const body = Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x06, 0x02, 0x00, 0x3c, 0x00, 0x03, 0x70, 0x2d, 0x36])
  w.sock.write(Buffer.concat([Buffer.from([0x10, body.length]), body]))
  await w.closed
  assert.deepEqual(w.packets, [], 'mqtt-packet refuses the level before aedes sees a CONNECT')
  const old = await wire(t, gw.ports.mqtt, 4)
  send(old, { cmd: 'connect', protocolId: 'MQIsdp', protocolVersion: 3, clean: true, keepalive: 60, clientId: 'p-' + 'x'.repeat(30) }, 3)
  await old.closed
  assert.deepEqual(old.packets.map((p) => [p.cmd, (p as { returnCode?: number }).returnCode]), [['connack', 2]])
  assert.deepEqual(await rejected(gw), { malformed_packet: 1, bad_client_id: 1 })
})

test('protocol: an MQTT 5 publish with topic alias 0, or an alias never set, gets DISCONNECT 0x94; a packet that does not parse gets DISCONNECT 0x81; each is counted and closes only its own connection', async (t) => {
  const gw = await anonGateway(t)
  const bystander = await connectDevice(gw.ports.mqtt, { clientId: 'p-ok', protocolVersion: 5 })
  t.after(() => bystander.endAsync(true))
  for (const [clientId, topic, alias] of [['p-zero', telemetryTopic('p-zero'), 0], ['p-unset', '', 7]] as const) {
    const w = await wire(t, gw.ports.mqtt, 5)
    send(w, { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 60, clientId }, 5)
    await waitFor(() => w.packets.some((p) => p.cmd === 'connack'), 'CONNACK')
    send(w, { cmd: 'publish', topic, payload: Buffer.from('{"temperature":1}'), qos: 1, messageId: 1, retain: false, dup: false, properties: { topicAlias: alias } }, 5)
    await w.closed
    const disconnect = w.packets.find((p) => p.cmd === 'disconnect') as { reasonCode?: number } | undefined
    assert.equal(disconnect?.reasonCode, 0x94, `${clientId}: ${JSON.stringify(w.packets.map((p) => p.cmd))}`)
  }
  // Packets that do not parse: the reserved type 0, and a PUBLISH with an unknown property (0x7f).
  // The device is told why (DISCONNECT 0x81 with the parser's reason), and only it is closed.
  const topic = Buffer.from(telemetryTopic('p-prop'))
  const badProperty = Buffer.concat([Buffer.from([0x30, 2 + topic.length + 3]), Buffer.from([0, topic.length]), topic, Buffer.from([2, 0x7f, 0])])
  for (const [clientId, bytes] of [['p-junk', Buffer.from([0x00, 0x00])], ['p-prop', badProperty]] as const) {
    const w = await wire(t, gw.ports.mqtt, 5)
    send(w, { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 60, clientId }, 5)
    await waitFor(() => w.packets.some((p) => p.cmd === 'connack'), 'CONNACK')
    w.sock.write(bytes)
    await w.closed
    const disconnect = w.packets.find((p) => p.cmd === 'disconnect') as { reasonCode?: number, properties?: { reasonString?: string } } | undefined
    assert.equal(disconnect?.reasonCode, 0x81, `${clientId}: ${JSON.stringify(w.packets.map((p) => p.cmd))}`)
    assert.match(disconnect?.properties?.reasonString ?? '', /^malformed packet: /)
  }
  await bystander.publishAsync(telemetryTopic('p-ok'), JSON.stringify({ temperature: 2 }), { qos: 1 })
  assert.equal(bystander.connected, true)
  assert.deepEqual(await rejected(gw), { topic_alias_invalid: 2, malformed_packet: 2 })
})

test('protocol: server keep-alive: an MQTT 5 device asking for none is told mqtt.maxKeepAliveSeconds in CONNACK and, silent, is disconnected and counted; a 3.1.1 device asking for none is accepted and kept', async (t) => {
  const gw = await startGateway({ mqtt: { allowAnonymous: true, maxKeepAliveSeconds: 1 } })
  t.after(() => gw.close())
  const v4 = await wire(t, gw.ports.mqtt, 4)
  send(v4, { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: 'ka-v4' }, 4)
  const v5 = await wire(t, gw.ports.mqtt, 5)
  send(v5, { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: 'ka-v5' }, 5)
  const polite = await wire(t, gw.ports.mqtt, 5)
  send(polite, { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 1, clientId: 'ka-polite' }, 5)
  await waitFor(() => [v4, v5, polite].every((w) => w.packets.some((p) => p.cmd === 'connack')), 'three CONNACKs')
  const connack = (w: Wire): { returnCode?: number, reasonCode?: number, properties?: { serverKeepAlive?: number } } => w.packets.find((p) => p.cmd === 'connack') as never
  assert.equal(connack(v4).returnCode, 0, 'a 3.1.1 device is not refused for its keep-alive')
  assert.equal(connack(v5).reasonCode, 0)
  assert.equal(connack(v5).properties?.serverKeepAlive, 1, 'Server Keep Alive imposed on a device asking for none')
  assert.equal(connack(polite).properties?.serverKeepAlive, undefined, 'a keep-alive within the limit is the device\'s own')
  // The polite device pings on time; the silent MQTT 5 one is closed after 1.5 x 1 s.
  const ping = setInterval(() => send(polite, { cmd: 'pingreq' }, 5), 400)
  t.after(() => clearInterval(ping))
  await v5.closed
  assert.equal(v4.sock.destroyed, false, 'the 3.1.1 device with no keep-alive is still connected')
  assert.equal(polite.sock.destroyed, false, 'a device that pings is still connected')
  assert.ok(polite.packets.some((p) => p.cmd === 'pingresp'))
  assert.equal((await gw.gateway.metrics.keepaliveTimeouts.get()).values[0]?.value, 1)
  assert.deepEqual(await rejected(gw), {}, 'a keep-alive timeout is not a refusal')
})

test('protocol: a connection that ends without DISCONNECT, whichever way, is released: the broker counts it gone and the device id connects again as a new session', async (t) => {
  const gw = await anonGateway(t)
  const connections = async (): Promise<number> => (await gw.gateway.metrics.connections.get()).values[0]?.value ?? 0
  // The patched aedes ends a client on its socket's 'end' or 'close' (not stream.finished()): each
  // way a device can vanish must still reach it.
  const ends: Record<string, (sock: Socket) => void> = {
    'half-close': (sock) => { sock.end() },
    reset: (sock) => { sock.resetAndDestroy() },
    destroy: (sock) => { sock.destroy() },
    'mid-packet': (sock) => { sock.end(Buffer.from([0x30, 0x40, 0x00, 0x05])) },
  }
  const wires: Array<[Wire, (sock: Socket) => void]> = []
  for (const [how, end] of Object.entries(ends)) {
    const w = await wire(t, gw.ports.mqtt, 4)
    send(w, { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 60, clientId: `end-${how}` }, 4)
    send(w, { cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: commandTopic(`end-${how}`), qos: 1 }] }, 4)
    await waitFor(() => w.packets.some((p) => p.cmd === 'suback'), `${how}: SUBACK`)
    wires.push([w, end])
  }
  assert.equal(await connections(), wires.length)
  for (const [w, end] of wires) end(w.sock)
  await waitFor(async () => await connections() === 0, 'the broker to release every ended connection')
  for (const how of Object.keys(ends)) {
    const w = await wire(t, gw.ports.mqtt, 4)
    send(w, { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, keepalive: 60, clientId: `end-${how}` }, 4)
    await waitFor(() => w.packets.some((p) => p.cmd === 'connack'), `${how}: CONNACK again`)
    assert.deepEqual(w.packets.map((p) => [p.cmd, (p as { returnCode?: number }).returnCode, (p as { sessionPresent?: boolean }).sessionPresent]), [['connack', 0, false]], `${how}: the clean session ended with its connection`)
  }
  assert.equal(await connections(), Object.keys(ends).length)
})
