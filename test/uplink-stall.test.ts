// The stall watchdog (issue: operators see trouble before data is at risk): a link that stays
// connected while nothing it publishes is acknowledged is declared stalled (counted, logged, in
// /readyz), dropped and connected anew, again while it lasts; once acks flow, every acknowledged
// reading is in the stream exactly once. Real nats-server, real TCP proxy: holding the acks back
// (the server stores, never answers), or black-holing both ways under load (a path that drops
// every packet but keeps TCP up).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { telemetryTopic } from '../proto/topics.ts'
import { assertExactlyOnce, connectDevice, provision, readStream, scrapeMetric, spawnGateway, startGateway, startNats, startProxy, tempDir, waitFor } from '../devkit/index.ts'
import { loadDevice } from './harness/load.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }
const HOLE_GW = 'gw-hole'

interface HoleReadyz { outboxEvents: number, uplink: { link: string, stalled: boolean, stalls: number, inFlight: number } }

test('uplink: acks held back while the link stays up: stalled (counted, in /readyz), reconnected, and once acks flow every reading is in the stream exactly once', { timeout: 60000 }, async (t) => {
  const nats = await startNats()
  t.after(() => nats.cleanup())
  await provision(nats.url)
  const proxy = await startProxy({ host: '127.0.0.1', port: nats.port })
  t.after(() => proxy.close())
  const gw = await startGateway({ mqtt: ANON, uplink: { servers: [`nats://127.0.0.1:${proxy.port}`], publishTimeoutMs: 300, stallAfterTimeouts: 3, reconnectMinMs: 50, reconnectMaxMs: 200 } })
  t.after(() => gw.close())
  await waitFor(() => gw.gateway.uplink.state === 'up', 'the uplink')
  const client = await connectDevice(gw.ports.mqtt, { clientId: 'dev-s' })
  t.after(() => client.end(true))
  const acked: number[] = []
  const publish = async (from: number, to: number): Promise<void> => {
    for (let n = from; n <= to; n++) {
      await client.publishAsync(telemetryTopic('dev-s'), JSON.stringify({ n, temperature: 20 }), { qos: 1 })
      acked.push(n)
    }
  }
  await publish(1, 20)
  await waitFor(() => gw.gateway.outbox.stats().events === 0, 'the first readings replicated')
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_uplink_stalls_total'), 0)

  // The server gets every publish (JetStream stores it) but its acks do not come back: TCP stays up.
  proxy.setLatency(600_000, 'down')
  await publish(21, 40)
  const readyz = async (): Promise<{ uplink: { stalled: boolean, stalls: number, lastError: string } }> => await (await fetch(`http://127.0.0.1:${gw.ports.http}/readyz`)).json() as { uplink: { stalled: boolean, stalls: number, lastError: string } }
  await waitFor(async () => (await readyz()).uplink.stalled, 'the stall in /readyz')
  const r = await readyz()
  assert.ok(r.uplink.stalls >= 1)
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_uplink_stalled'), 1)
  // It keeps trying: each new connection is held the same way, so it is declared again or fails to connect.
  await waitFor(async () => await scrapeMetric(gw.ports.http!, 'gateway_uplink_stalls_total') >= 1 && gw.gateway.uplink.state !== 'up', 'a reconnect after the stall')

  proxy.setLatency(0, 'down')
  await publish(41, 50)
  await waitFor(() => gw.gateway.outbox.stats().events === 0, 'the backlog replicated after the stall')
  await waitFor(async () => !(await readyz()).uplink.stalled, 'the stall to clear')
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_uplink_stalled'), 0)
  // Batches the server stored but never acknowledged were sent again with the same ids: JetStream
  // dropped the copies, and each reading is there once.
  const acc = await readStream(nats.url, 'TELEMETRY')
  assertExactlyOnce(acc, gw.gateway.config.gatewayId, new Map([['dev-s', acked]]))
})

test('uplink: a black hole under load (TCP up, nothing passes either way): stalled (logged, counted, in /readyz), dropped and connected anew once traffic flows, every acknowledged reading in the stream exactly once', { timeout: 90000 }, async (t) => {
  const nats = await startNats()
  t.after(() => nats.cleanup())
  await provision(nats.url)
  const proxy = await startProxy({ host: '127.0.0.1', port: nats.port })
  t.after(() => proxy.close())
  const tmp = tempDir('gw-hole-')
  t.after(() => tmp.cleanup())
  // The client's own pings would find a black hole as well (after pingIntervalMs x maxPingOut): they
  // are put far off, so that what finds it here is the watchdog, as it must for a hole that lets pings through.
  const gw = await spawnGateway(tmp.dir, [`gatewayId=${HOLE_GW}`, 'mqtt.allowAnonymous=true', 'mqtt.ratePerDevice=1000000', 'mqtt.burstPerDevice=1000000',
    `uplink.servers=nats://127.0.0.1:${proxy.port}`, 'uplink.publishTimeoutMs=300', 'uplink.stallAfterTimeouts=3', 'uplink.pingIntervalMs=600000',
    'uplink.reconnectMinMs=50', 'uplink.reconnectMaxMs=200', 'uplink.batchMaxEvents=200'], { keepOutput: 'all' })
  t.after(() => gw.kill('SIGKILL'))
  const http = gw.ports.http!
  const metric = (name: string): Promise<number> => scrapeMetric(http, name)
  const readyz = async (): Promise<HoleReadyz> => await (await fetch(`http://127.0.0.1:${http}/readyz`)).json() as HoleReadyz
  await waitFor(async () => (await readyz()).uplink.link === 'up', 'the uplink')

  // Load from two devices for the whole test: the hole opens while batches are in flight.
  const acked = new Map<string, Set<number>>()
  const loads = await Promise.all(['hole-0', 'hole-1'].map(async (id) => {
    const c = await connectDevice(gw.ports.mqtt, { clientId: id })
    t.after(() => c.end(true))
    acked.set(id, new Set())
    return loadDevice(c, id, { n: 0 }, acked.get(id)!, { window: 20, intervalMs: 2 })
  }))
  await waitFor(async () => await metric('gateway_uplink_acked_events_total') >= 500, 'the load to replicate')
  assert.equal(await metric('gateway_uplink_stalls_total'), 0)
  const connectsBefore = await metric('gateway_uplink_connects_total')

  proxy.hold()
  await waitFor(async () => (await readyz()).uplink.stalled, 'the stall in /readyz', 20000)
  assert.ok((await readyz()).uplink.stalls >= 1)
  assert.equal(await metric('gateway_uplink_stalled'), 1)
  assert.ok(await metric('gateway_uplink_stalls_total') >= 1)
  const logged = gw.stderr().split('\n').filter((l) => l.includes('"msg":"uplink stalled')).map((l) => JSON.parse(l) as { level: number, limitMs: number })
  assert.ok(logged.length >= 1 && logged.every((l) => l.level === 50 && l.limitMs === 900), `the stall logged at error: ${JSON.stringify(logged)}`)
  // The watchdog dropped the connection that said "up"; attempts through the hole get no INFO and time out.
  await waitFor(async () => (await readyz()).uplink.link !== 'up', 'the held connection dropped by the gateway', 20000)
  const ackedAtHold = await metric('gateway_uplink_acked_events_total')
  const accepted = (): number => [...acked.values()].reduce((s, a) => s + a.size, 0)
  const acceptedAtHold = accepted()
  await waitFor(() => accepted() >= acceptedAtHold + 500, 'ingest to go on during the hole')
  assert.equal(await metric('gateway_uplink_acked_events_total'), ackedAtHold, 'nothing acknowledged through the hole')
  assert.ok((await readyz()).outboxEvents > 0, 'a backlog during the hole')

  proxy.restore()
  await waitFor(async () => await metric('gateway_uplink_connects_total') > connectsBefore && (await readyz()).uplink.link === 'up', 'a new connection once traffic flows', 20000)
  await waitFor(async () => await metric('gateway_uplink_acked_events_total') > ackedAtHold, 'acks again after the hole', 20000)
  for (const l of loads) l.stop()
  await waitFor(async () => { const r = await readyz(); return r.outboxEvents === 0 && r.uplink.inFlight === 0 }, 'the backlog replicated after the hole', 30000)
  await waitFor(async () => !(await readyz()).uplink.stalled, 'the stall to clear')
  assert.equal(await metric('gateway_uplink_stalled'), 0)
  // Batches lost in the hole were sent again with their ids: each acknowledged reading is in the stream once.
  assertExactlyOnce(await readStream(nats.url, 'TELEMETRY'), HOLE_GW, acked)
})
