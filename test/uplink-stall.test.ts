// The stall watchdog (issue: operators see trouble before data is at risk): a link that stays
// connected while nothing it publishes is acknowledged is declared stalled (counted, logged, in
// /readyz), dropped and connected anew, again while it lasts; once acks flow, every acknowledged
// reading is in the stream exactly once. Real nats-server, real TCP proxy holding the acks back.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { telemetryTopic } from '../proto/topics.ts'
import { assertExactlyOnce, connectDevice, provision, readStream, scrapeMetric, startGateway, startNats, startProxy, waitFor } from '../devkit/index.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }

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
