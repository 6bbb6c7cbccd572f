import assert from 'node:assert/strict'
import { test } from 'node:test'
import { connect, type NatsConnection, type Status } from '@nats-io/transport-node'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { startNats, startProxy, waitFor, type Proxy } from '../devkit/index.ts'

const RECONNECT = { maxReconnectAttempts: -1, reconnectTimeWait: 100 }

/** Records every status event of nc (the iterator ends when nc closes). */
function watchStatus (nc: NatsConnection): Status[] {
  const seen: Status[] = []
  void (async () => { for await (const s of nc.status()) seen.push(s) })()
  return seen
}

/** A responder on its own direct connection: replies to `subject` with the request's payload. */
async function echo (url: string, subject: string): Promise<NatsConnection> {
  const nc = await connect({ servers: url })
  nc.subscribe(subject, { callback: (_err, msg) => { msg.respond(msg.data) } })
  await nc.flush()
  return nc
}

/** A server, a proxy in front of it and an echo responder on `harness.echo` (connected directly). */
async function echoBehindProxy (t: { after: (fn: () => unknown) => void }): Promise<{ proxy: Proxy, responder: NatsConnection }> {
  const server = await startNats()
  t.after(() => server.cleanup())
  const proxy = await startProxy({ host: '127.0.0.1', port: server.port })
  t.after(() => proxy.close())
  const responder = await echo(server.url, 'harness.echo')
  t.after(() => responder.close())
  return { proxy, responder }
}

test('harness: nats-server starts with JetStream, restarts on the same port with its data', async (t) => {
  const server = await startNats()
  t.after(() => server.cleanup())
  assert.match(server.url, /^nats:\/\/127\.0\.0\.1:\d+$/)
  const nc = await connect({ servers: server.url, ...RECONNECT })
  t.after(() => nc.close())
  const status = watchStatus(nc)

  const jsm = await jetstreamManager(nc)
  await jsm.streams.add({ name: 'HARNESS', subjects: ['harness.>'] })
  const js = jetstream(nc)
  for (let i = 0; i < 5; i++) await js.publish(`harness.${i}`, `m${i}`)
  assert.equal((await jsm.streams.info('HARNESS')).state.messages, 5)

  const { port, storeDir } = server
  const pid = server.pid
  await server.restart()
  assert.equal(server.port, port)
  assert.equal(server.storeDir, storeDir)
  assert.notEqual(server.pid, pid)

  await waitFor(() => status.some((s) => s.type === 'reconnect'), 'client to reconnect after restart')
  const info = await waitFor(() => jsm.streams.info('HARNESS'), 'stream info after restart')
  assert.equal(info.state.messages, 5)
  assert.equal((await jsm.streams.getMessage('HARNESS', { seq: 3 }))?.string(), 'm2')
  // The restarted server takes new writes on the same stream.
  assert.equal((await js.publish('harness.5', 'm5')).seq, 6)
})

test('harness: proxy forwards, cuts and restores a NATS connection', async (t) => {
  const { proxy, responder } = await echoBehindProxy(t)

  const nc = await connect({ servers: `nats://127.0.0.1:${proxy.port}`, ...RECONNECT })
  t.after(() => nc.close())
  const status = watchStatus(nc)
  assert.equal((await nc.request('harness.echo', 'one', { timeout: 2000 })).string(), 'one')
  const got: string[] = []
  responder.subscribe('harness.pub', { callback: (_err, msg) => { got.push(msg.string()) } })
  await responder.flush()
  nc.publish('harness.pub', 'p1')
  await waitFor(() => got.includes('p1'), 'a publish through the proxy')

  proxy.cut()
  await waitFor(() => status.some((s) => s.type === 'disconnect'), 'client to see the cut')
  // While cut, the client keeps trying and is turned away: no reconnect yet.
  await assert.rejects(nc.request('harness.echo', 'lost', { timeout: 300 }))
  assert.ok(!status.some((s) => s.type === 'reconnect'), 'reconnected through a cut link')

  proxy.restore()
  await waitFor(() => status.some((s) => s.type === 'reconnect'), 'client to reconnect after restore')
  assert.equal((await nc.request('harness.echo', 'two', { timeout: 2000 })).string(), 'two')
})

test('harness: proxy adds latency', async (t) => {
  const { proxy } = await echoBehindProxy(t)
  const nc = await connect({ servers: `nats://127.0.0.1:${proxy.port}` })
  t.after(() => nc.close())
  await nc.request('harness.echo', 'warm', { timeout: 2000 })

  proxy.setLatency(50)
  // The request crosses the proxy once each way; the responder is connected directly.
  const start = performance.now()
  const reply = await nc.request('harness.echo', 'slow', { timeout: 5000 })
  const rtt = performance.now() - start
  assert.equal(reply.string(), 'slow')
  assert.ok(rtt >= 100, `round trip ${rtt.toFixed(1)} ms through a 50 ms proxy`)
})

test('harness: proxy black-holes a link (connection kept, bytes dropped) and restore() resets the held connections', async (t) => {
  const { proxy } = await echoBehindProxy(t)
  // Pings far apart: the client must not notice the hold by itself within the test.
  const nc = await connect({ servers: `nats://127.0.0.1:${proxy.port}`, ...RECONNECT, pingInterval: 60000 })
  t.after(() => nc.close())
  const status = watchStatus(nc)
  assert.equal((await nc.request('harness.echo', 'one', { timeout: 2000 })).string(), 'one')

  proxy.hold()
  // No answer, and no disconnect either: the TCP connection stays open.
  await assert.rejects(nc.request('harness.echo', 'lost', { timeout: 500 }))
  assert.ok(!status.some((s) => s.type === 'disconnect'), 'a held link was closed')

  proxy.restore()
  await waitFor(() => status.some((s) => s.type === 'disconnect'), 'the held connection to be reset on restore')
  await waitFor(() => status.some((s) => s.type === 'reconnect'), 'client to reconnect after restore')
  assert.equal((await nc.request('harness.echo', 'two', { timeout: 2000 })).string(), 'two')
})
