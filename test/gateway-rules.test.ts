import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { jetstream } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { connect } from '@nats-io/transport-node'
import { connectDevice, startGateway, tempDir, type TestGateway, startNats, waitFor, provision } from '../devkit/index.ts'
import { actuator, coolerRules } from './harness/actuator.ts'
import { loadDevice } from './harness/load.ts'
import { readOutbox } from './harness/outbox-reader.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }



const controlEvents = (gw: TestGateway): Array<{ kind: string, status: string, alertId: string, ruleId: string, commandId: string }> =>
  readOutbox(gw.dataDir).filter((e) => e.control).map((e) => ({ kind: e.control!.kind, status: e.control!.commandStatus, alertId: e.control!.alertId, ruleId: e.control!.ruleId, commandId: e.control!.commandId }))

test('rules: a threshold rule commands a real actuator, which acknowledges; decision, alert and command outcome are recorded', async (t) => {
  const dir = tempDir()
  t.after(() => dir.cleanup())
  const file = join(dir.dir, 'rules.yaml')
  writeFileSync(file, coolerRules('v1', 8))
  const gw = await startGateway({ mqtt: ANON, rules: { file } })
  t.after(() => gw.close())
  const cooler = await actuator(gw.ports.mqtt, 'cooler-1')
  const room = await connectDevice(gw.ports.mqtt, { clientId: 'room-1' })
  t.after(() => { cooler.client.end(true); room.end(true) })
  await room.publishAsync('devices/room-1/telemetry', JSON.stringify({ temperature: 7 }), { qos: 1 })
  await room.publishAsync('devices/room-1/telemetry', JSON.stringify({ temperature: 9.5 }), { qos: 1 })
  await waitFor(() => cooler.received.length === 1, 'the cooler to receive its command')
  assert.deepEqual([cooler.received[0].name, cooler.received[0].args], ['cooler', { on: true }])
  await waitFor(() => controlEvents(gw).some((e) => e.status === 'acknowledged'), 'the acknowledgement to be recorded')
  // Flapping around the threshold inside the hysteresis band: no second command.
  for (const v of [8.5, 9.1, 8.2, 9.3]) await room.publishAsync('devices/room-1/telemetry', JSON.stringify({ temperature: v }), { qos: 1 })
  await room.publishAsync('devices/room-1/telemetry', JSON.stringify({ temperature: 6.5 }), { qos: 1 })
  await waitFor(() => cooler.received.length === 2, 'the cooler-off command')
  assert.deepEqual(cooler.received[1].args, { on: false })
  await waitFor(() => controlEvents(gw).filter((e) => e.status === 'acknowledged').length === 2, 'both acknowledgements')
  const kinds = controlEvents(gw).map((e) => `${e.kind}${e.status ? ':' + e.status : ''}${e.alertId ? ':' + e.alertId : ''}`)
  for (const k of ['decision', 'alert_raised:cold-room-warm', 'alert_cleared:cold-room-warm', 'command_result:sent', 'command_result:delivered', 'command_result:acknowledged']) {
    assert.ok(kinds.includes(k), `missing ${k} in ${kinds.join(', ')}`)
  }
  assert.equal(kinds.filter((k) => k === 'decision').length, 2, 'one decision to fire, one to clear')
  assert.equal(gw.gateway.status().ruleSetVersion, 'v1')
  const latency = await gw.gateway.metrics.decisionSeconds.get()
  assert.equal(latency.values.find((v) => v.metricName === 'gateway_decision_seconds_count')?.value, 2)
})

test('rules: decisions keep happening while the uplink is down', async (t) => {
  const nats = await startNats()
  t.after(() => nats.cleanup())
  await nats.stop()
  const dir = tempDir()
  t.after(() => dir.cleanup())
  writeFileSync(join(dir.dir, 'rules.yaml'), coolerRules('v1', 8))
  const gw = await startGateway({ mqtt: ANON, rules: { file: join(dir.dir, 'rules.yaml') }, uplink: { servers: [nats.url], reconnectMinMs: 50, reconnectMaxMs: 200 } })
  t.after(() => gw.close())
  const cooler = await actuator(gw.ports.mqtt, 'cooler-1')
  const room = await connectDevice(gw.ports.mqtt, { clientId: 'room-1' })
  t.after(() => { cooler.client.end(true); room.end(true) })
  await room.publishAsync('devices/room-1/telemetry', JSON.stringify({ temperature: 12 }), { qos: 1 })
  await waitFor(() => cooler.received.length === 1, 'the command while the cloud is unreachable')
  assert.notEqual(gw.gateway.uplink.state, 'up')
})

test('rules: hot reload of the rules file under load loses nothing; a bad file keeps the running rules', async (t) => {
  const dir = tempDir()
  t.after(() => dir.cleanup())
  const file = join(dir.dir, 'rules.yaml')
  writeFileSync(file, coolerRules('v1', 8))
  const gw = await startGateway({ mqtt: ANON, rules: { file, watchMs: 50 } })
  t.after(() => gw.close())
  const acked = new Set<number>()
  const c = await connectDevice(gw.ports.mqtt, { clientId: 'room-1' })
  t.after(() => c.end(true))
  const load = loadDevice(c, 'room-1', { n: 0 }, acked, { window: 20 })
  await waitFor(() => acked.size > 500, 'load to flow')
  writeFileSync(file, coolerRules('v2', 30))
  await waitFor(() => gw.gateway.control.version === 'v2', 'the new rule set to be running')
  writeFileSync(file, 'version: v3\nrules:\n  - id: broken\n    when: { reading: temperature, above: "hot" }\n    then: []\n')
  await waitFor(async () => (await gw.gateway.metrics.rulesReloads.get()).values.find((v) => v.labels.result === 'invalid')?.value, 'the bad file to be refused')
  assert.equal(gw.gateway.control.version, 'v2', 'a bad file leaves the running rules in place')
  const before = acked.size
  await waitFor(() => acked.size > before + 500, 'load to keep flowing')
  load.stop()
  await c.endAsync()
  const events = readOutbox(gw.dataDir).filter((e) => e.deviceId === 'room-1')
  const ns = new Set(events.map((e) => e.readings.n))
  for (const n of acked) assert.ok(ns.has(n), `acknowledged message ${n} lost across reloads`)
  assert.deepEqual(events.map((e) => e.seq), Array.from({ length: events.length }, (_, i) => i + 1))
})

test('rules: a command never acknowledged is re-sent with the same id, then recorded as timed out', async (t) => {
  const dir = tempDir()
  t.after(() => dir.cleanup())
  writeFileSync(join(dir.dir, 'rules.yaml'), coolerRules('v1', 8))
  const gw = await startGateway({ mqtt: ANON, rules: { file: join(dir.dir, 'rules.yaml') }, commands: { ackTimeoutMs: 150, maxAttempts: 3 } })
  t.after(() => gw.close())
  const cooler = await actuator(gw.ports.mqtt, 'cooler-1', { ack: false })
  const room = await connectDevice(gw.ports.mqtt, { clientId: 'room-1' })
  t.after(() => { cooler.client.end(true); room.end(true) })
  await room.publishAsync('devices/room-1/telemetry', JSON.stringify({ temperature: 10 }), { qos: 1 })
  await waitFor(() => controlEvents(gw).some((e) => e.status === 'timed_out'), 'the time-out to be recorded')
  assert.equal(cooler.received.length, 3)
  assert.equal(new Set(cooler.received.map((c) => c.id)).size, 1, 'retries carry the same command id')
})

test('cloud channel: a pushed rule set is applied and reported; commands queued while offline arrive after reconnect, expired ones do not', async (t) => {
  const nats = await startNats()
  t.after(() => nats.cleanup())
  await provision(nats.url)
  const nc = await connect({ servers: nats.url })
  t.after(() => nc.close())
  const kv = await new Kvm(nc).open('RULES')
  await kv.put('gw-test', coolerRules('cloud-7', 8))
  // Queued while the gateway is not running at all.
  const js = jetstream(nc)
  await js.publish('iot.gw-test.commands', JSON.stringify({ id: 'cmd-live', deviceId: 'cooler-1', name: 'defrost', args: { minutes: 5 }, expiresAtMs: Date.now() + 60000 }))
  await js.publish('iot.gw-test.commands', JSON.stringify({ id: 'cmd-old', deviceId: 'cooler-1', name: 'defrost', expiresAtMs: Date.now() - 1000 }))
  const gw = await startGateway({ mqtt: ANON, uplink: { servers: [nats.url], heartbeatMs: 200 }, commands: { ackTimeoutMs: 200, maxAttempts: 20 } })
  t.after(() => gw.close())
  const cooler = await actuator(gw.ports.mqtt, 'cooler-1')
  t.after(() => cooler.client.end(true))
  await waitFor(() => gw.gateway.control.version === 'cloud-7', 'the pushed rule set to be applied')
  await waitFor(() => cooler.received.some((c) => c.id === 'cmd-live'), 'the queued command to reach the device')
  // Control events leave the outbox once replicated, so the metric is the witness here.
  await waitFor(async () => (await gw.gateway.metrics.commands.get()).values.find((v) => v.labels.status === 'expired')?.value === 1, 'the expired command to be recorded')
  assert.ok(!cooler.received.some((c) => c.id === 'cmd-old'), 'an expired command is never sent')
  // The heartbeat carries the version the gateway runs.
  const beat = await new Promise<string>((resolve) => {
    const sub = nc.subscribe('iot.gw-test.status', { callback: (_e, m) => { sub.unsubscribe(); resolve(JSON.stringify(m.data.length)) } })
  })
  assert.ok(Number(beat) > 0)
  assert.equal(gw.gateway.status().ruleSetVersion, 'cloud-7')
  // A bad rule set pushed later is refused and the running one stays.
  await kv.put('gw-test', 'version: bad\nrules: [ { id: x } ]')
  await waitFor(async () => (await gw.gateway.metrics.rulesReloads.get()).values.find((v) => v.labels.source === 'cloud' && v.labels.result === 'invalid')?.value, 'the bad rule set to be refused')
  assert.equal(gw.gateway.control.version, 'cloud-7')
})
