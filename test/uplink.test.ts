import assert from 'node:assert/strict'
import { test } from 'node:test'
import { connect } from '@nats-io/transport-node'
import { provisionStreams } from '../cloud/provision.ts'
import { connectDevice, startGateway, tempDir } from './harness/gateway.ts'
import { loadDevice } from './harness/load.ts'
import { startNats } from './harness/nats-server.ts'
import { waitFor } from './harness/poll.ts'
import { readStream, type StreamAccount } from './harness/stream-reader.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }

async function provision (url: string): Promise<void> {
  const nc = await connect({ servers: url })
  await provisionStreams(nc)
  await nc.close()
}

/** Every acknowledged `n` arrived exactly once; every event key is unique; seqs 1..max with no hole. */
function assertExactlyOnce (acc: StreamAccount, gatewayId: string, acked: Map<string, Set<number>>): void {
  for (const [id, count] of acc.batchIds) assert.equal(count, 1, `batch ${id} stored ${count} times`)
  for (const [deviceId, set] of acked) {
    const key = `${gatewayId}/${deviceId}`
    const seqs = acc.events.get(key) ?? new Map()
    for (const [seq, c] of seqs) assert.equal(c, 1, `${key} seq ${seq} arrived ${c} times`)
    const max = Math.max(0, ...seqs.keys())
    assert.equal(seqs.size, max, `${key}: ${max - seqs.size} sequence numbers missing`)
    const ns = new Set(acc.ns.get(key) ?? [])
    for (const n of set) assert.ok(ns.has(n), `${key}: acknowledged message ${n} never reached the stream`)
  }
}

test('uplink: replays the backlog after a NATS outage under load, every event exactly once', { timeout: 120000 }, async (t) => {
  const nats = await startNats()
  t.after(() => nats.cleanup())
  await provision(nats.url)
  const gw = await startGateway({ mqtt: ANON, uplink: { servers: [nats.url], reconnectMinMs: 50, reconnectMaxMs: 500, publishTimeoutMs: 2000 } })
  t.after(() => gw.close())
  const acked = new Map<string, Set<number>>()
  const loads = []
  for (let d = 0; d < 3; d++) {
    const id = `dev-${d}`
    acked.set(id, new Set())
    const c = await connectDevice(gw.ports.mqtt, { clientId: id })
    t.after(() => c.end(true))
    loads.push(loadDevice(c, id, { n: 0 }, acked.get(id)!, { window: 10, intervalMs: 2 }))
  }
  await waitFor(() => gw.gateway.replicator.stats().ackedEvents > 200, 'events to flow to the cloud')
  await nats.stop()
  await waitFor(() => gw.gateway.link.state === 'down', 'the gateway to notice the outage')
  const atOutage = gw.gateway.outbox.stats().events
  await waitFor(() => gw.gateway.outbox.stats().events > atOutage + 500, 'a backlog to build while the cloud is away', 20000)
  await nats.restart()
  await waitFor(() => gw.gateway.link.state === 'up', 'the uplink to reconnect', 20000)
  for (const l of loads) l.stop()
  await waitFor(() => gw.gateway.outbox.stats().events === 0 && gw.gateway.replicator.stats().inFlight === 0, 'the backlog to drain', 30000)
  const acc = await readStream(nats.url, 'TELEMETRY')
  assertExactlyOnce(acc, 'gw-test', acked)
  const total = [...acked.values()].reduce((s, a) => s + a.size, 0)
  assert.ok(total > 700, `load too light: ${total}`)
})
