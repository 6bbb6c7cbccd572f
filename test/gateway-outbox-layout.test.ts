// The outbox row layout of schema version 3 (gateway/store/stored-event.ts): a row names its device by
// number (events.dev = device_seq.num) and its body leaves device_id out; the uplink puts it back
// without decoding. The cloud must see exactly the events it saw before, rows written by a
// version-2 gateway (device id in the body) must still replicate, and shedding must still record
// its gaps under the right device ids.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import protobuf from 'protobufjs/minimal.js'
import { createLogger, openDb, parseConfig } from '../gateway/index.ts'
import type { Db } from '../gateway/store/db.ts'
import { createMetrics } from '../gateway/metrics.ts'
import { LANE_PRIORITY, LANE_TELEMETRY, Outbox, ROW_OVERHEAD_BYTES, type IncomingControl, type IncomingEvent, type Lane } from '../gateway/store/outbox.ts'
import { encodeBatch } from '../gateway/store/stored-event.ts'
import { CONTROL_DEVICE_ID, STREAMS, v1 } from '../proto/index.ts'
import { assertExactlyOnce, connectDevice, scrapeMetric, startGateway, tempDir, startNats, waitFor, provision, readStream } from '../devkit/index.ts'
import { queryOutbox, readOutbox } from './harness/outbox-reader.ts'
import { v2Database } from './harness/old-schema.ts'

type After = { after: (fn: () => void | Promise<void>) => void }

function localOutbox (t: After, dir: string, outbox: Record<string, unknown> = {}): { outbox: Outbox, db: Db } {
  const cfg = parseConfig({ dataDir: dir, logLevel: 'silent', outbox: { durability: 'normal', ...outbox } })
  const db = openDb(dir, cfg.outbox.durability)
  t.after(() => { if (db.open) db.close() })
  const box = new Outbox(db, cfg.outbox, createLogger('silent', 'test'), createMetrics({ defaultMetrics: false }))
  box.start()
  return { outbox: box, db }
}

const reading = (deviceId: string, n: number, extra: Partial<IncomingEvent> = {}): IncomingEvent => ({
  deviceId, lane: LANE_TELEMETRY, eventTsMs: 1_700_000_000_000 + n, ingestTsMs: 1_700_000_000_500 + n, eventTsFromGateway: false, readings: [{ name: 'n', value: n }], ...extra,
})

const alert = (n: number): IncomingControl => ({ kind: 'alert_raised', alertId: `a-${n}`, severity: 'critical', message: `alert ${n}`, eventTsMs: 1_700_000_000_000 + n, ingestTsMs: 1_700_000_000_000 + n })

/** Appends and commits at once (durability normal: committed means readable by the uplink). */
function commit (outbox: Outbox, items: Array<IncomingEvent | IncomingControl>): number[] {
  const seqs: number[] = []
  for (const it of items) {
    const cb = (err: Error | null, seq?: number): void => { assert.equal(err, null); seqs.push(seq!) }
    if ('deviceId' in it) outbox.appendEvent(it, cb)
    else outbox.appendControl(it, cb)
  }
  outbox.flush()
  assert.equal(seqs.length, items.length, 'every item committed in the flush')
  return seqs
}

/** How version 2 stored an event: the whole TelemetryEvent, device id included. */
const oldTelemetry = (deviceId: string, seq: number): { lane: Lane, body: Uint8Array } => {
  const { lane: _lane, ...ev } = reading(deviceId, seq)
  return { lane: LANE_TELEMETRY, body: v1.TelemetryEvent.encode({ ...ev, seq }).finish() }
}

test('outbox layout: rows name their device by number, and a batch built from them is byte for byte the events encoded whole', (t) => {
  const tmp = tempDir('gw-layout-')
  t.after(() => tmp.cleanup())
  const { outbox, db } = localOutbox(t, tmp.dir)
  const uuid = '3f2b8c1e-9a4d-4f6b-8e2a-7c5d1b0e9f31'
  const long = 'd'.repeat(64)
  // A body over 127 bytes needs a two-byte length in the batch; labels make one.
  const labels = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`label-${i}`, `value-${i}`]))
  const items: IncomingEvent[] = [
    reading('sensor-0001', 1), reading(uuid, 2, { labels }), reading(long, 3, { eventTsFromGateway: true }),
    reading('sensor-0001', 4, { readings: [{ name: 'temperature', value: 21.5 }, { name: 'humidity', value: -0.25 }] }), reading(uuid, 5), reading('sensor-0001', 6),
  ]
  const seqs = commit(outbox, [...items, alert(1), alert(2)])
  assert.deepEqual(seqs, [1, 1, 1, 2, 2, 3, 1, 2])

  // On disk: a number per device (control included), and bodies without device_id.
  const nums = queryOutbox<{ device_id: string, num: number }>(tmp.dir, 'SELECT device_id, num FROM device_seq ORDER BY num')
  assert.deepEqual(nums.map((r) => r.device_id), ['sensor-0001', uuid, long, CONTROL_DEVICE_ID])
  assert.equal(new Set(nums.map((r) => r.num)).size, 4)
  const rows = queryOutbox<{ lane: number, dev: number | null, body: Buffer }>(tmp.dir, 'SELECT lane, dev, body FROM events ORDER BY id')
  for (const r of rows) {
    assert.notEqual(r.dev, null)
    const ev = r.lane === LANE_PRIORITY ? v1.ControlEvent.decode(r.body) : v1.TelemetryEvent.decode(r.body)
    assert.equal(ev.deviceId, '', 'a version-3 body carries no device_id')
  }

  // What the replicator does: the batch header, then every stored row put back on the wire.
  const header = v1.ReplicationBatch.encode({ gatewayId: 'gw-layout', batchId: 'b-1', sentTsMs: 1_700_000_001_000 }).finish()
  const built = (lane: Lane, box: Outbox): Buffer => encodeBatch(header, lane === LANE_PRIORITY ? 6 : 3, box.reader.readLane(lane, 0, Number.MAX_SAFE_INTEGER, 1000, 1 << 20), (dev) => box.reader.deviceField(dev))
  // What the cloud got before version 3: the same header, then each event encoded whole (device id
  // included) and appended as field 3 (telemetry) or 6 (control), as the replicator did.
  const wholeBatch = (field: number, events: Uint8Array[]): Uint8Array => {
    const w = v1.ReplicationBatch.encode({ gatewayId: 'gw-layout', batchId: 'b-1', sentTsMs: 1_700_000_001_000 }) as protobuf.Writer
    for (const e of events) w.uint32((field << 3) | 2).bytes(e)
    return w.finish()
  }
  const expected = wholeBatch(3, items.map(({ lane: _lane, ...ev }, i) => v1.TelemetryEvent.encode({ ...ev, seq: seqs[i] }).finish()))
  const telemetry = built(LANE_TELEMETRY, outbox)
  assert.ok(telemetry.equals(Buffer.from(expected)), 'the telemetry batch differs from the events encoded whole')
  const batch = v1.ReplicationBatch.decode(telemetry)
  assert.deepEqual(batch.events.map((e) => [e.deviceId, Number(e.seq), (e.readings ?? []).map((x) => [x.name, x.value]), Number(e.eventTsMs), e.eventTsFromGateway, Object.keys(e.labels ?? {}).length]),
    items.map((ev, i) => [ev.deviceId, seqs[i], ev.readings.map((x) => [x.name, x.value]), ev.eventTsMs, ev.eventTsFromGateway, Object.keys(ev.labels ?? {}).length]))
  const control = built(LANE_PRIORITY, outbox)
  const expectedControl = wholeBatch(6, [1, 2].map((n) => v1.ControlEvent.encode({ ...alert(n), deviceId: CONTROL_DEVICE_ID, seq: n }).finish()))
  assert.ok(control.equals(Buffer.from(expectedControl)), 'the control batch differs from the events encoded whole')
  assert.deepEqual(v1.ReplicationBatch.decode(control).control.map((c) => [c.deviceId, Number(c.seq), c.alertId]), [[CONTROL_DEVICE_ID, 1, 'a-1'], [CONTROL_DEVICE_ID, 2, 'a-2']])

  // A commit that fails takes the numbers it gave with it: the next commit gives them again, on disk.
  db.exec("CREATE TRIGGER fail_insert BEFORE INSERT ON events WHEN NEW.lane = 1 BEGIN SELECT RAISE(ABORT, 'disk error'); END")
  const refused: Array<string | undefined> = []
  outbox.appendEvent(reading('late-1', 1), (err) => refused.push(err?.code))
  outbox.flush()
  assert.deepEqual(refused, ['GW_ERR_OUTBOX_COMMIT'])
  db.exec('DROP TRIGGER fail_insert')
  assert.deepEqual(commit(outbox, [reading('late-1', 1), reading('late-2', 1)]), [1, 1])
  outbox.close()
  db.close()
  assert.deepEqual(readOutbox(tmp.dir).slice(-2).map((e) => [e.deviceId, e.seq]), [['late-1', 1], ['late-2', 1]])

  // After a restart the dictionary is loaded: same numbers, same bytes; a new device gets a new number.
  const again = localOutbox(t, tmp.dir)
  assert.ok(encodeBatch(header, 3, again.outbox.reader.readLane(LANE_TELEMETRY, 0, Number.MAX_SAFE_INTEGER, items.length, 1 << 20), (dev) => again.outbox.reader.deviceField(dev)).equals(Buffer.from(expected)))
  assert.deepEqual(commit(again.outbox, [reading(uuid, 7), reading('sensor-0002', 1)]), [3, 1])
  again.outbox.close()
  const after = queryOutbox<{ device_id: string, num: number }>(tmp.dir, 'SELECT device_id, num FROM device_seq ORDER BY num')
  assert.equal(new Set(after.map((r) => r.num)).size, after.length, 'a number was given twice')
  assert.deepEqual(readOutbox(tmp.dir).slice(-2).map((e) => [e.deviceId, e.seq]), [[uuid, 3], ['sensor-0002', 1]])
})

test('outbox layout: rows of a version-2 database (device id in the body) replicate unchanged after the migration, beside new rows', { timeout: 60000 }, async (t) => {
  const tmp = tempDir('gw-layout-v2-')
  t.after(() => tmp.cleanup())
  // Version 2 left: old-a 1..4 and old-b 1..3 interleaved, and two control events.
  const oldRows = [oldTelemetry('old-a', 1), oldTelemetry('old-b', 1), oldTelemetry('old-a', 2), oldTelemetry('old-b', 2), oldTelemetry('old-a', 3), oldTelemetry('old-b', 3), oldTelemetry('old-a', 4),
    ...[1, 2].map((n) => ({ lane: LANE_PRIORITY as Lane, body: v1.ControlEvent.encode({ ...alert(n), deviceId: CONTROL_DEVICE_ID, seq: n }).finish() }))]
  v2Database(tmp.dir, oldRows, { 'old-a': 4, 'old-b': 3, [CONTROL_DEVICE_ID]: 2 })

  // Version 3 opens it and adds rows in the new layout: counters continue.
  const local = localOutbox(t, tmp.dir)
  assert.deepEqual(commit(local.outbox, [reading('old-a', 5), reading('new-c', 1), reading('old-a', 6), reading('new-c', 2), alert(3)]), [5, 1, 6, 2, 3])
  local.outbox.close()
  local.db.close()
  assert.deepEqual(queryOutbox<{ v: number }>(tmp.dir, 'SELECT user_version AS v FROM pragma_user_version')[0].v, 3)
  assert.deepEqual(queryOutbox<{ dev: number | null }>(tmp.dir, 'SELECT dev FROM events ORDER BY id').map((r) => r.dev === null), [...oldRows.map(() => true), false, false, false, false, false])

  const nats = await startNats()
  t.after(() => nats.cleanup())
  await provision(nats.url)
  const gw = await startGateway({ uplink: { servers: [nats.url] } }, { dataDir: tmp.dir, keepData: true })
  t.after(() => gw.close())
  await waitFor(() => gw.gateway.outbox.stats().events === 0 && gw.gateway.uplink.stats().inFlight === 0, 'the outbox to drain', 20000)

  const acc = await readStream(nats.url, STREAMS.telemetry.name)
  // Per device: the seqs that arrived, and how often each.
  const once = (...seqs: number[]): number[][] => seqs.map((s) => [s, 1])
  const want: Record<string, number[][]> = { 'gw-test/old-a': once(1, 2, 3, 4, 5, 6), 'gw-test/old-b': once(1, 2, 3), 'gw-test/new-c': once(1, 2) }
  assert.deepEqual(Object.fromEntries([...acc.events].map(([key, seqs]) => [key, [...seqs]])), want)
  // The payload of each event came through: readings.n = seq here.
  assert.deepEqual(Object.fromEntries(acc.ns), Object.fromEntries(Object.entries(want).map(([key, seqs]) => [key, seqs.map(([seq]) => seq)])))

  const nc = await connect({ servers: nats.url })
  t.after(() => nc.close())
  const jsm = await jetstreamManager(nc)
  const info = await jsm.streams.info(STREAMS.events.name)
  const control: Array<[string, number, string]> = []
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(STREAMS.events.name, { seq })
    assert.ok(m, `EVENTS message ${seq} missing`)
    for (const c of v1.ReplicationBatch.decode(m.data).control) control.push([c.deviceId ?? '', Number(c.seq), c.alertId ?? ''])
  }
  assert.deepEqual(control, [1, 2, 3].map((n) => [CONTROL_DEVICE_ID, n, `a-${n}`]))
})

test('outbox layout: shedding old-layout and new-layout rows records each gap under the right device id', (t) => {
  const tmp = tempDir('gw-layout-shed-')
  t.after(() => tmp.cleanup())
  const oldRows = Array.from({ length: 40 }, (_, i) => oldTelemetry(i % 2 === 0 ? 'old-a' : 'old-b', Math.floor(i / 2) + 1))
  v2Database(tmp.dir, oldRows, { 'old-a': 20, 'old-b': 20 })
  const oldBytes = oldRows.reduce((s, r) => s + r.body.length + ROW_OVERHEAD_BYTES, 0)
  // Room for the old rows and a little more: the new ones push all the old rows out, then some of their own.
  const budgetBytes = oldBytes + 100
  const { outbox } = localOutbox(t, tmp.dir, { budgetBytes })
  const fresh: IncomingEvent[] = []
  for (let i = 1; i <= 30; i++) fresh.push(reading('old-a', 20 + i), reading('new-c', i))
  for (const ev of fresh) commit(outbox, [ev])
  const stats = outbox.stats()
  outbox.close()
  assert.ok(stats.bytes <= budgetBytes, `outbox bytes ${stats.bytes} over budget ${budgetBytes}`)

  const kept = readOutbox(tmp.dir)
  const gaps = queryOutbox<{ device_id: string, from_seq: number, to_seq: number, count: number }>(tmp.dir, 'SELECT device_id, from_seq, to_seq, count FROM gaps ORDER BY id')
  assert.deepEqual([...new Set(gaps.map((g) => g.device_id))].sort(), ['new-c', 'old-a', 'old-b'], 'every device that lost events has a gap, and nobody else')
  const last: Record<string, number> = { 'old-a': 50, 'old-b': 20, 'new-c': 30 }
  for (const [deviceId, lastSeq] of Object.entries(last)) {
    const seqs = kept.filter((e) => e.deviceId === deviceId).map((e) => e.seq)
    const covered: number[] = []
    for (const g of gaps.filter((x) => x.device_id === deviceId)) {
      assert.equal(g.count, g.to_seq - g.from_seq + 1)
      for (let s = g.from_seq; s <= g.to_seq; s++) covered.push(s)
    }
    // Gaps cover exactly what is gone: the oldest, then the kept tail up to the last seq.
    assert.deepEqual([...covered, ...seqs].sort((x, y) => x - y), Array.from({ length: lastSeq }, (_, i) => i + 1), deviceId)
  }
  assert.equal(kept.filter((e) => e.deviceId === 'old-b').length, 0, 'old rows go first')
  assert.ok(gaps.some((g) => g.device_id === 'new-c'), 'new-layout rows were shed too')
  assert.equal(kept.length + stats.shedEvents, 100)
})

test('outbox layout: an event naming an unknown device number stops replication with GW_ERR_OUTBOX_CORRUPT, ingest goes on, and once repaired every acknowledged reading reaches the stream exactly once', { timeout: 60000 }, async (t) => {
  const tmp = tempDir('gw-corrupt-')
  t.after(() => tmp.cleanup())
  const anon = { allowAnonymous: true }
  const first = await startGateway({ mqtt: anon }, { dataDir: tmp.dir, keepData: true })
  const dev = await connectDevice(first.ports.mqtt, { clientId: 'dev-c' })
  await dev.publishAsync('devices/dev-c/telemetry', JSON.stringify({ n: 1 }), { qos: 1 })
  await dev.endAsync()
  await first.close()
  // Damage the outbox by hand: the row now names a device number nobody holds.
  const db = openDb(tmp.dir)
  const devC = (db.prepare("SELECT num FROM device_seq WHERE device_id = 'dev-c'").get() as { num: number }).num
  db.prepare('UPDATE events SET dev = 999').run()
  db.close()
  const nats = await startNats()
  t.after(() => nats.cleanup())
  await provision(nats.url)
  const uplink = { servers: [nats.url], reconnectMinMs: 50, reconnectMaxMs: 200 }
  const gw = await startGateway({ mqtt: anon, uplink }, { dataDir: tmp.dir, keepData: true })
  let closed = false
  t.after(() => closed ? undefined : gw.close())
  await waitFor(() => gw.gateway.uplink.lastError.startsWith('corrupt:'), 'replication to stop with the corruption reported', 20000)
  assert.match(gw.gateway.uplink.lastError, /device number 999/)
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_uplink_errors_total', { kind: 'corrupt' }), 1)
  // The gateway is still up: ingest and its PUBACK still work.
  const again = await connectDevice(gw.ports.mqtt, { clientId: 'dev-d' })
  t.after(() => again.end(true))
  const acked = new Map<string, number[]>([['dev-c', [1]], ['dev-d', []]])
  for (let n = 1; n <= 5; n++) {
    await again.publishAsync('devices/dev-d/telemetry', JSON.stringify({ n }), { qos: 1 })
    acked.get('dev-d')!.push(n)
  }
  assert.equal(gw.gateway.outbox.stats().events, 6)

  // Accounting while replication is stopped: nothing reached the stream, and every acknowledged
  // reading is held in the outbox exactly once (dev-c's under the damaged number).
  const stuck = await readStream(nats.url, STREAMS.telemetry.name)
  assert.deepEqual([stuck.batches, stuck.events.size], [0, 0], 'a batch reached the stream past the damaged row')
  const held = readOutbox(tmp.dir, { unknownDevices: 'keep' }).map((e) => [e.deviceId, e.seq, e.readings.n])
  assert.deepEqual(held, [['#999', 1, 1], ...acked.get('dev-d')!.map((n) => ['dev-d', n, n])])

  // Repaired by hand, the outbox replicates: every acknowledged reading is in the stream exactly once.
  await again.endAsync()
  await gw.close()
  closed = true
  const fix = openDb(tmp.dir)
  fix.prepare('UPDATE events SET dev = ? WHERE dev = 999').run(devC)
  fix.close()
  const repaired = await startGateway({ mqtt: anon, uplink }, { dataDir: tmp.dir, keepData: true })
  t.after(() => repaired.close())
  await waitFor(() => repaired.gateway.outbox.stats().events === 0 && repaired.gateway.uplink.stats().inFlight === 0, 'the repaired outbox to drain', 20000)
  assertExactlyOnce(await readStream(nats.url, STREAMS.telemetry.name), 'gw-test', acked)
})
