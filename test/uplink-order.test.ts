// Promise 3 (order and time) as the stream sees it. Per device, the events of one lane leave in
// ingest order; after an outage a device's live readings overtake its backlog (freshness first,
// promise 7); priority-lane records (alerts raised during the outage) go before the telemetry of the
// same time. Observed by one core NATS subscriber on the gateway's subjects, which receives the
// gateway's publishes in the order they leave it; the uplink is cut at a TCP proxy, so the
// subscriber stays connected through the outage.
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { connect } from '@nats-io/transport-node'
import type { MqttClient } from 'mqtt'
import { v1 } from '../proto/index.ts'
import { telemetryTopic } from '../proto/topics.ts'
import { connectDevice, provision, startGateway, startNats, startProxy, tempDir, waitFor } from '../devkit/index.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }
const DEVICES = ['dev-1', 'dev-2']
const RULES = `
version: order-v1
rules:
  - id: hot
    when: { reading: temperature, above: 50 }
    then: [{ raiseAlert: { id: hot, severity: warning, message: "above 50" } }]
    else: [{ clearAlert: { id: hot } }]
`

/** One message as it left the gateway: its place in the arrival order and what it carried. */
interface Arrival { index: number, lane: 'priority' | 'telemetry', events: Array<{ deviceId: string, seq: number, phase: number }>, control: Array<{ seq: number, ingestTsMs: number }> }

/** Publishes `count` readings of one device (QoS 1, a window of 20), each with its phase and counter. */
async function publish (client: MqttClient, deviceId: string, phase: number, count: number, hotEvery = 0, gapMs = 0): Promise<void> {
  let next = 0
  const one = async (): Promise<void> => {
    while (next < count) {
      const n = next++
      const temperature = hotEvery > 0 && n % hotEvery === 0 ? 60 : 20
      await client.publishAsync(telemetryTopic(deviceId), JSON.stringify({ n, phase, temperature }), { qos: 1 })
      if (gapMs) await new Promise((resolve) => setTimeout(resolve, gapMs))
    }
  }
  await Promise.all(Array.from({ length: gapMs ? 1 : 20 }, one))
}

test('uplink order: per device and lane seq increases; live overtakes the backlog after an outage; priority records go first', { timeout: 120000 }, async (t) => {
  const nats = await startNats()
  t.after(() => nats.cleanup())
  await provision(nats.url)
  const proxy = await startProxy({ host: '127.0.0.1', port: nats.port })
  t.after(() => proxy.close())
  const dir = tempDir()
  t.after(() => dir.cleanup())
  const file = join(dir.dir, 'rules.yaml')
  writeFileSync(file, RULES)
  // A drain cap keeps the backlog going for a few seconds, so live readings have something to overtake.
  const gw = await startGateway({ mqtt: ANON, rules: { file }, uplink: { servers: [`nats://127.0.0.1:${proxy.port}`], reconnectMinMs: 50, reconnectMaxMs: 200, drainEventsPerSec: 1000, batchMaxEvents: 50 } })
  t.after(() => gw.close())

  const arrivals: Arrival[] = []
  const seen = new Set<string>()
  const nc = await connect({ servers: nats.url })
  t.after(() => nc.close())
  const sub = nc.subscribe('iot.gw-test.>')
  void (async () => {
    for await (const m of sub) {
      if (m.subject.endsWith('.status')) continue
      const b = v1.ReplicationBatch.decode(m.data)
      if (seen.has(b.batchId)) continue // a re-sent batch (JetStream drops the copy); its first arrival counts
      seen.add(b.batchId)
      arrivals.push({
        index: arrivals.length,
        lane: m.subject.endsWith('.events') ? 'priority' : 'telemetry',
        events: b.events.map((e) => ({ deviceId: e.deviceId ?? '', seq: Number(e.seq), phase: (e.readings ?? []).find((r) => r.name === 'phase')?.value ?? -1 })),
        control: b.control.map((c) => ({ seq: Number(c.seq), ingestTsMs: Number(c.ingestTsMs) })),
      })
    }
  })()
  await nc.flush()

  const clients = await Promise.all(DEVICES.map((id) => connectDevice(gw.ports.mqtt, { clientId: id })))
  t.after(() => { for (const c of clients) c.end(true) })
  await waitFor(() => gw.gateway.uplink.state === 'up', 'the uplink')
  await Promise.all(clients.map((c, i) => publish(c, DEVICES[i], 0, 100)))
  await waitFor(() => gw.gateway.outbox.stats().events === 0, 'phase 0 to reach the cloud')

  proxy.cut()
  await waitFor(() => gw.gateway.uplink.state === 'down', 'the gateway to notice the cut')
  const cutTs = Date.now()
  // Every 100th reading is hot: alerts raised and cleared while the uplink is away (priority lane).
  await Promise.all(clients.map((c, i) => publish(c, DEVICES[i], 1, 1500, 100)))
  const restoreTs = Date.now()
  proxy.restore()
  await waitFor(() => gw.gateway.uplink.state === 'up', 'the uplink to come back', 20000)
  // Live readings, paced like real sensors, while the backlog drains at its cap.
  await Promise.all(clients.map((c, i) => publish(c, DEVICES[i], 2, 100, 0, 5)))
  await waitFor(() => gw.gateway.outbox.stats().events === 0 && gw.gateway.uplink.stats().inFlight === 0, 'the backlog to drain', 60000)
  await waitFor(() => arrivals.reduce((s, a) => s + a.events.length, 0) >= DEVICES.length * 1700, 'every event to be seen by the subscriber', 10000)

  const telemetry = arrivals.filter((a) => a.lane === 'telemetry').flatMap((a) => a.events.map((e) => ({ ...e, index: a.index })))
  for (const deviceId of DEVICES) {
    const mine = telemetry.filter((e) => e.deviceId === deviceId)
    assert.equal(mine.length, 1700, `${deviceId}: every event once`)
    // One lane = the backlog (phases 0 and 1, ingested before the link came back) or live (phase 2).
    for (const [what, events] of [['backlog', mine.filter((e) => e.phase < 2)], ['live', mine.filter((e) => e.phase === 2)]] as const) {
      for (let i = 1; i < events.length; i++) assert.ok(events[i].seq > events[i - 1].seq, `${deviceId} ${what}: seq ${events[i].seq} left after ${events[i - 1].seq}`)
    }
    const firstLive = Math.min(...mine.filter((e) => e.phase === 2).map((e) => e.index))
    const lastBacklog = Math.max(...mine.filter((e) => e.phase === 1).map((e) => e.index))
    assert.ok(firstLive < lastBacklog, `${deviceId}: live readings waited for the whole backlog (first live at ${firstLive}, last backlog at ${lastBacklog})`)
  }
  const control = arrivals.filter((a) => a.lane === 'priority').flatMap((a) => a.control.map((c) => ({ ...c, index: a.index })))
  for (let i = 1; i < control.length; i++) assert.ok(control[i].seq > control[i - 1].seq, `priority lane: seq ${control[i].seq} left after ${control[i - 1].seq}`)
  const outageControl = control.filter((c) => c.ingestTsMs >= cutTs && c.ingestTsMs <= restoreTs)
  assert.ok(outageControl.length >= 2 * 15, `alerts raised and cleared during the outage: ${outageControl.length}`)
  const firstOutageTelemetry = Math.min(...telemetry.filter((e) => e.phase === 1).map((e) => e.index))
  const lastOutageControl = Math.max(...outageControl.map((c) => c.index))
  assert.ok(lastOutageControl < firstOutageTelemetry, `priority records of the outage left before its telemetry (last priority at ${lastOutageControl}, first telemetry at ${firstOutageTelemetry})`)
})
