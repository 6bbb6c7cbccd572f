// Promise 5, the disk budget: the bytes it counts (each row's body plus ROW_OVERHEAD_BYTES) must be
// what the rows cost on disk, or a full budget is not the disk it promises. Measured against
// SQLite's own page accounting (the dbstat table: pages of the events table), within 2%.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createLogger, openDb, parseConfig } from '../gateway/index.ts'
import { createMetrics } from '../gateway/metrics.ts'
import { LANE_PRIORITY, LANE_TELEMETRY, Outbox, ROW_OVERHEAD_BYTES, type Lane } from '../gateway/store/outbox.ts'
import { decodeStored } from '../gateway/store/outbox-types.ts'
import type { Db } from '../gateway/store/db.ts'
import { tempDir } from '../devkit/index.ts'

const N = 20_000

function openOutbox (t: { after: (fn: () => void) => void }, dir: string): { db: Db, outbox: Outbox } {
  const cfg = parseConfig({ dataDir: dir, logLevel: 'silent', outbox: { durability: 'normal' } })
  const db = openDb(dir, cfg.outbox.durability)
  t.after(() => { if (db.open) db.close() })
  const outbox = new Outbox(db, cfg.outbox, createLogger('silent', 'test'), createMetrics({ defaultMetrics: false }))
  outbox.start()
  return { db, outbox }
}

/** N readings of two values from `devices` devices, committed in groups of 1000. */
function fill (outbox: Outbox, devices: number): void {
  const t0 = 1_765_000_000_000
  for (let i = 0; i < N; i++) {
    outbox.appendEvent({ deviceId: `sensor-${i % devices}`, lane: LANE_TELEMETRY, eventTsMs: t0 + i, ingestTsMs: t0 + i, eventTsFromGateway: false, readings: [{ name: 'temperature', value: 20 + (i % 97) / 7 }, { name: 'humidity', value: 40 + (i % 89) / 3 }] }, (err) => { assert.equal(err, null) })
    if (i % 1000 === 999) outbox.flush()
  }
  outbox.flush()
}

/** Bytes of the pages SQLite uses for the events table and its index. */
const pagesUsed = (db: Db): number => (db.prepare("SELECT sum(pgsize) AS b FROM dbstat WHERE name IN ('events', 'events_priority')").get() as { b: number }).b

function assertWithin2Percent (counted: number, onDisk: number, what: string): void {
  const off = counted / onDisk - 1
  assert.ok(Math.abs(off) <= 0.02, `${what}: the budget counts ${counted} bytes, the pages hold ${onDisk} (${(off * 100).toFixed(1)}%)`)
}

test('budget: the bytes counted against the budget match the pages SQLite uses for the events (dbstat), within 2%', (t) => {
  // A young outbox (small row ids) of 1000 devices, and one that has run a while: row ids past 2^21
  // take a byte more each.
  for (const { devices, firstId } of [{ devices: 1000, firstId: 0 }, { devices: 100, firstId: 3_000_000 }]) {
    const tmp = tempDir('gw-budget-')
    t.after(() => tmp.cleanup())
    const { db, outbox } = openOutbox(t, tmp.dir)
    if (firstId > 0) db.prepare("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)").run(firstId)
    fill(outbox, devices)
    assert.equal(outbox.stats().events, N)
    assertWithin2Percent(outbox.stats().bytes, pagesUsed(db), `${devices} devices, ids from ${firstId}`)
    outbox.close()
  }
})

test('budget: a total counted with the old overhead (12 bytes a row) is recounted at start, once, and matches dbstat within 2%', (t) => {
  const tmp = tempDir('gw-budget-old-')
  t.after(() => tmp.cleanup())
  const first = openOutbox(t, tmp.dir)
  first.db.prepare("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)").run(3_000_000)
  fill(first.outbox, 100)
  first.outbox.close()
  // As the gateway left it before the overhead was measured again: 12 bytes a row, and no record of it.
  first.db.exec('ALTER TABLE outbox_state DROP COLUMN row_overhead')
  first.db.exec('UPDATE outbox_state SET bytes = (SELECT sum(length(body)) + 12 * count(*) FROM events) WHERE id = 1')
  const body = (first.db.prepare('SELECT sum(length(body)) AS b FROM events').get() as { b: number }).b
  first.db.close()

  for (let start = 1; start <= 2; start++) {
    const { db, outbox } = openOutbox(t, tmp.dir)
    assert.equal(outbox.stats().bytes, body + N * ROW_OVERHEAD_BYTES, `start ${start}: every row counted with today's overhead`)
    assert.deepEqual(db.prepare('SELECT events, bytes, row_overhead FROM outbox_state').get(), { events: N, bytes: body + N * ROW_OVERHEAD_BYTES, row_overhead: ROW_OVERHEAD_BYTES })
    assertWithin2Percent(outbox.stats().bytes, pagesUsed(db), `start ${start}`)
    // Releasing every row takes the total back to 0: rows are counted out with the same figure.
    const all = outbox.reader.readLane(LANE_TELEMETRY, 0, Number.MAX_SAFE_INTEGER, N, Number.MAX_SAFE_INTEGER)
    if (start === 2) {
      const weight = all.reduce((sum, r) => sum + r.body.length + ROW_OVERHEAD_BYTES, 0)
      outbox.ledger.ack({ batchId: 'all', lane: LANE_TELEMETRY, firstId: all[0].id, lastId: all.at(-1)!.id, gapFirst: 1, gapLast: 0, events: all.length, bytes: weight })
      assert.deepEqual(outbox.stats().bytes, 0)
    }
    outbox.close()
    db.close()
  }
})

test('budget: shedding spares rows of a batch in flight and records one gap per run of consecutive seqs, so no gap names a seq the cloud gets; a batch read before a shed is refused by the ledger until read again', (t) => {
  const tmp = tempDir('gw-budget-inflight-')
  t.after(() => tmp.cleanup())
  const cfg = parseConfig({ dataDir: tmp.dir, logLevel: 'silent', outbox: { durability: 'normal', budgetBytes: 40_000 } })
  const db = openDb(tmp.dir, cfg.outbox.durability)
  t.after(() => { if (db.open) db.close() })
  const outbox = new Outbox(db, cfg.outbox, createLogger('silent', 'test'), createMetrics({ defaultMetrics: false }))
  outbox.start()
  const t0 = 1_765_000_000_000
  let i = 0
  const append = (lane: Lane): void => {
    outbox.appendEvent({ deviceId: 'dev-a', lane, eventTsMs: t0 + i, ingestTsMs: t0 + i, eventTsFromGateway: false, readings: [{ name: 'temperature', value: 20 + (i % 97) / 7 }] }, (err) => { assert.equal(err, null) })
    i++
    outbox.flush()
  }
  // 100 readings, one of them an alarm in the priority lane (seq 50): the telemetry around it is two runs.
  for (let n = 1; n <= 100; n++) append(n === 50 ? LANE_PRIORITY : LANE_TELEMETRY)
  // The uplink has published readings 11-30 and waits for the ack.
  const rows = outbox.reader.readLane(LANE_TELEMETRY, 0, Number.MAX_SAFE_INTEGER, 100, Number.MAX_SAFE_INTEGER)
  const inflight = rows.slice(10, 30)
  const shedAtRead = outbox.reader.shedEvents()
  assert.deepEqual(outbox.ledger.record([{ batchId: 'b-1', lane: LANE_TELEMETRY, firstId: inflight[0].id, lastId: inflight.at(-1)!.id, gapFirst: 1, gapLast: 0, events: inflight.length, shedSeen: shedAtRead }]), [true])
  // The uplink thread has also read readings 31-40 for its next batch, not yet recorded.
  const next = rows.slice(30, 40)
  // Keep appending until well past the budget: the oldest telemetry goes, the batch in flight stays.
  while (outbox.stats().shedEvents < 150) append(LANE_TELEMETRY)
  // The batch read before the shedding is refused: sent as read, it would carry seqs a gap record names.
  const stale = { batchId: 'b-2', lane: LANE_TELEMETRY, firstId: next[0].id, lastId: next.at(-1)!.id, gapFirst: 1, gapLast: 0, events: next.length, shedSeen: shedAtRead } as const
  assert.deepEqual(outbox.ledger.record([stale]), [false])
  assert.equal((db.prepare('SELECT count(*) AS n FROM uplink_inflight WHERE batch_id = ?').get('b-2') as { n: number }).n, 0)
  // Read again, it holds what is left of its range and is recorded.
  const left = outbox.reader.readLane(LANE_TELEMETRY, stale.firstId - 1, stale.lastId, 100, Number.MAX_SAFE_INTEGER)
  assert.ok(left.length < next.length)
  assert.deepEqual(outbox.ledger.record([{ ...stale, events: left.length, shedSeen: outbox.reader.shedEvents() }]), [true])

  const seqOf = (lane: Lane, body: Buffer): number => Number(decodeStored(lane, body).seq)
  const kept = new Set(db.prepare('SELECT lane, body FROM events').all().map((r) => { const row = r as { lane: Lane, body: Buffer }; return seqOf(row.lane, row.body) }))
  for (const r of inflight) assert.ok(kept.has(seqOf(LANE_TELEMETRY, r.body)), `seq ${seqOf(LANE_TELEMETRY, r.body)} was in flight and was shed`)
  assert.ok(kept.has(50), 'the priority record was shed for telemetry')
  const gaps = outbox.reader.readGaps(0, Number.MAX_SAFE_INTEGER, 1000)
  const covered = new Set<number>()
  for (const g of gaps) {
    assert.equal(g.deviceId, 'dev-a')
    assert.equal(g.count, g.toSeq - g.fromSeq + 1, 'a gap counts every seq of its range')
    for (let s = g.fromSeq; s <= g.toSeq; s++) {
      assert.ok(!kept.has(s), `gap ${g.fromSeq}-${g.toSeq} names seq ${s}, which is still to be delivered`)
      assert.ok(!covered.has(s), `seq ${s} is named by two gaps`)
      covered.add(s)
    }
  }
  // Every seq handed out is either still in the outbox or named by exactly one gap.
  assert.equal(covered.size, outbox.stats().shedEvents)
  for (let s = 1; s <= outbox.lastSeqOf('dev-a'); s++) assert.ok(kept.has(s) !== covered.has(s), `seq ${s}: kept ${kept.has(s)}, named by a gap ${covered.has(s)}`)

  // The ack releases what the range holds: a batch that misstates its rows (it never should) is counted as the range is.
  const before = outbox.stats()
  const weight = inflight.reduce((sum, r) => sum + r.body.length + ROW_OVERHEAD_BYTES, 0)
  assert.deepEqual(outbox.ledger.ack({ batchId: 'b-1', lane: LANE_TELEMETRY, firstId: inflight[0].id, lastId: inflight.at(-1)!.id, gapFirst: 1, gapLast: 0, events: inflight.length + 1, bytes: 1 }), { events: inflight.length, bytes: weight })
  assert.deepEqual([outbox.stats().events, outbox.stats().bytes], [before.events - inflight.length, before.bytes - weight])
  assert.equal((db.prepare('SELECT count(*) AS n FROM uplink_inflight WHERE batch_id = ?').get('b-1') as { n: number }).n, 0)
  outbox.close()
})
