// Promises 5 and 6: bad input gets a clear answer (quarantined with its reason, counted) and costs
// nothing else; per-device payload, packet-size and rate limits protect the gateway from one device.
// Real gateway in-process, real MQTT clients, the real SQLite outbox.
import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import type { IClientOptions, MqttClient } from 'mqtt'
import { telemetryTopic } from '../gateway/index.ts'
import { v1 } from '../proto/index.ts'
import { connectDevice, startGateway, type TestGateway, waitFor } from '../devkit/index.ts'

/** Runs cleanups in reverse order of registration after the test, pass or fail. */
function cleanups (t: TestContext): (fn: () => unknown) => void {
  const stack: Array<() => unknown> = []
  t.after(async () => {
    while (stack.length > 0) await stack.pop()!()
  })
  return (fn) => { stack.push(fn) }
}

/** Registers a device on the gateway and connects it with its secret. */
async function device (defer: (fn: () => unknown) => void, gw: TestGateway, id: string, opts: IClientOptions = {}): Promise<MqttClient> {
  const secret = gw.gateway.registry.add(id)
  const client = await connectDevice(gw.ports.mqtt, { clientId: id, username: id, password: secret, ...opts })
  defer(() => client.endAsync(true))
  return client
}

async function counterByReason (gw: TestGateway, which: 'rejected' | 'quarantined'): Promise<Record<string, number>> {
  const m = await gw.gateway.metrics[which].get()
  return Object.fromEntries(m.values.map((v) => [String(v.labels.reason), v.value]))
}

async function counterValue (gw: TestGateway, which: 'throttled' | 'ingested'): Promise<number> {
  return (await gw.gateway.metrics[which].get()).values[0]?.value ?? 0
}

interface StoredEvent { deviceId: string, seq: number, eventTsMs: number, ingestTsMs: number, eventTsFromGateway: boolean, readings: Array<{ name: string, value: number }>, labels: Record<string, string> }

/** Every event of one device in the outbox, in ingest order, decoded. */
function eventsOf (gw: TestGateway, deviceId: string): StoredEvent[] {
  // A row names its device by number (gateway/store/stored-event.ts); its body has no device_id.
  const rows = gw.gateway.db.prepare('SELECT d.device_id, e.body FROM events e JOIN device_seq d ON d.num = e.dev WHERE d.device_id = ? ORDER BY e.id').all(deviceId) as Array<{ device_id: string, body: Buffer }>
  return rows.map((r) => ({ id: r.device_id, e: v1.TelemetryEvent.decode(r.body) })).map(({ id, e }) => ({
    deviceId: id,
    seq: Number(e.seq),
    eventTsMs: Number(e.eventTsMs),
    ingestTsMs: Number(e.ingestTsMs),
    eventTsFromGateway: e.eventTsFromGateway,
    readings: e.readings.map((x) => ({ name: x.name ?? '', value: x.value ?? 0 })),
    labels: { ...e.labels },
  }))
}

interface DeadLetterRow { id: number, device_id: string | null, topic: string, reason: string, detail: string, payload_bytes: number, payload: Buffer }

const deadLetters = (gw: TestGateway): DeadLetterRow[] => gw.gateway.db.prepare('SELECT * FROM dead_letters ORDER BY id').all() as DeadLetterRow[]

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1)

/** A device that publishes steadily at QoS 1 (next publish once the last is acknowledged) until stopped. */
function steadyPublisher (client: MqttClient, deviceId: string): { stop: () => Promise<number> } {
  let stopped = false
  let acked = 0
  const loop = (async () => {
    while (!stopped) {
      await client.publishAsync(telemetryTopic(deviceId), JSON.stringify({ n: acked }), { qos: 1 })
      acked++
    }
    return acked
  })()
  // A failed publish fails the test through stop(); do not let it surface as an unhandled rejection first.
  loop.catch(() => {})
  return { stop: async () => { stopped = true; return loop } }
}

const DEAD_LETTER_COPY = 16
const MAX_PAYLOAD = 512

// One payload per class of bad input, with the reason it must be quarantined under.
const BAD_INPUTS: Array<{ what: string, reason: string, payload: Buffer }> = [
  { what: 'malformed JSON', reason: 'malformed_json', payload: Buffer.from('{"temperature": 21.5, "humidity": ') },
  { what: 'malformed protobuf bytes', reason: 'malformed_protobuf', payload: Buffer.from([0x12, 0x10, 0x0a, 0x01, 0x74]) },
  { what: 'a payload over mqtt.maxPayloadBytes', reason: 'payload_too_large', payload: Buffer.from(JSON.stringify({ t: 1, pad: 'x'.repeat(MAX_PAYLOAD) })) },
  { what: 'a JSON number that overflows to Infinity', reason: 'non_finite_value', payload: Buffer.from('{"t": 1e999}') },
  { what: 'a non-numeric field', reason: 'unknown_field', payload: Buffer.from('{"t":"hot"}') },
  { what: 'an unsupported schema version', reason: 'unsupported_schema', payload: Buffer.from('{"schema":2,"t":1}') },
  { what: 'no readings', reason: 'no_readings', payload: Buffer.from('{}') },
  { what: 'a protobuf DeviceReport with a NaN value', reason: 'non_finite_value', payload: Buffer.from(v1.DeviceReport.encode({ readings: [{ name: 't', value: Number.NaN }] }).finish()) },
]

test('bad input: every class is acknowledged, quarantined with its reason and counted, and a steady device is unaffected', async (t) => {
  const defer = cleanups(t)
  const gw = await startGateway({ mqtt: { maxPayloadBytes: MAX_PAYLOAD }, outbox: { deadLetterPayloadBytes: DEAD_LETTER_COPY } })
  defer(() => gw.close())
  const good = await device(defer, gw, 'dev-good')
  const bad = await device(defer, gw, 'dev-bad')
  let badClosed = false
  bad.on('close', () => { badClosed = true })

  const steady = steadyPublisher(good, 'dev-good')
  // Each bad publish is answered (PUBACK): the device must not keep resending it.
  for (const input of BAD_INPUTS) {
    await assert.doesNotReject(bad.publishAsync(telemetryTopic('dev-bad'), input.payload, { qos: 1 }), `no PUBACK for ${input.what}`)
  }
  // And a second round sent all at once, interleaved with the steady device's traffic.
  await Promise.all(BAD_INPUTS.map((input) => bad.publishAsync(telemetryTopic('dev-bad'), input.payload, { qos: 1 })))
  // Let the steady device go on for a little after the bad input stopped.
  const goal = (await counterValue(gw, 'ingested')) + 20
  await waitFor(async () => (await counterValue(gw, 'ingested')) >= goal, 'the steady device to keep publishing')
  const n = await steady.stop()
  assert.equal(badClosed, false, 'bad payloads must not cost the device its connection')

  // Quarantined: one row per bad publish, with its reason and a bounded copy of the payload.
  const rows = deadLetters(gw)
  const expected = [...BAD_INPUTS, ...BAD_INPUTS]
  assert.equal(rows.length, expected.length)
  for (const input of BAD_INPUTS) {
    const mine = rows.filter((r) => r.payload_bytes === input.payload.length && r.payload.equals(input.payload.subarray(0, DEAD_LETTER_COPY)))
    assert.equal(mine.length, 2, `dead letters for ${input.what}`)
    for (const row of mine) {
      assert.equal(row.reason, input.reason, input.what)
      assert.equal(row.device_id, 'dev-bad')
      assert.equal(row.topic, telemetryTopic('dev-bad'))
      assert.ok(row.payload.length <= DEAD_LETTER_COPY, `payload copy of ${input.what} is ${row.payload.length} bytes`)
      assert.ok(row.detail.length > 0 && row.detail.length <= 500, `detail of ${input.what}: ${row.detail}`)
    }
  }

  // Counted by reason, in both the rejected and the dead-letter counters.
  const want: Record<string, number> = {}
  for (const input of expected) want[input.reason] = (want[input.reason] ?? 0) + 1
  assert.deepEqual(await counterByReason(gw, 'rejected'), want)
  assert.deepEqual(await counterByReason(gw, 'quarantined'), want)
  const metricsText = await gw.gateway.metrics.registry.getSingleMetricAsString('gateway_rejected_total')
  assert.match(metricsText, /gateway_rejected_total\{reason="malformed_json"\} 2/)

  // No event for the bad device, no sequence number spent on it.
  assert.deepEqual(eventsOf(gw, 'dev-bad'), [])
  assert.equal(gw.gateway.outbox.lastSeqOf('dev-bad'), 0)

  // Every publish of the steady device was acknowledged and is in the outbox, seqs 1..N, in order.
  assert.ok(n >= 20, `steady device published only ${n}`)
  const evs = eventsOf(gw, 'dev-good')
  assert.deepEqual(evs.map((e) => e.seq), range(n))
  assert.deepEqual(evs.map((e) => e.readings), range(n).map((i) => [{ name: 'n', value: i - 1 }]))
})

test('bad input: a protobuf report with fields unknown to iot.v1.DeviceReport is quarantined as unknown_field', async (t) => {
  const defer = cleanups(t)
  const gw = await startGateway()
  defer(() => gw.close())
  const client = await device(defer, gw, 'dev-1')
  const valid = Buffer.from(v1.DeviceReport.encode({ schema: 1, readings: [{ name: 't', value: 1 }] }).finish())
  // Field 9 (varint 1) exists in no version of DeviceReport; field 3 inside a Reading neither.
  const topLevel = Buffer.concat([valid, Buffer.from([0x48, 0x01])])
  const reading = Buffer.from(v1.Reading.encode({ name: 't', value: 1 }).finish())
  const readingWithUnknown = Buffer.concat([reading, Buffer.from([0x18, 0x01])])
  const nested = Buffer.concat([Buffer.from([0x12, readingWithUnknown.length]), readingWithUnknown])
  await client.publishAsync(telemetryTopic('dev-1'), topLevel, { qos: 1 })
  await client.publishAsync(telemetryTopic('dev-1'), nested, { qos: 1 })
  assert.deepEqual(eventsOf(gw, 'dev-1'), [], 'a report with unknown fields was accepted as an event')
  assert.deepEqual(deadLetters(gw).map((r) => r.reason), ['unknown_field', 'unknown_field'])
  assert.equal((await counterByReason(gw, 'rejected')).unknown_field, 2)
})

test('ingest: a valid protobuf DeviceReport is accepted and normalised like JSON', async (t) => {
  const defer = cleanups(t)
  const gw = await startGateway()
  defer(() => gw.close())
  const client = await device(defer, gw, 'dev-1')
  const tsMs = Date.now() - 60_000
  const readings = [{ name: 'temperature', value: 21.5 }, { name: 'humidity', value: 40.25 }]
  const report = v1.DeviceReport.encode({ tsMs, readings, labels: { room: 'a1' }, schema: 1 }).finish()
  const before = Date.now()
  await client.publishAsync(telemetryTopic('dev-1'), Buffer.from(report), { qos: 1 })
  // Without a device time (ts 0 = unknown) the gateway's ingest time is used, and flagged.
  await client.publishAsync(telemetryTopic('dev-1'), Buffer.from(v1.DeviceReport.encode({ readings: [{ name: 'temperature', value: -3 }] }).finish()), { qos: 1 })
  // The same report as JSON normalises to the same readings.
  await client.publishAsync(telemetryTopic('dev-1'), JSON.stringify({ ts: tsMs, temperature: 21.5, humidity: 40.25, labels: { room: 'a1' } }), { qos: 1 })
  const after = Date.now()

  const [fromProto, noTime, fromJson] = eventsOf(gw, 'dev-1')
  assert.deepEqual(deadLetters(gw), [])
  assert.equal(fromProto.seq, 1)
  assert.equal(fromProto.eventTsMs, tsMs)
  assert.equal(fromProto.eventTsFromGateway, false)
  assert.ok(fromProto.ingestTsMs >= before && fromProto.ingestTsMs <= after, 'ingest time is the gateway clock')
  assert.deepEqual(fromProto.readings, readings)
  assert.deepEqual(fromProto.labels, { room: 'a1' })

  assert.equal(noTime.seq, 2)
  assert.equal(noTime.eventTsFromGateway, true)
  assert.equal(noTime.eventTsMs, noTime.ingestTsMs)
  assert.deepEqual(noTime.readings, [{ name: 'temperature', value: -3 }])

  assert.equal(fromJson.seq, 3)
  assert.deepEqual({ ...fromJson, seq: 0, ingestTsMs: 0 }, { ...fromProto, seq: 0, ingestTsMs: 0 })
})

test('limits: an MQTT packet over mqtt.maxPacketBytes closes that connection only', async (t) => {
  const defer = cleanups(t)
  const maxPacketBytes = 1024
  const gw = await startGateway({ mqtt: { maxPacketBytes } })
  defer(() => gw.close())
  const other = await device(defer, gw, 'dev-other')
  const big = await device(defer, gw, 'dev-big')
  let otherClosed = false
  other.on('close', () => { otherClosed = true })
  let bigClosed = false
  let bigAcked = false
  big.on('close', () => { bigClosed = true })
  await big.publishAsync(telemetryTopic('dev-big'), JSON.stringify({ t: 1 }), { qos: 1 })

  const steady = steadyPublisher(other, 'dev-other')
  big.publish(telemetryTopic('dev-big'), Buffer.alloc(4 * maxPacketBytes, 0x20), { qos: 1 }, (err) => { if (!err) bigAcked = true })
  await waitFor(() => bigClosed || bigAcked, 'the oversized packet\'s connection to close')
  assert.equal(bigAcked, false, 'the oversized packet was acknowledged')
  const goal = (await counterValue(gw, 'ingested')) + 20
  await waitFor(async () => (await counterValue(gw, 'ingested')) >= goal, 'the other device to keep publishing')
  const n = await steady.stop()

  assert.equal((await counterByReason(gw, 'rejected')).packet_too_large, 1)
  assert.equal(otherClosed, false)
  assert.deepEqual(eventsOf(gw, 'dev-big').map((e) => e.seq), [1])
  assert.deepEqual(deadLetters(gw), [])
  assert.deepEqual(eventsOf(gw, 'dev-other').map((e) => e.seq), range(n))
  // A packet just under the limit is still fine (the limit is not off by a lot).
  const again = await device(defer, gw, 'dev-big2')
  const nearLimit = JSON.stringify({ t: 1, labels: { a: 'x'.repeat(256), b: 'y'.repeat(256), c: 'z'.repeat(256) } })
  assert.ok(nearLimit.length > maxPacketBytes - 250 && nearLimit.length < maxPacketBytes - 50)
  await again.publishAsync(telemetryTopic('dev-big2'), nearLimit, { qos: 1 })
  assert.equal(eventsOf(gw, 'dev-big2').length, 1, JSON.stringify(deadLetters(gw).map((r) => [r.reason, r.detail])))
})

test('limits: a device above mqtt.ratePerDevice is throttled, and all its publishes still succeed in order', async (t) => {
  const defer = cleanups(t)
  const ratePerDevice = 100
  const burstPerDevice = 10
  const gw = await startGateway({ mqtt: { ratePerDevice, burstPerDevice, maxThrottleMs: 5000 } })
  defer(() => gw.close())
  const fast = await device(defer, gw, 'dev-fast')
  const other = await device(defer, gw, 'dev-other')
  const total = 60
  const started = performance.now()
  const steady = steadyPublisher(other, 'dev-other')
  await Promise.all(range(total).map((i) => fast.publishAsync(telemetryTopic('dev-fast'), JSON.stringify({ i }), { qos: 1 })))
  const elapsed = performance.now() - started
  const n = await steady.stop()

  assert.ok(await counterValue(gw, 'throttled') > 0, 'no publish was throttled')
  // 50 publishes beyond the burst at 100/s cannot all be acknowledged in much less than 0.5 s.
  assert.ok(elapsed >= ((total - burstPerDevice) * 1000) / ratePerDevice - 100, `throttled publishes finished in ${elapsed.toFixed(0)} ms`)
  assert.equal(fast.connected, true)
  assert.equal((await counterByReason(gw, 'rejected')).rate_limited, undefined)
  const evs = eventsOf(gw, 'dev-fast')
  assert.deepEqual(evs.map((e) => e.seq), range(total))
  assert.deepEqual(evs.map((e) => e.readings[0].value), range(total))
  // The other device was never throttled: it is under its own rate and its events are all there.
  assert.deepEqual(eventsOf(gw, 'dev-other').map((e) => e.seq), range(n))
})

test('limits: a device far above its rate (delay beyond mqtt.maxThrottleMs) is disconnected and counted as rate_limited', async (t) => {
  const defer = cleanups(t)
  const gw = await startGateway({ mqtt: { ratePerDevice: 10, burstPerDevice: 2, maxThrottleMs: 200 } })
  defer(() => gw.close())
  const flood = await device(defer, gw, 'dev-flood')
  const other = await device(defer, gw, 'dev-other')
  let floodClosed = false
  flood.on('close', () => { floodClosed = true })
  let otherClosed = false
  other.on('close', () => { otherClosed = true })
  // At 10/s a fifth publish at once would wait 300 ms (> 200 ms): refused and disconnected.
  for (let i = 0; i < 20; i++) flood.publish(telemetryTopic('dev-flood'), JSON.stringify({ i }), { qos: 1 }, () => {})
  await waitFor(() => floodClosed, 'the flooding device to be disconnected')
  assert.ok(((await counterByReason(gw, 'rejected')).rate_limited ?? 0) >= 1, 'rate_limited not counted')

  // Others are unaffected: still connected, publishing and acknowledged.
  await other.publishAsync(telemetryTopic('dev-other'), JSON.stringify({ t: 1 }), { qos: 1 })
  assert.equal(otherClosed, false)
  assert.deepEqual(eventsOf(gw, 'dev-other').map((e) => e.seq), [1])
  // What the flooding device got stored is contiguous from 1 (a refusal never spends a sequence number).
  await waitFor(() => gw.gateway.outbox.stats().pending === 0, 'the outbox queue to drain')
  const seqs = eventsOf(gw, 'dev-flood').map((e) => e.seq)
  assert.deepEqual(seqs, range(seqs.length))
  assert.ok(seqs.length < 20, `all ${seqs.length} publishes of the flooding device were stored`)
})
