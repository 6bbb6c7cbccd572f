// A graceful close with batches in flight records their acks as they arrive: nothing that
// JetStream acknowledged is left behind to re-send, and close does not sit out publishTimeoutMs.
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { test } from 'node:test'
import Database from 'better-sqlite3'
import { telemetryTopic } from '../proto/topics.ts'
import { connectDevice, provision, readStream, startGateway, startNats, startProxy, waitFor } from '../devkit/index.ts'
import { readOutbox } from './harness/outbox-reader.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }

// The test's own timeout is far below publishTimeoutMs: a close that ignored acks would wait it out.
test('uplink: closing with batches in flight records their acks and leaves nothing acknowledged to re-send', { timeout: 20000 }, async (t) => {
  const nats = await startNats()
  t.after(() => nats.cleanup())
  await provision(nats.url)
  const proxy = await startProxy({ host: '127.0.0.1', port: nats.port })
  t.after(() => proxy.close())
  const gw = await startGateway({ mqtt: ANON, uplink: { servers: [`nats://127.0.0.1:${proxy.port}`], publishTimeoutMs: 60000 } }, { keepData: true })
  await waitFor(() => gw.gateway.uplink.state === 'up', 'the uplink')
  // Acks come back slowly, so the batch is still in flight when the gateway closes.
  proxy.setLatency(3000, 'down')
  const client = await connectDevice(gw.ports.mqtt, { clientId: 'dev-1' })
  await Promise.all(Array.from({ length: 20 }, (_, n) => client.publishAsync(telemetryTopic('dev-1'), JSON.stringify({ n, temperature: 20 }), { qos: 1 })))
  await client.endAsync()
  await waitFor(() => gw.gateway.uplink.stats().inFlight > 0, 'a batch in flight')
  // The uplink's own close, as the gateway's close calls it (after the broker and the outbox).
  await gw.gateway.uplink.close()
  assert.equal(gw.gateway.uplink.stats().inFlight, 0, 'close returned with the batch still in flight')
  await gw.close()

  const db = new Database(join(gw.dataDir, 'gateway.db'), { readonly: true })
  const inflight = (db.prepare('SELECT count(*) AS n FROM uplink_inflight').get() as { n: number }).n
  db.close()
  assert.equal(inflight, 0, 'in-flight batches left behind: their acks were ignored while closing')
  const stored = await readStream(nats.url, 'TELEMETRY')
  const sent = new Set(stored.ns.get('gw-test/dev-1') ?? [])
  assert.ok(sent.size > 0, 'nothing reached the stream')
  const left = readOutbox(gw.dataDir).filter((e) => sent.has(e.readings.n))
  assert.deepEqual(left.map((e) => e.readings.n), [], 'events JetStream acknowledged are still in the outbox')
})
