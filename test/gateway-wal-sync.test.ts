// Durability full without an fsync on the event loop: commits write the WAL, WalSync fsyncs it on
// the thread pool, and only then is anything acknowledged or handed to the uplink.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createLogger, openDb, parseConfig } from '../gateway/index.ts'
import { createMetrics } from '../gateway/metrics.ts'
import { LANE_TELEMETRY, Outbox, type IncomingEvent } from '../gateway/store/outbox.ts'
import { WalSync } from '../gateway/store/wal-sync.ts'
import { tempDir, waitFor } from '../devkit/index.ts'

const reading = (n: number): IncomingEvent => ({ deviceId: 'dev-s', lane: LANE_TELEMETRY, eventTsMs: 1000 + n, ingestTsMs: 1000 + n, eventTsFromGateway: false, readings: [{ name: 'n', value: n }] })

test('wal sync: callbacks run only after an fsync that began after them; those queued meanwhile share the next one', async (t) => {
  const tmp = tempDir('gw-walsync-')
  t.after(() => tmp.cleanup())
  const file = join(tmp.dir, 'x-wal')
  writeFileSync(file, 'frames')
  const syncs: number[] = []
  const sync = new WalSync(file, (ms) => syncs.push(ms))
  const order: string[] = []
  // a starts a sync at once; b and c, queued while it runs, share the next one.
  sync.after(() => order.push('a'))
  sync.after(() => order.push('b'))
  sync.after(() => order.push('c'))
  assert.equal(order.length, 0, 'a callback ran before its fsync returned')
  await waitFor(() => order.length === 3, 'the syncs', 5000)
  assert.deepEqual([...order], ['a', 'b', 'c'])
  assert.equal(syncs.length, 2, `${syncs.length} syncs for a, then b and c together`)
  // Shutdown: flushSync runs what waits, on this thread.
  sync.after(() => order.push('f'))
  sync.close()
  assert.equal([...order].at(-1), 'f')
  let refused: Error | null = null
  sync.after((err) => { refused = err })
  assert.match(String(refused), /closed/)
})

test('outbox (durability full): a commit is neither acknowledged nor readable by the uplink before its WAL sync', async (t) => {
  const tmp = tempDir('gw-walsync-o-')
  t.after(() => tmp.cleanup())
  const cfg = parseConfig({ dataDir: tmp.dir, logLevel: 'silent' })
  assert.equal(cfg.outbox.durability, 'full')
  const db = openDb(tmp.dir, cfg.outbox.durability)
  t.after(() => { if (db.open) db.close() })
  const metrics = createMetrics({ defaultMetrics: false })
  const outbox = new Outbox(db, cfg.outbox, createLogger('silent', 'test'), metrics)
  outbox.start()
  // The connection itself does not sync in its commits; the outbox does, apart.
  assert.equal(db.pragma('synchronous', { simple: true }), 1)
  const acked: number[] = []
  for (let n = 1; n <= 3; n++) outbox.appendEvent(reading(n), (err, seq) => { assert.equal(err, null); acked.push(seq!) })
  outbox.flush()
  // Committed (another connection could count the rows) but not yet synced.
  assert.equal((db.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n, 3)
  assert.equal(acked.length, 0, 'acknowledged before the WAL sync')
  assert.equal(outbox.reader.readLane(LANE_TELEMETRY, 0, Number.MAX_SAFE_INTEGER, 100, 1 << 20).length, 0, 'the uplink could read an unsynced row')
  assert.equal(outbox.reader.maxId(LANE_TELEMETRY), 0)
  await waitFor(() => acked.length === 3, 'the WAL sync', 5000)
  assert.deepEqual([...acked], [1, 2, 3])
  assert.equal(outbox.reader.readLane(LANE_TELEMETRY, 0, Number.MAX_SAFE_INTEGER, 100, 1 << 20).length, 3)
  assert.equal((await metrics.walSyncSeconds.get()).values.find((v) => v.metricName === 'gateway_outbox_wal_sync_seconds_count')?.value, 1)
  // close() syncs what is left on this thread: its callbacks have run when it returns.
  outbox.appendEvent(reading(4), (err, seq) => { assert.equal(err, null); acked.push(seq!) })
  outbox.close()
  assert.deepEqual([...acked], [1, 2, 3, 4])
})
