// The uplink runs in a thread of its own (gateway/uplink/uplink-thread.ts), so control never waits
// for the cloud: a decision reaches its actuator while the uplink thread is blocked outright and
// the trigger's commit waits for its fsync; a thread that dies is started again, its failure shown
// in /readyz and the metrics, while ingest and decisions go on, and the stream's accounting stays
// exact by identity. Behaviour only, no timing.
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { assertExactlyOnce, connectDevice, provision, readStream, scrapeMetric, startGateway, startNats, tempDir, waitFor, type NatsServer } from '../devkit/index.ts'
import { telemetryTopic } from '../proto/topics.ts'
import { actuator, coolerRules } from './harness/actuator.ts'
import { heldFsync } from './harness/held-fsync.ts'
import { loadDevice } from './harness/load.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }

/** A provisioned nats-server, and the cold-room rule set in a file (room-1 above 8 C: cooler-1 on). */
async function cloudAndRules (t: TestContext): Promise<{ nats: NatsServer, file: string }> {
  const nats = await startNats()
  t.after(() => nats.cleanup())
  await provision(nats.url)
  const dir = tempDir()
  t.after(() => dir.cleanup())
  const file = join(dir.dir, 'rules.yaml')
  writeFileSync(file, coolerRules('v1', 8))
  return { nats, file }
}

async function readyz (httpPort: number): Promise<{ uplink: { link: string, lastError: string, threadRestarts: number, inFlight: number } }> {
  return await (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).json() as { uplink: { link: string, lastError: string, threadRestarts: number, inFlight: number } }
}

test('uplink thread blocked outright: a command still reaches its actuator while the trigger waits for its fsync; afterwards everything replicates exactly once', { timeout: 60000 }, async (t) => {
  const { nats, file } = await cloudAndRules(t)
  const sync = heldFsync()
  const gw = await startGateway({ mqtt: ANON, rules: { file }, uplink: { servers: [nats.url] } }, { fsync: sync.fsync })
  t.after(() => gw.close())
  await waitFor(() => gw.gateway.uplink.state === 'up', 'the uplink')
  const cooler = await actuator(gw.ports.mqtt, 'cooler-1')
  const room = await connectDevice(gw.ports.mqtt, { clientId: 'room-1' })
  t.after(() => { cooler.client.end(true); room.end(true) })
  const acked = new Set<number>()
  const publish = (n: number, temperature: number): void => { room.publish(telemetryTopic('room-1'), JSON.stringify({ n, temperature }), { qos: 1 }, (err) => { if (!err) acked.add(n) }) }
  publish(1, 5)
  await waitFor(() => acked.size === 1, 'the first reading')

  const release = gw.gateway.uplink.hold()
  // Blocked for real: the thread answers nothing, not even the metrics request.
  assert.equal(await gw.gateway.uplink.metricsText(), '', 'the uplink thread still answers')
  sync.hold(true)
  publish(2, 9.5)
  await waitFor(() => cooler.received.length === 1, 'the command, with the uplink thread blocked and the trigger waiting for its fsync')
  assert.deepEqual(cooler.received[0].args, { on: true })
  assert.equal(sync.waiting() > 0, true, 'the trigger\'s commit was not waiting for its fsync')
  assert.deepEqual([...acked], [1], 'a PUBACK left before its fsync')
  sync.hold(false)
  await waitFor(() => acked.size === 2, 'the trigger\'s PUBACK once synced')
  // More readings while the thread is still blocked: buffered, acknowledged.
  for (let n = 3; n <= 20; n++) publish(n, 5)
  await waitFor(() => acked.size === 20, 'readings acknowledged while the uplink thread is blocked')

  release()
  assert.match(await gw.gateway.uplink.metricsText(), /gateway_uplink_up 1/, 'the thread answers again')
  await waitFor(() => gw.gateway.outbox.stats().events === 0 && gw.gateway.uplink.stats().inFlight === 0, 'the outbox to drain', 20000)
  assertExactlyOnce(await readStream(nats.url, 'TELEMETRY'), 'gw-test', new Map([['room-1', acked]]))
})

test('uplink thread killed under load: started again, its failure in /readyz and the metrics, ingest and decisions go on, every acknowledged reading exactly once', { timeout: 90000 }, async (t) => {
  const { nats, file } = await cloudAndRules(t)
  // The restart waits reconnectMinMs (jittered to 50-100%): a window to look at a gateway without its uplink thread.
  const gw = await startGateway({ mqtt: ANON, rules: { file }, uplink: { servers: [nats.url], reconnectMinMs: 3000, reconnectMaxMs: 3000, batchMaxEvents: 50 } })
  t.after(() => gw.close())
  await waitFor(() => gw.gateway.uplink.state === 'up', 'the uplink')
  const cooler = await actuator(gw.ports.mqtt, 'cooler-1')
  const room = await connectDevice(gw.ports.mqtt, { clientId: 'room-1' })
  const load = await connectDevice(gw.ports.mqtt, { clientId: 'dev-load' })
  t.after(() => { cooler.client.end(true); room.end(true); load.end(true) })
  const acked = new Map([['dev-load', new Set<number>()], ['room-1', new Set<number>()]])
  const running = loadDevice(load, 'dev-load', { n: 0 }, acked.get('dev-load')!, { window: 20, intervalMs: 2 })
  await waitFor(() => gw.gateway.uplink.ackedEvents > 200, 'replication under load')

  gw.gateway.uplink.kill()
  await waitFor(async () => (await readyz(gw.ports.http!)).uplink.threadRestarts === 1, 'the failure to show in /readyz')
  const down = await readyz(gw.ports.http!)
  assert.match(down.uplink.lastError, /uplink thread failed/)
  assert.notEqual(down.uplink.link, 'up')
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_uplink_thread_restarts_total'), 1)
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_uplink_thread_up'), 0)
  // Without an uplink thread: readings are acknowledged and the rules still command the cooler.
  const ackedBefore = acked.get('dev-load')!.size
  await room.publishAsync(telemetryTopic('room-1'), JSON.stringify({ n: 1, temperature: 9.5 }), { qos: 1 })
  acked.get('room-1')!.add(1)
  await waitFor(() => cooler.received.length === 1, 'a command while the uplink thread is down')
  await waitFor(() => acked.get('dev-load')!.size > ackedBefore + 100, 'ingest while the uplink thread is down')
  assert.notEqual((await readyz(gw.ports.http!)).uplink.link, 'up', 'the thread came back before the checks ran: the window above proved nothing')

  await waitFor(() => gw.gateway.uplink.state === 'up', 'the new uplink thread to connect', 20000)
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_uplink_thread_up'), 1)
  await waitFor(() => acked.get('dev-load')!.size > ackedBefore + 1000, 'more load through the new thread', 30000)
  running.stop()
  await waitFor(() => gw.gateway.outbox.stats().events === 0 && gw.gateway.uplink.stats().inFlight === 0, 'the outbox to drain', 30000)
  assertExactlyOnce(await readStream(nats.url, 'TELEMETRY'), 'gw-test', acked)
})
