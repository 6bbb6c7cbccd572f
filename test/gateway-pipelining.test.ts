// Control never waits for the disk on one connection either (issue: control never waits): a device's
// next publish is read, decoded and evaluated by the rules while its earlier QoS 1 publish waits for
// its commit's fsync, and the PUBACKs still leave in order, each after its own commit. The fsync is
// injected and held: a behaviour test, no timing.
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { writeFileSync } from 'node:fs'
import { test } from 'node:test'
import { connectDevice, startGateway, tempDir, waitFor } from '../devkit/index.ts'
import { telemetryTopic } from '../proto/topics.ts'
import { actuator, coolerRules } from './harness/actuator.ts'
import { heldFsync } from './harness/held-fsync.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }

for (const protocolVersion of [4, 5] as const) {
  test(`pipelining (MQTT ${protocolVersion === 4 ? '3.1.1' : '5'}): a later publish drives a command while earlier ones wait for their fsync; the PUBACKs then leave in order`, async (t) => {
    const dir = tempDir()
    t.after(() => dir.cleanup())
    const file = join(dir.dir, 'rules.yaml')
    writeFileSync(file, coolerRules('v1', 8))
    const sync = heldFsync()
    const gw = await startGateway({ mqtt: ANON, rules: { file } }, { fsync: sync.fsync })
    t.after(() => gw.close())
    const cooler = await actuator(gw.ports.mqtt, 'cooler-1')
    const room = await connectDevice(gw.ports.mqtt, { clientId: 'room-1', protocolVersion })
    t.after(() => { cooler.client.end(true); room.end(true) })

    sync.hold(true)
    const acked: number[] = []
    const publish = (n: number, temperature: number): void => { room.publish(telemetryTopic('room-1'), JSON.stringify({ temperature, n }), { qos: 1 }, (err) => { if (!err) acked.push(n) }) }
    // Two readings in one write: aedes reads them as one batch, and (unpatched) reads nothing more
    // of the connection until the batch is answered, that is until their fsync.
    room.stream.cork()
    publish(1, 7)
    publish(2, 7.5)
    process.nextTick(() => room.stream.uncork())
    await waitFor(() => sync.waiting() > 0, 'the first readings to wait for their fsync')
    publish(3, 9.5)
    // The third was read and evaluated regardless: the cooler gets its command.
    await waitFor(() => cooler.received.length === 1, 'the command of the third publish, while the first two wait for their fsync')
    assert.deepEqual(cooler.received[0].args, { on: true })
    assert.deepEqual(acked, [], 'a PUBACK left before its fsync')

    sync.hold(false)
    await waitFor(() => acked.length === 3, 'the three PUBACKs')
    assert.deepEqual(acked, [1, 2, 3])
  })
}

test('pipelining: PUBACKs leave in publish order even when a later publish is decided first (an MQTT 5 refusal behind a reading waiting for its fsync)', async (t) => {
  const sync = heldFsync()
  const gw = await startGateway({ mqtt: ANON }, { fsync: sync.fsync })
  t.after(() => gw.close())
  const dev = await connectDevice(gw.ports.mqtt, { clientId: 'dev-o', protocolVersion: 5 })
  t.after(() => dev.end(true))
  sync.hold(true)
  const order: string[] = []
  dev.publish(telemetryTopic('dev-o'), JSON.stringify({ temperature: 1 }), { qos: 1 }, (err) => order.push(err ? 'reading refused' : 'reading'))
  await waitFor(() => sync.waiting() > 0, 'the reading to wait for its fsync')
  // Refused at once (another device's topic), yet answered only after the reading before it.
  dev.publish(telemetryTopic('dev-x'), JSON.stringify({ temperature: 1 }), { qos: 1 }, (err) => order.push(err ? `refused ${(err as { code?: number }).code}` : 'accepted'))
  // The refusal is decided (counted) while the reading still waits.
  await waitFor(async () => ((await gw.gateway.metrics.rejected.get()).values.find((v) => v.labels.reason === 'topic_not_allowed')?.value ?? 0) === 1, 'the refusal to be decided')
  assert.deepEqual(order, [])
  sync.hold(false)
  await waitFor(() => order.length === 2, 'both answers')
  assert.deepEqual(order, ['reading', 'refused 135'])
})
