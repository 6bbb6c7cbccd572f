// Promise 2, "nothing doubled", at the edge: a device whose PUBACK was lost resends the publish
// byte for byte (MQTT.js does not set DUP), and the gateway recognises the reading by (device, the
// device's ts, a hash of the payload) instead of storing it again under a new seq. Real gateway
// child killed with SIGKILL, real SQLite, real MQTT client behind a TCP proxy that holds back the
// gateway's answers (what a power cut loses on the wire).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import Database from 'better-sqlite3'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { createLogger, openDb, parseConfig, type GatewayError } from '../gateway/index.ts'
import { SCHEMA_VERSION } from '../gateway/store/db.ts'
import { createMetrics } from '../gateway/metrics.ts'
import { LANE_TELEMETRY, Outbox, type IncomingEvent } from '../gateway/store/outbox.ts'
import { ENTRY_BYTES, HEADER_BYTES, payloadHash } from '../gateway/store/resend-window.ts'
import { deferrer } from './harness/cloud.ts'
import { assertExactlyOnce, connectDevice, provision, readStream, scrapeMetric, spawnGateway, startNats, tempDir, type ChildGateway, waitFor, startProxy } from '../devkit/index.ts'
import { STREAMS } from '../proto/index.ts'
import { queryOutbox, readOutbox } from './harness/outbox-reader.ts'

const ANON = ['mqtt.allowAnonymous=true']
const RESENDS = 'gateway_resends_dropped_total'

/** Starts a gateway child on a fixed MQTT port; right after a SIGKILL the port may be busy for a moment. */
async function spawnOnPort (dir: string, port: number, sets: string[]): Promise<ChildGateway> {
  const deadline = Date.now() + 15000
  for (;;) {
    try {
      return await spawnGateway(dir, [...sets, `mqtt.port=${port}`])
    } catch (err) {
      if (!/EADDRINUSE/.test((err as Error).message) || Date.now() > deadline) throw err
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
}

test('resend: a publish committed just before a power cut and resent after the restart is stored once', { timeout: 90000 }, async (t) => {
  const defer = deferrer(t)
  // The cloud is away until the end (the outbox keeps everything to be checked), then the backlog
  // drains and the stream is accounted for by identity.
  const nats = await startNats()
  defer(() => nats.cleanup())
  await provision(nats.url)
  await nats.stop()
  const tmp = tempDir('gw-resend-')
  defer(() => tmp.cleanup())
  const gatewayId = 'gw-resend'
  const sets = [...ANON, `gatewayId=${gatewayId}`, `uplink.servers=${nats.url}`, 'uplink.reconnectMinMs=50', 'uplink.reconnectMaxMs=300']
  let gw = await spawnGateway(tmp.dir, sets)
  defer(() => gw.kill('SIGKILL'))
  const port = gw.ports.mqtt
  const proxy = await startProxy({ host: '127.0.0.1', port })
  defer(() => proxy.close())
  const deviceId = 'resender'
  const topic = `devices/${deviceId}/telemetry`
  const client = mqtt.connect(`mqtt://127.0.0.1:${proxy.port}`, { clientId: deviceId, reconnectPeriod: 100, connectTimeout: 5000 })
  defer(() => client.endAsync(true))
  await new Promise<void>((resolve, reject) => { client.once('connect', () => resolve()); client.once('error', reject) })
  let connects = 1
  client.on('connect', () => { connects++ })

  // From now on the gateway's answers stay on the wire: it commits, the device never hears of it.
  proxy.setLatency(3_600_000, 'down')
  const N = 20
  const ts0 = Date.now()
  const acked = new Set<number>()
  for (let n = 1; n <= N; n++) {
    client.publish(topic, JSON.stringify({ ts: ts0 + n, n, temperature: 20 + n / 10 }), { qos: 1 }, (err) => { if (!err) acked.add(n) })
  }
  const stored = (): number => queryOutbox<{ c: number }>(tmp.dir, 'SELECT count(*) AS c FROM events')[0].c
  await waitFor(() => stored() === N, `all ${N} publishes committed`, 20000)
  assert.equal(acked.size, 0, 'a PUBACK got through the held link: the test would prove nothing')

  // Power cut: the process dies and what was on the wire (the PUBACKs) is lost with it.
  await gw.kill('SIGKILL')
  proxy.cut()
  proxy.setLatency(0)
  gw = await spawnOnPort(tmp.dir, port, sets)
  proxy.restore()

  // The client reconnects and resends all N, unchanged; each is acknowledged, none stored again.
  await waitFor(() => acked.size === N, `all ${N} publishes acknowledged after the restart`, 30000)
  assert.ok(connects >= 2, 'the client reconnected')
  let mine = readOutbox(tmp.dir).filter((e) => e.deviceId === deviceId)
  assert.deepEqual(mine.map((e) => e.seq), Array.from({ length: N }, (_, i) => i + 1), 'seqs 1..N, no doubles')
  assert.deepEqual(mine.map((e) => e.readings.n), Array.from({ length: N }, (_, i) => i + 1), 'each reading once, in order')
  assert.equal(await scrapeMetric(gw.ports.http!, RESENDS), N, 'every resend counted as dropped')

  // Not everything that looks alike is a resend: two readings with the same ts but different
  // payloads are both stored, and so are two identical payloads without a device ts.
  const direct = await connectDevice(gw.ports.mqtt, { clientId: 'other' })
  defer(() => direct.endAsync(true))
  const other = 'devices/other/telemetry'
  const ts = Date.now()
  await direct.publishAsync(other, JSON.stringify({ ts, n: 1, temperature: 1 }), { qos: 1 })
  await direct.publishAsync(other, JSON.stringify({ ts, n: 2, temperature: 2 }), { qos: 1 })
  const noTs = JSON.stringify({ n: 3, temperature: 3 })
  await direct.publishAsync(other, noTs, { qos: 1 })
  await direct.publishAsync(other, noTs, { qos: 1 })
  mine = readOutbox(tmp.dir).filter((e) => e.deviceId === 'other')
  assert.deepEqual(mine.map((e) => [e.seq, e.readings.n]), [[1, 1], [2, 2], [3, 3], [4, 3]])
  assert.equal(await scrapeMetric(gw.ports.http!, RESENDS), N, 'nothing else counted as a resend')
  assert.equal(readOutbox(tmp.dir).length, N + 4)

  // The cloud comes back: every acknowledged reading reaches the stream exactly once, by identity.
  await nats.restart()
  await waitFor(async () => await scrapeMetric(gw.ports.http!, 'gateway_outbox_events') === 0 && await scrapeMetric(gw.ports.http!, 'gateway_uplink_batches_in_flight') === 0, 'the outbox to drain', 30000)
  const acc = await readStream(nats.url, STREAMS.telemetry.name)
  // "other" sent n=3 twice on purpose (two publishes, no device ts): its seqs 1..4 are each checked
  // once by the accounting, and n=3 is expected twice.
  assertExactlyOnce(acc, gatewayId, new Map<string, Iterable<number>>([[deviceId, acked], ['other', [1, 2]]]))
  assert.deepEqual([...acc.ns.get(`${gatewayId}/other`)!].sort(), [1, 2, 3, 3])
  assert.deepEqual([...acc.events.keys()].sort(), [`${gatewayId}/${deviceId}`, `${gatewayId}/other`].sort(), 'no other device in the stream')
})

test('resend: the same stamped reading sent twice back to back is stored once, and neither PUBACK precedes its commit', async (t) => {
  const defer = deferrer(t)
  const tmp = tempDir('gw-resend-q-')
  defer(() => tmp.cleanup())
  const gw = await spawnGateway(tmp.dir, ANON)
  defer(() => gw.kill('SIGKILL'))
  const client = await connectDevice(gw.ports.mqtt, { clientId: 'twice' })
  defer(() => client.endAsync(true))
  // An independent reader: each PUBACK must find the reading committed.
  const auditor = new Database(join(tmp.dir, 'gateway.db'), { readonly: true })
  defer(() => auditor.close())
  const count = auditor.prepare('SELECT count(*) AS c FROM events').pluck()
  const payload = JSON.stringify({ ts: Date.now(), temperature: 21.5 })
  const seen: number[] = []
  // Written in one go: the second usually arrives while the first still waits for its commit.
  await Promise.all([1, 2].map(() => client.publishAsync('devices/twice/telemetry', payload, { qos: 1 }).then(() => { seen.push(count.get() as number) })))
  assert.deepEqual(seen, [1, 1], 'each PUBACK came after the one stored copy was committed')
  assert.equal(readOutbox(tmp.dir).length, 1)
  assert.equal(await scrapeMetric(gw.ports.http!, RESENDS), 1)
})

/**
 * An outbox in this process, for driving commits by hand; its database is closed after the test.
 * Durability normal: flush() then acknowledges synchronously (with full, after the WAL's fsync on
 * the thread pool), which lets the test check the order of callbacks step by step.
 */
function localOutbox (t: { after: (fn: () => void) => void }, dir: string, resendWindow = 64): Outbox {
  const cfg = parseConfig({ dataDir: dir, logLevel: 'silent', outbox: { resendWindow, durability: 'normal' } })
  const db = openDb(dir, cfg.outbox.durability)
  t.after(() => { if (db.open) db.close() })
  const outbox = new Outbox(db, cfg.outbox, createLogger('silent', 'test'), createMetrics({ defaultMetrics: false }))
  outbox.start()
  return outbox
}

const reading = (deviceId: string, n: number): IncomingEvent => ({ deviceId, lane: LANE_TELEMETRY, eventTsMs: 1000 + n, ingestTsMs: 1000 + n, eventTsFromGateway: false, readings: [{ name: 'n', value: n }] })

test('resend: waits for its first copy and shares its fate; the window keeps the last K readings of each device', (t) => {
  const tmp = tempDir('gw-resend-u-')
  t.after(() => tmp.cleanup())
  const outbox = localOutbox(t, tmp.dir, 4)
  const order: string[] = []
  const id = (n: number): [number, number] => [1000 + n, payloadHash(Buffer.from(`payload ${n}`))]

  outbox.appendEvent(reading('d', 1), (err) => { order.push(`first ${err?.code ?? 'ok'}`) }, ...id(1))
  assert.equal(outbox.acceptResend('d', ...id(1), (err) => { order.push(`resend ${err?.code ?? 'ok'}`) }), true)
  assert.equal(outbox.acceptResend('d', id(1)[0], id(1)[1] ^ 1, () => {}), false, 'same ts, other payload: new')
  assert.equal(outbox.acceptResend('e', ...id(1), () => {}), false, 'other device: new')
  assert.equal(order.length, 0, 'nothing acknowledged before the commit')
  outbox.flush()
  assert.deepEqual(order, ['first ok', 'resend ok'])

  // Many queued at once (the queue grows), resends matched anywhere in it.
  const many: string[] = []
  for (let n = 10; n < 50; n++) outbox.appendEvent(reading('d', n), () => {}, ...id(n))
  for (const n of [10, 49, 30]) assert.equal(outbox.acceptResend('d', ...id(n), (err) => { many.push(`${n} ${err?.code ?? 'ok'}`) }), true)
  assert.equal(outbox.acceptResend('d', ...id(50), () => {}), false)
  outbox.flush()
  assert.deepEqual(many, ['10 ok', '30 ok', '49 ok'], 'resends acknowledged in the order of their first copies')
  assert.equal(outbox.acceptResend('d', ...id(49), () => {}), true, 'committed now')

  // Twenty readings stamped with the same millisecond: each one's resend is still recognised.
  const sameMs = (n: number): [number, number] => [5000, payloadHash(Buffer.from(`same ms ${n}`))]
  for (let n = 0; n < 20; n++) outbox.appendEvent(reading('d', n), () => {}, ...sameMs(n))
  outbox.flush()
  assert.deepEqual([0, 16, 17, 19, 20].map((n) => outbox.acceptResend('d', ...sameMs(n), () => {})), [false, true, true, true, false], 'the last K=4 of them, not a new one')

  // A first copy that is refused takes its waiting resends with it: the device will send again.
  outbox.appendEvent(reading('d', 2), (err) => { order.push(`first ${err?.code ?? 'ok'}`) }, ...id(2))
  outbox.acceptResend('d', ...id(2), (err) => { order.push(`resend ${err?.code ?? 'ok'}`) })
  outbox.destroy()
  assert.deepEqual(order.slice(2), ['first GW_ERR_OUTBOX_CLOSED', 'resend GW_ERR_OUTBOX_CLOSED'])

  // After a restart: readings 3..7 committed with a window of 4 remember 4..7 only.
  const again = localOutbox(t, tmp.dir, 4)
  for (let n = 3; n <= 7; n++) again.appendEvent(reading('d', n), () => {}, ...id(n))
  again.flush()
  again.close()
  const reopened = localOutbox(t, tmp.dir, 4)
  const known = (n: number): boolean => reopened.acceptResend('d', ...id(n), () => {})
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7].map(known), [false, false, false, true, true, true, true])
  reopened.close()
})

test('resend: the schema migrates from version 1 on an existing database, keeping its counters', (t) => {
  const tmp = tempDir('gw-resend-m-')
  t.after(() => tmp.cleanup())
  // A version 1 database: today's schema without what versions 2 and 3 added.
  const db = openDb(tmp.dir)
  db.exec('DROP INDEX device_seq_num; ALTER TABLE device_seq DROP COLUMN num; ALTER TABLE events DROP COLUMN dev')
  db.exec('ALTER TABLE device_seq DROP COLUMN recent')
  db.pragma('user_version = 1')
  db.prepare('INSERT INTO device_seq (device_id, last_seq) VALUES (?, ?)').run('old', 41)
  db.close()
  const outbox = localOutbox(t, tmp.dir)
  const seqs: number[] = []
  const ts = 1700000000000
  outbox.appendEvent(reading('old', 1), (err: GatewayError | null, seq?: number) => { assert.equal(err, null); seqs.push(seq!) }, ts, payloadHash(Buffer.from('x')))
  outbox.flush()
  outbox.close()
  assert.deepEqual(seqs, [42], 'the counter carried over')
  const [row] = queryOutbox<{ user_version: number }>(tmp.dir, 'SELECT user_version FROM pragma_user_version')
  assert.equal(row.user_version, SCHEMA_VERSION)
  const [recent] = queryOutbox<{ n: number }>(tmp.dir, 'SELECT length(recent) AS n FROM device_seq WHERE device_id = ?', 'old')
  assert.equal(recent.n, HEADER_BYTES + ENTRY_BYTES, 'one identity persisted beside the counter')
})

test('resend: readings that share a ts and differ only in a counter are told apart (the payload hash spreads them)', () => {
  // A collision with the same ts drops a distinct reading as a resend, so the hash must behave like
  // a random 32-bit one on payloads this alike: about 200k^2 / 2^33 = 4.7 collisions expected.
  const ts = 1_763_000_000_000
  const seen = new Set<number>()
  let collisions = 0
  for (let n = 1; n <= 200_000; n++) {
    const h = payloadHash(Buffer.from(JSON.stringify({ ts, temperature: 21.5 + (n % 100) / 100, humidity: 45.25, counter: n })))
    if (seen.has(h)) collisions++
    else seen.add(h)
  }
  assert.ok(collisions <= 20, `${collisions} hash collisions among 200k payloads that share a ts`)
})
