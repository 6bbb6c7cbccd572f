import assert from 'node:assert/strict'
import { test } from 'node:test'
import { connectDevice, scrapeMetric, spawnGateway, startGateway, tempDir, startNats, waitFor, startProxy, assertExactlyOnce, provision, readStream } from '../devkit/index.ts'
import { loadDevice } from './harness/load.ts'
import { queryOutbox } from './harness/outbox-reader.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }
const FAST_RETRY = { reconnectMinMs: 50, reconnectMaxMs: 500, publishTimeoutMs: 2000, pingIntervalMs: 1000 }

/** Publishes `count` events per device through a gateway and waits for every PUBACK. */
async function fill (mqttPort: number, devices: string[], count: number, acked: Map<string, Set<number>>, next: Map<string, { n: number }>): Promise<void> {
  await Promise.all(devices.map(async (id) => {
    if (!acked.has(id)) { acked.set(id, new Set()); next.set(id, { n: 0 }) }
    const c = await connectDevice(mqttPort, { clientId: id })
    const target = acked.get(id)!.size + count
    const load = loadDevice(c, id, next.get(id)!, acked.get(id)!, { window: 100 })
    await waitFor(() => acked.get(id)!.size >= target, `${id} to get ${count} PUBACKs`, 30000)
    load.stop()
    await c.endAsync()
  }))
}

test('uplink: a gateway killed with SIGKILL mid-drain, three times, ends with every event exactly once', { timeout: 180000 }, async (t) => {
  const nats = await startNats()
  t.after(() => nats.cleanup())
  await provision(nats.url)
  await nats.stop()
  const tmp = tempDir('gw-kill-drain-')
  t.after(() => tmp.cleanup())
  const sets = ['gatewayId=gw-kill', 'mqtt.allowAnonymous=true', 'mqtt.ratePerDevice=1000000', 'mqtt.burstPerDevice=1000000',
    `uplink.servers=${nats.url}`, 'uplink.reconnectMinMs=50', 'uplink.reconnectMaxMs=300', 'uplink.batchMaxEvents=100', 'uplink.drainEventsPerSec=3000', `logLevel=${process.env.TEST_LOG_LEVEL ?? 'warn'}`]
  // Build a backlog while the cloud is away.
  let gw = await spawnGateway(tmp.dir, sets)
  const acked = new Map<string, Set<number>>()
  const next = new Map<string, { n: number }>()
  await fill(gw.ports.mqtt, ['k-0', 'k-1', 'k-2'], 3000, acked, next)
  await nats.restart()
  for (let round = 0; round < 3; round++) {
    const before = await scrapeMetric(gw.ports.http!, 'gateway_outbox_events')
    await waitFor(async () => await scrapeMetric(gw.ports.http!, 'gateway_outbox_events') < before - 500, 'the drain to make progress', 30000)
    await gw.kill('SIGKILL')
    gw = await spawnGateway(tmp.dir, sets)
  }
  try {
    await waitFor(async () => await scrapeMetric(gw.ports.http!, 'gateway_outbox_events') === 0 && await scrapeMetric(gw.ports.http!, 'gateway_uplink_batches_in_flight') === 0, 'the backlog to drain', 60000)
  } catch (err) {
    const ids = queryOutbox<{ id: number }>(tmp.dir, 'SELECT id FROM events').map((r) => r.id)
    const inflight = queryOutbox(tmp.dir, 'SELECT first_id, last_id FROM uplink_inflight')
    throw new Error(`${(err as Error).message}; outbox ${await scrapeMetric(gw.ports.http!, 'gateway_outbox_events')} rows ${ids[0]}..${ids[ids.length - 1]} (${ids.length}), in flight ${JSON.stringify(inflight)}, readyz ${await (await fetch(`http://127.0.0.1:${gw.ports.http}/readyz`)).text()}, gateway log: ${gw.stderr().slice(-3000)}`)
  }
  await gw.kill('SIGTERM')
  assertExactlyOnce(await readStream(nats.url, 'TELEMETRY'), 'gw-kill', acked)
})

test('uplink: nats-server killed and restarted mid-drain ends with every event exactly once', { timeout: 120000 }, async (t) => {
  const nats = await startNats()
  t.after(() => nats.cleanup())
  await provision(nats.url)
  await nats.stop()
  const gw = await startGateway({ logLevel: process.env.TEST_LOG_LEVEL as 'info' ?? 'silent', mqtt: ANON, uplink: { servers: [nats.url], ...FAST_RETRY, batchMaxEvents: 100, drainEventsPerSec: 4000 } })
  t.after(() => gw.close())
  const acked = new Map<string, Set<number>>()
  await fill(gw.ports.mqtt, ['n-0', 'n-1'], 4000, acked, new Map())
  await nats.restart()
  await waitFor(() => gw.gateway.uplink.ackedEvents > 1000, 'the drain to start', 30000)
  await nats.kill()
  await nats.restart()
  await waitFor(() => gw.gateway.outbox.stats().events === 0 && gw.gateway.uplink.stats().inFlight === 0, 'the backlog to drain', 60000)
  assertExactlyOnce(await readStream(nats.url, 'TELEMETRY'), 'gw-test', acked)
})

test('uplink: a slow link that is cut and restored ends with every event exactly once', { timeout: 120000 }, async (t) => {
  const nats = await startNats()
  t.after(() => nats.cleanup())
  await provision(nats.url)
  const proxy = await startProxy({ host: '127.0.0.1', port: nats.port })
  t.after(() => proxy.close())
  proxy.setLatency(20)
  proxy.setBandwidth(256 * 1024)
  const gw = await startGateway({ mqtt: ANON, uplink: { servers: [`nats://127.0.0.1:${proxy.port}`], ...FAST_RETRY, batchMaxEvents: 200 } })
  t.after(() => gw.close())
  const acked = new Map<string, Set<number>>()
  const next = new Map<string, { n: number }>()
  await fill(gw.ports.mqtt, ['p-0', 'p-1'], 1500, acked, next)
  await waitFor(() => gw.gateway.uplink.ackedEvents > 300, 'events to cross the slow link', 30000)
  proxy.cut()
  await waitFor(() => gw.gateway.uplink.state === 'down', 'the gateway to notice the cut', 15000)
  await fill(gw.ports.mqtt, ['p-0', 'p-1'], 1000, acked, next)
  proxy.restore()
  await waitFor(() => gw.gateway.outbox.stats().events === 0 && gw.gateway.uplink.stats().inFlight === 0, 'the backlog to drain', 60000)
  assertExactlyOnce(await readStream(nats.url, 'TELEMETRY'), 'gw-test', acked)
})

test('uplink: refused credentials are reported clearly and nothing is lost once fixed', { timeout: 120000 }, async (t) => {
  const nats = await startNats({ config: 'authorization { user: gw, password: right-secret }' })
  t.after(() => nats.cleanup())
  await provision(nats.url, { user: 'gw', pass: 'right-secret' })
  const tmp = tempDir('gw-auth-')
  t.after(() => tmp.cleanup())
  const wrong = await startGateway({ mqtt: ANON, uplink: { servers: [nats.url], user: 'gw', pass: 'wrong', ...FAST_RETRY } }, { dataDir: tmp.dir, keepData: true })
  const acked = new Map<string, Set<number>>()
  const next = new Map<string, { n: number }>()
  await fill(wrong.ports.mqtt, ['a-0'], 500, acked, next)
  await waitFor(() => wrong.gateway.uplink.state === 'refused', 'the link to report the refusal', 15000)
  const authErrors = await scrapeMetric(wrong.ports.http!, 'gateway_uplink_errors_total', { kind: 'auth' })
  assert.ok(authErrors > 0, 'auth refusals are counted')
  assert.match(wrong.gateway.status().lastError ?? '', /auth/i)
  assert.equal(wrong.gateway.outbox.stats().events, acked.get('a-0')!.size, 'events keep buffering while refused')
  await wrong.close()
  const fixed = await startGateway({ mqtt: ANON, uplink: { servers: [nats.url], user: 'gw', pass: 'right-secret', ...FAST_RETRY } }, { dataDir: tmp.dir, keepData: true })
  t.after(() => fixed.close())
  await waitFor(() => fixed.gateway.outbox.stats().events === 0, 'the backlog to drain once the credentials are fixed', 30000)
  assertExactlyOnce(await readStream(nats.url, 'TELEMETRY', { user: 'gw', pass: 'right-secret' }), 'gw-test', acked)
})
