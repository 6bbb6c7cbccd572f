import assert from 'node:assert/strict'
import { test } from 'node:test'
import Database from 'better-sqlite3'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { LANE_PRIORITY } from '../gateway/index.ts'
import { connectDevice, scrapeMetric, startGateway, tempDir, waitFor } from '../devkit/index.ts'
import { loadDevice } from './harness/load.ts'
import { followOutbox, queryOutbox, readOutbox } from './harness/outbox-reader.ts'

const ANON = { mqtt: { allowAnonymous: true } }

test('outbox: PUBACK never precedes the commit of its event', async (t) => {
  const gw = await startGateway(ANON)
  t.after(() => gw.close())
  const client = await connectDevice(gw.ports.mqtt, { clientId: 'dev-a' })
  t.after(() => client.end(true))
  // A second, independent connection sees only what is committed.
  const auditor = new Database(join(gw.dataDir, 'gateway.db'), { readonly: true })
  t.after(() => auditor.close())
  const count = auditor.prepare('SELECT count(*) AS n FROM events')
  // A third, also independent, follows the committed rows: each PUBACK's own reading (by its n)
  // must be readable there when the PUBACK arrives, not merely as many rows as PUBACKs.
  const follower = followOutbox(gw.dataDir)
  t.after(() => follower.close())
  const committed = new Map<number, number>()
  const early: number[] = []
  let acked = 0
  let violations = 0
  const total = 3000
  const window = 200
  let sent = 0
  await new Promise<void>((resolve, reject) => {
    const sendOne = (): void => {
      const n = sent++
      client.publish('devices/dev-a/telemetry', JSON.stringify({ n }), { qos: 1 }, (err) => {
        if (err) return reject(err)
        acked++
        if ((count.get() as { n: number }).n < acked) violations++
        for (const e of follower.next()) committed.set(e.readings.n, (committed.get(e.readings.n) ?? 0) + 1)
        if (!committed.has(n)) early.push(n)
        if (acked === total) resolve()
        else if (sent < total) sendOne()
      })
    }
    for (let i = 0; i < window; i++) sendOne()
  })
  assert.equal(violations, 0, 'a PUBACK arrived before its event was committed')
  assert.deepEqual(early.slice(0, 20), [], `${early.length} PUBACKs arrived before their own reading was readable in the outbox`)
  assert.equal((count.get() as { n: number }).n, total)
  // Every reading committed exactly once, and nothing else.
  for (const e of follower.next()) committed.set(e.readings.n, (committed.get(e.readings.n) ?? 0) + 1)
  assert.deepEqual([...committed].filter(([, c]) => c !== 1), [], 'a reading was stored more than once')
  assert.deepEqual([...committed.keys()].sort((a, b) => a - b), Array.from({ length: total }, (_, i) => i))
})

test('outbox: sequence numbers continue across restarts without reuse', async (t) => {
  const tmp = tempDir()
  t.after(() => tmp.cleanup())
  for (let round = 0; round < 3; round++) {
    const gw = await startGateway(ANON, { dataDir: tmp.dir, keepData: true })
    const client = await connectDevice(gw.ports.mqtt, { clientId: 'dev-s' })
    for (let i = 0; i < 10; i++) await client.publishAsync('devices/dev-s/telemetry', JSON.stringify({ round, i }), { qos: 1 })
    await client.endAsync()
    await gw.close()
  }
  const seqs = readOutbox(tmp.dir).map((e) => e.seq)
  assert.deepEqual(seqs, Array.from({ length: 30 }, (_, i) => i + 1))
})

test('outbox: over budget, shed-oldest drops the oldest routine telemetry first and records the gap', async (t) => {
  const budgetBytes = 20000
  const gw = await startGateway({ ...ANON, outbox: { budgetBytes } })
  t.after(() => gw.close())
  // Two priority events (as decisions/alerts will be) go in first: the oldest rows of all.
  for (let i = 0; i < 2; i++) {
    await new Promise<void>((resolve, reject) => gw.gateway.outbox.appendControl({
      kind: 'alert_raised', alertId: `a-${i}`, severity: 'critical', eventTsMs: Date.now(), ingestTsMs: Date.now(),
    }, (err) => err ? reject(err) : resolve()))
  }
  const a = await connectDevice(gw.ports.mqtt, { clientId: 'dev-a' })
  const b = await connectDevice(gw.ports.mqtt, { clientId: 'dev-b' })
  t.after(() => { a.end(true); b.end(true) })
  const perDevice = 300
  for (let i = 0; i < perDevice; i++) {
    await Promise.all([
      a.publishAsync('devices/dev-a/telemetry', JSON.stringify({ i, temperature: 20.5 }), { qos: 1 }),
      b.publishAsync('devices/dev-b/telemetry', JSON.stringify({ i, humidity: 40.25 }), { qos: 1 }),
    ])
  }
  const stats = gw.gateway.outbox.stats()
  assert.ok(stats.bytes <= budgetBytes, `outbox bytes ${stats.bytes} over budget ${budgetBytes}`)
  assert.ok(stats.shedEvents > 0, 'nothing was shed')
  const events = readOutbox(gw.dataDir)
  assert.equal(events.filter((e) => e.lane === LANE_PRIORITY).length, 2, 'priority events must outlive routine telemetry')
  const gaps = queryOutbox<{ device_id: string, from_seq: number, to_seq: number, count: number, reason: string }>(gw.dataDir, 'SELECT device_id, from_seq, to_seq, count, reason FROM gaps')
  for (const dev of ['dev-a', 'dev-b']) {
    const kept = events.filter((e) => e.deviceId === dev).map((e) => e.seq)
    // What survives is the newest, contiguous tail; everything before it is covered by gap records.
    assert.equal(kept[kept.length - 1], perDevice)
    assert.deepEqual(kept, Array.from({ length: kept.length }, (_, i) => perDevice - kept.length + 1 + i))
    const covered = new Set<number>()
    for (const g of gaps.filter((x) => x.device_id === dev)) {
      assert.equal(g.reason, 'shed')
      assert.equal(g.count, g.to_seq - g.from_seq + 1)
      for (let s = g.from_seq; s <= g.to_seq; s++) covered.add(s)
    }
    assert.deepEqual([...covered].sort((x, y) => x - y), Array.from({ length: perDevice - kept.length }, (_, i) => i + 1))
  }
  const shedMetric = (await gw.gateway.metrics.shed.get()).values.reduce((s, v) => s + v.value, 0)
  assert.equal(shedMetric, stats.shedEvents)
  assert.equal(stats.shedEvents + events.length, 2 + 2 * perDevice)
})

test('outbox: over budget, reject-new refuses new telemetry and keeps what it has', async (t) => {
  const budgetBytes = 4000
  const gw = await startGateway({ ...ANON, outbox: { budgetBytes, overflow: 'reject-new' } })
  t.after(() => gw.close())
  const a = await connectDevice(gw.ports.mqtt, { clientId: 'dev-r' })
  t.after(() => a.end(true))
  let acked = 0
  const closed = new Promise<void>((resolve) => a.once('close', () => resolve()))
  for (let i = 0; i < 200 && a.connected; i++) {
    const ok = await Promise.race([a.publishAsync('devices/dev-r/telemetry', JSON.stringify({ i }), { qos: 1 }).then(() => true), closed.then(() => false)])
    if (!ok) break
    acked++
  }
  await waitFor(async () => (await gw.gateway.metrics.rejected.get()).values.find((v) => v.labels.reason === 'outbox_full')?.value, 'outbox_full to be counted')
  const events = readOutbox(gw.dataDir)
  assert.equal(events.length, acked, 'every acknowledged event is stored, nothing else')
  assert.ok(acked > 0 && acked < 200)
  assert.equal(gw.gateway.outbox.stats().shedEvents, 0)
  assert.deepEqual(events.map((e) => e.seq), Array.from({ length: acked }, (_, i) => i + 1))
})

test('outbox: WAL checkpoints run in the checkpoint worker and the WAL stays bounded under continuous ingest', async (t) => {
  const maxWalBytes = 256 * 1024
  const gw = await startGateway({ ...ANON, outbox: { checkpointIntervalMs: 50, maxWalBytes } })
  t.after(() => gw.close())
  // The ingest connection never checkpoints by itself (SQLite's automatic checkpoint is off).
  assert.equal(gw.gateway.db.pragma('wal_autocheckpoint', { simple: true }), 0)
  const wal = join(gw.dataDir, 'gateway.db-wal')
  let maxWal = 0
  const sampler = setInterval(() => { try { maxWal = Math.max(maxWal, statSync(wal).size) } catch { /* not created yet */ } }, 10)
  t.after(() => clearInterval(sampler))
  const devices = ['dev-w1', 'dev-w2']
  const perDevice = 15000
  await Promise.all(devices.map(async (id) => {
    const client = await connectDevice(gw.ports.mqtt, { clientId: id })
    try {
      const next = { n: 0 }
      const acked = new Set<number>()
      const load = loadDevice(client, id, next, acked, { window: 200 })
      await waitFor(() => acked.size >= perDevice, `${perDevice} acks from ${id}`, 120_000)
      load.stop()
    } finally {
      await client.endAsync()
    }
  }))
  clearInterval(sampler)
  const checkpoints = await scrapeMetric(gw.ports.http!, 'gateway_outbox_checkpoint_seconds_count')
  assert.ok(checkpoints > 0, 'the checkpoint worker reported no checkpoint')
  // 30k events write well over 8 MB of WAL frames: without checkpoints the WAL would hold them all.
  // The worker (and, past maxWalBytes, one catch-up checkpoint on the ingest connection) keep it near the limit.
  assert.ok(maxWal < 4 * 1024 * 1024, `the WAL grew to ${maxWal} bytes (limit ${maxWalBytes})`)
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_outbox_checkpoint_failures_total'), 0)
})
