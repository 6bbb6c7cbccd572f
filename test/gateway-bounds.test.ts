// Every queue is bounded and names its overflow policy (STYLE habit 6): what happens at each bound,
// checked by identity. The commit queue (outbox.maxPendingEvents), the connection cap
// (mqtt.maxConnections), the pending commands (commands.maxPending), and the log line that shedding
// under the disk budget must leave. Real gateway, real MQTT clients, real SQLite file.
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { connectDevice, scrapeMetric, spawnGateway, startGateway, tempDir, waitFor, type TestGateway } from '../devkit/index.ts'
import { commandAckTopic, telemetryTopic } from '../proto/topics.ts'
import { actuator, coolerRules } from './harness/actuator.ts'
import { deferrer } from './harness/cloud.ts'
import { queryOutbox, readOutbox } from './harness/outbox-reader.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** gateway_rejected_total by reason (only the reasons counted at least once). */
async function rejectedByReason (gw: TestGateway): Promise<Record<string, number>> {
  return Object.fromEntries((await gw.gateway.metrics.rejected.get()).values.filter((v) => v.value > 0).map((v) => [v.labels.reason, v.value]))
}

test('bounds: a burst beyond outbox.maxPendingEvents: the first publish over the cap is refused (connection closed, no PUBACK), counted as outbox_busy and never stored; what was queued is stored once and its resend recognised', async (t) => {
  const defer = deferrer(t)
  const maxPendingEvents = 5
  const gw = await startGateway({ mqtt: ANON, outbox: { maxPendingEvents } })
  defer(() => gw.close())
  const deviceId = 'burst'
  const client = await connectDevice(gw.ports.mqtt, { clientId: deviceId })
  defer(() => client.end(true))
  let closed = false
  client.once('close', () => { closed = true })
  const N = 40
  const ts0 = Date.now()
  // Stamped readings: a resend of one is recognised (and acknowledged, not stored again).
  const payload = (n: number): string => JSON.stringify({ ts: ts0 + n, n, temperature: 20 })
  const acked = new Set<number>()
  // One write: the gateway parses the whole burst in one go, so all of it reaches the commit queue
  // before the first commit (which waits for the next turns of the event loop).
  client.stream.cork()
  for (let n = 1; n <= N; n++) client.publish(telemetryTopic(deviceId), payload(n), { qos: 1 }, (err) => { if (!err) acked.add(n) })
  process.nextTick(() => client.stream.uncork())
  await waitFor(() => closed || acked.size > 0, 'the connection to close (or a PUBACK)')
  await waitFor(() => gw.gateway.outbox.stats().pending === 0 && gw.gateway.outbox.stats().events > 0, 'the queued publishes to be committed')

  // MQTT 3.1.1 has no refusal for one publish: the gateway closes the connection at the first one
  // over the cap (aedes then reads nothing more of it). Nothing was acknowledged, the queued five
  // were committed anyway (their PUBACKs had no connection left), the refused one is counted.
  assert.equal(closed, true, 'the connection stayed open')
  assert.equal(acked.size, 0, 'a PUBACK reached the device')
  assert.deepEqual(readOutbox(gw.dataDir).map((e) => [e.deviceId, e.seq, e.readings.n]), range(1, maxPendingEvents).map((n) => [deviceId, n, n]))
  assert.deepEqual(await rejectedByReason(gw), { outbox_busy: 1 })
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_ingest_events_total'), maxPendingEvents)

  // The device, never acknowledged, sends all N again at its own pace: the five already stored are
  // recognised as resends, the rest stored, so each reading is in the outbox exactly once.
  const again = await connectDevice(gw.ports.mqtt, { clientId: deviceId })
  defer(() => again.end(true))
  for (let n = 1; n <= N; n++) {
    await again.publishAsync(telemetryTopic(deviceId), payload(n), { qos: 1 })
    acked.add(n)
  }
  assert.deepEqual(readOutbox(gw.dataDir).map((e) => [e.seq, e.readings.n]), range(1, N).map((n) => [n, n]))
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_resends_dropped_total'), maxPendingEvents)
  assert.deepEqual(await rejectedByReason(gw), { outbox_busy: 1 })
})

test('bounds: a connection over mqtt.maxConnections is refused (CONNACK 3, server unavailable) and counted; the connected ones carry on, and a freed slot is taken again', async (t) => {
  const defer = deferrer(t)
  const gw = await startGateway({ mqtt: { ...ANON, maxConnections: 2 } })
  defer(() => gw.close())
  const a = await connectDevice(gw.ports.mqtt, { clientId: 'cap-a' })
  defer(() => a.end(true))
  const b = await connectDevice(gw.ports.mqtt, { clientId: 'cap-b' })
  defer(() => b.end(true))
  await assert.rejects(connectDevice(gw.ports.mqtt, { clientId: 'cap-c' }), (err: { code?: number }) => err.code === 3, 'a third connection was accepted')
  assert.deepEqual(await rejectedByReason(gw), { too_many_connections: 1 })
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_connections'), 2)
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_connections_total'), 2)
  // The two inside are unaffected.
  await a.publishAsync(telemetryTopic('cap-a'), JSON.stringify({ n: 1 }), { qos: 1 })
  await b.publishAsync(telemetryTopic('cap-b'), JSON.stringify({ n: 1 }), { qos: 1 })
  assert.equal(a.connected && b.connected, true)
  // The cap counts connections, not attempts: once one leaves, the refused device gets in.
  await b.endAsync()
  await waitFor(async () => await scrapeMetric(gw.ports.http!, 'gateway_connections') === 1, 'the gateway to see cap-b leave')
  const c = await connectDevice(gw.ports.mqtt, { clientId: 'cap-c' })
  defer(() => c.end(true))
  await c.publishAsync(telemetryTopic('cap-c'), JSON.stringify({ n: 1 }), { qos: 1 })
  assert.deepEqual(readOutbox(gw.dataDir).map((e) => [e.deviceId, e.readings.n]), [['cap-a', 1], ['cap-b', 1], ['cap-c', 1]])
  assert.deepEqual(await rejectedByReason(gw), { too_many_connections: 1 })
})

test('bounds: a command beyond commands.maxPending is not sent, and is recorded and counted as rejected; the pending ones are unaffected', async (t) => {
  const defer = deferrer(t)
  const dir = tempDir()
  defer(() => dir.cleanup())
  const file = join(dir.dir, 'rules.yaml')
  writeFileSync(file, coolerRules('v1', 8))
  // The actuator never acknowledges and nothing times out during the test: commands stay pending.
  const gw = await startGateway({ mqtt: ANON, rules: { file }, commands: { maxPending: 2, ackTimeoutMs: 600_000, defaultTtlMs: 600_000 } })
  defer(() => gw.close())
  const cooler = await actuator(gw.ports.mqtt, 'cooler-1', { ack: false })
  defer(() => cooler.client.end(true))
  const room = await connectDevice(gw.ports.mqtt, { clientId: 'room-1' })
  defer(() => room.end(true))
  // Warm, cold, warm: on, off, on; the third finds two commands pending.
  for (const temperature of [9.5, 6.5, 9.5]) await room.publishAsync(telemetryTopic('room-1'), JSON.stringify({ temperature }), { qos: 1 })
  const results = (): Array<{ id: string, status: string, detail: string }> => readOutbox(gw.dataDir).filter((e) => e.control?.kind === 'command_result')
    .map((e) => ({ id: e.control!.commandId, status: e.control!.commandStatus, detail: String((JSON.parse(e.control!.detailJson || '{}') as { detail?: string }).detail ?? '') }))
  await waitFor(() => results().filter((r) => r.status === 'delivered').length === 2 && results().some((r) => r.status === 'rejected'), 'two commands delivered and the third rejected')
  const byId = new Map<string, string[]>()
  for (const r of results()) byId.set(r.id, [...(byId.get(r.id) ?? []), r.status])
  const rejected = results().filter((r) => r.status === 'rejected')
  assert.equal(rejected.length, 1)
  assert.match(rejected[0].detail, /more than 2 commands pending/)
  // By identity: the two sent are the two the actuator received; the rejected one never reached it.
  assert.deepEqual(cooler.received.map((c) => c.args), [{ on: true }, { on: false }])
  const received = cooler.received.map((c) => c.id)
  assert.deepEqual([...byId].filter(([id]) => id !== rejected[0].id).map(([id, s]) => [id, s]), received.map((id) => [id, ['sent', 'delivered']]))
  assert.deepEqual(byId.get(rejected[0].id), ['rejected'])
  assert.equal(received.includes(rejected[0].id), false)
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_commands_total', { status: 'rejected' }), 1)
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_commands_total', { status: 'sent' }), 2)
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_commands_pending'), 2)
})

// Product bug (reported, not fixed here): CommandTracker.send() checks the cap before it checks
// whether the id is already pending, so a command the cloud delivers again while the tracker is at
// commands.maxPending is recorded as rejected and its finish() deletes the *pending* entry of the
// same id: the first copy is no longer tracked, its acknowledgement counts as unknown_command_ack.
test('bounds: a command delivered again by the cloud while commands.maxPending is reached stays pending under its id', async (t) => {
  const defer = deferrer(t)
  const gw = await startGateway({ mqtt: ANON, commands: { maxPending: 1, ackTimeoutMs: 600_000, defaultTtlMs: 600_000 } })
  defer(() => gw.close())
  const cooler = await actuator(gw.ports.mqtt, 'cooler-1', { ack: false })
  defer(() => cooler.client.end(true))
  const cmd = { id: 'cloud-cmd-1', deviceId: 'cooler-1', name: 'cooler', args: { on: true } }
  gw.gateway.commands.fromCloud(cmd)
  await waitFor(() => cooler.received.length === 1, 'the actuator to receive the command')
  gw.gateway.commands.fromCloud(cmd) // the same command again (e.g. redelivered after a reconnect)
  await cooler.client.publishAsync(commandAckTopic('cooler-1'), JSON.stringify({ id: cmd.id, status: 'ok' }), { qos: 1 })
  const statuses = (): string[] => readOutbox(gw.dataDir).filter((e) => e.control?.commandId === cmd.id).map((e) => e.control!.commandStatus)
  await waitFor(() => statuses().some((s) => s === 'acknowledged' || s === 'rejected'), 'the command to finish')
  assert.deepEqual(statuses().filter((s) => s !== 'delivered'), ['sent', 'acknowledged'])
  assert.deepEqual(await rejectedByReason(gw), {})
})

test('bounds: shedding under outbox.budgetBytes is logged, and the logged counts are the events the gap records cover', { timeout: 60000 }, async (t) => {
  const defer = deferrer(t)
  const tmp = tempDir('gw-shed-log-')
  defer(() => tmp.cleanup())
  const budgetBytes = 20000
  const gw = await spawnGateway(tmp.dir, ['gatewayId=gw-shed', 'mqtt.allowAnonymous=true', 'mqtt.ratePerDevice=1000000', 'mqtt.burstPerDevice=1000000', `outbox.budgetBytes=${budgetBytes}`], { keepOutput: 'all', logLevel: 'info' })
  defer(() => gw.kill('SIGKILL'))
  const client = await connectDevice(gw.ports.mqtt, { clientId: 'dev-s' })
  defer(() => client.end(true))
  const total = 600
  for (let n = 1; n <= total; n++) await client.publishAsync(telemetryTopic('dev-s'), JSON.stringify({ n, temperature: 20.5 }), { qos: 1 })

  const gaps = queryOutbox<{ device_id: string, from_seq: number, to_seq: number, count: number, reason: string }>(tmp.dir, 'SELECT device_id, from_seq, to_seq, count, reason FROM gaps ORDER BY id')
  const shedMetric = await scrapeMetric(gw.ports.http!, 'gateway_outbox_shed_events_total')
  assert.ok(gaps.length > 0 && shedMetric > 0, 'nothing was shed: the test would prove nothing')
  // The output is pino's JSON lines (stdout and stderr together): the shedding ones, whole.
  await waitFor(() => shedLines(gw.stderr()).reduce((s, l) => s + l.shedEvents, 0) >= shedMetric, 'the shedding to be logged')
  const lines = shedLines(gw.stderr())
  for (const l of lines) {
    assert.equal(l.level, 40, 'shedding is logged as a warning')
    assert.equal(l.gatewayId, 'gw-shed')
    assert.equal(l.component, 'outbox')
    assert.equal(l.budgetBytes, budgetBytes)
  }
  // One line per shedding, each naming how many events it dropped: together exactly what the gap
  // records cover and what the metric counts.
  assert.equal(lines.reduce((s, l) => s + l.shedEvents, 0), gaps.reduce((s, g) => s + g.count, 0))
  assert.equal(lines.reduce((s, l) => s + l.shedEvents, 0), shedMetric)
  // By identity: the readings kept plus the seqs the gaps cover are 1..total, each once.
  const kept = readOutbox(tmp.dir).map((e) => e.seq)
  const covered = gaps.flatMap((g) => range(g.from_seq, g.to_seq))
  assert.deepEqual([...covered, ...kept].sort((x, y) => x - y), range(1, total))
})

interface ShedLine { level: number, gatewayId: string, component: string, shedEvents: number, budgetBytes: number }

/** The gateway's log lines about shedding. */
function shedLines (output: string): ShedLine[] {
  return output.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as ShedLine & { msg: string })
    .filter((l) => l.msg === 'outbox over budget: shed oldest events, gaps recorded')
}
