import assert from 'node:assert/strict'
import { test } from 'node:test'
import { connectDevice, startGateway, tempDir, startNats, waitFor, assertExactlyOnce, provision, readStream } from '../devkit/index.ts'
import { loadDevice } from './harness/load.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }

test('uplink: replays the backlog after a NATS outage under load, every event exactly once', { timeout: 120000 }, async (t) => {
  const nats = await startNats()
  t.after(() => nats.cleanup())
  await provision(nats.url)
  const gw = await startGateway({ mqtt: ANON, uplink: { servers: [nats.url], reconnectMinMs: 50, reconnectMaxMs: 500, publishTimeoutMs: 2000 } })
  t.after(() => gw.close())
  const acked = new Map<string, Set<number>>()
  const loads = []
  const clients: Array<import('mqtt').MqttClient> = []
  for (let d = 0; d < 3; d++) {
    const id = `dev-${d}`
    acked.set(id, new Set())
    const c = await connectDevice(gw.ports.mqtt, { clientId: id })
    t.after(() => c.end(true))
    clients.push(c)
    loads.push(loadDevice(c, id, { n: 0 }, acked.get(id)!, { window: 10, intervalMs: 2 }))
  }
  await waitFor(() => gw.gateway.uplink.ackedEvents > 200, 'events to flow to the cloud')
  await nats.stop()
  await waitFor(() => gw.gateway.uplink.state === 'down', 'the gateway to notice the outage')
  const atOutage = gw.gateway.outbox.stats().events
  await waitFor(() => gw.gateway.outbox.stats().events > atOutage + 500, 'a backlog to build while the cloud is away', 20000)
  await nats.restart()
  await waitFor(() => gw.gateway.uplink.state === 'up', 'the uplink to reconnect', 20000)
  for (const l of loads) l.stop()
  // end() waits for the publishes still in flight: after it, every acknowledged event is committed.
  await Promise.all(clients.map((c) => c.endAsync()))
  await waitFor(() => gw.gateway.outbox.stats().events === 0 && gw.gateway.outbox.stats().pending === 0 && gw.gateway.uplink.stats().inFlight === 0, 'the backlog to drain', 30000)
  const acc = await readStream(nats.url, 'TELEMETRY')
  assertExactlyOnce(acc, 'gw-test', acked)
  const total = [...acked.values()].reduce((s, a) => s + a.size, 0)
  assert.ok(total > 700, `load too light: ${total}`)
})

test('uplink: the drain cap holds a backlog to its rate from the start, beyond a burst of 100 ms', { timeout: 120000 }, async (t) => {
  const nats = await startNats()
  t.after(() => nats.cleanup())
  await provision(nats.url)
  await nats.stop()
  const rate = 2000
  const gw = await startGateway({ mqtt: ANON, uplink: { servers: [nats.url], reconnectMinMs: 50, reconnectMaxMs: 200, batchMaxEvents: 100, drainEventsPerSec: rate } })
  t.after(() => gw.close())
  const id = 'dev-cap'
  const acked = new Map([[id, new Set<number>()]])
  const c = await connectDevice(gw.ports.mqtt, { clientId: id })
  const load = loadDevice(c, id, { n: 0 }, acked.get(id)!, { window: 50 })
  await waitFor(() => acked.get(id)!.size >= 3000, 'a backlog of 3000 events while the cloud is away', 30000)
  load.stop()
  await c.endAsync()
  const backlog = gw.gateway.outbox.stats().events
  await nats.restart()
  await waitFor(() => gw.gateway.uplink.state === 'up', 'the uplink to reconnect', 20000)
  const t0 = performance.now()
  await waitFor(() => gw.gateway.outbox.stats().events === 0 && gw.gateway.uplink.stats().inFlight === 0, 'the backlog to drain', 60000)
  const seconds = (performance.now() - t0) / 1000
  // A lower bound, which no machine speed can beat: everything beyond the burst (one batch, or
  // 100 ms of the rate) waits for the cap. A burst of a whole second of the rate would cut it by 0.9 s.
  const burst = Math.max(100, rate / 10)
  const floor = (backlog - burst) / rate
  assert.ok(seconds >= floor * 0.9, `drained ${backlog} events in ${seconds.toFixed(2)} s; a cap of ${rate}/s needs at least ${floor.toFixed(2)} s`)
  assertExactlyOnce(await readStream(nats.url, 'TELEMETRY'), 'gw-test', acked)
})
