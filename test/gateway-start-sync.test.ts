// Promise 1 across a restart: what the last run left (after a SIGKILL, possibly in the page cache
// only) is durable only once the gateway has synced the WAL, the database file and its directory.
// Before that nothing of it is handed to the uplink, and a resend of a reading in it is not
// acknowledged. Syncs are watched through an injected fsync.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { fsync } from 'node:fs'
import { basename } from 'node:path'
import { createLogger, openDb, parseConfig, type FsyncFn } from '../gateway/index.ts'
import { createMetrics } from '../gateway/metrics.ts'
import { LANE_TELEMETRY, Outbox, type IncomingEvent } from '../gateway/store/outbox.ts'
import { payloadHash } from '../gateway/store/resend-window.ts'
import { deferrer } from './harness/cloud.ts'
import { connectDevice, spawnGateway, startGateway, tempDir, waitFor } from '../devkit/index.ts'
import { readOutbox } from './harness/outbox-reader.ts'

const reading = (n: number): IncomingEvent => ({ deviceId: 'dev-r', lane: LANE_TELEMETRY, eventTsMs: 1000 + n, ingestTsMs: 1000 + n, eventTsFromGateway: false, readings: [{ name: 'n', value: n }] })
const identity = (n: number): [number, number] => [1000 + n, payloadHash(Buffer.from(`payload ${n}`))]

function outboxOn (t: { after: (fn: () => void) => void }, dir: string, fsyncFn?: FsyncFn): Outbox {
  const cfg = parseConfig({ dataDir: dir, logLevel: 'silent' })
  const db = openDb(dir, cfg.outbox.durability)
  t.after(() => { if (db.open) db.close() })
  const outbox = new Outbox(db, cfg.outbox, createLogger('silent', 'test'), createMetrics({ defaultMetrics: false }), { fsync: fsyncFn })
  outbox.start()
  return outbox
}

test('start-up sync (durability full): rows of the last run are neither readable by the uplink nor their resends acknowledged before the WAL, database file and directory are synced', async (t) => {
  const tmp = tempDir('gw-startsync-')
  t.after(() => tmp.cleanup())
  const first = outboxOn(t, tmp.dir)
  await first.started()
  const acked: number[] = []
  for (let n = 1; n <= 3; n++) first.appendEvent(reading(n), (err, seq) => { assert.equal(err, null); acked.push(seq!) }, ...identity(n))
  first.flush()
  await waitFor(() => acked.length === 3, 'the first run\'s commits', 5000)
  first.close()

  // The restart, with every sync held back until the test lets it run.
  const held: Array<() => void> = []
  const files: string[] = []
  const holding: FsyncFn = (fd, file, cb) => { files.push(basename(file)); held.push(() => fsync(fd, cb)) }
  const outbox = outboxOn(t, tmp.dir, holding)
  let started = false
  void outbox.started().then(() => { started = true })
  assert.deepEqual([...files].sort(), [basename(tmp.dir), 'gateway.db', 'gateway.db-wal'].sort(), 'start() syncs the WAL, the database file and its directory')
  assert.equal(outbox.reader.maxId(LANE_TELEMETRY), 0, 'the uplink sees a row before the start-up sync')
  assert.equal(outbox.reader.readLane(LANE_TELEMETRY, 0, Number.MAX_SAFE_INTEGER, 100, 1 << 20).length, 0, 'the uplink could read an unsynced row')
  const resent: Array<string | null> = []
  assert.equal(outbox.acceptResend('dev-r', ...identity(2), (err) => { resent.push(err?.code ?? null) }), true, 'a resend of a loaded reading')
  // Let the event loop run: nothing may be answered while the sync is held.
  await new Promise((resolve) => setImmediate(resolve))
  assert.deepEqual(resent, [], 'a resend of a loaded reading was acknowledged before the start-up sync')
  assert.equal(started, false)

  // Release the syncs (the start-up one, then whatever queued behind it) as they come.
  const release = setInterval(() => { for (const run of held.splice(0)) run() }, 5)
  t.after(() => clearInterval(release))
  await outbox.started()
  assert.equal(outbox.reader.maxId(LANE_TELEMETRY), 3)
  assert.equal(outbox.reader.readLane(LANE_TELEMETRY, 0, Number.MAX_SAFE_INTEGER, 100, 1 << 20).length, 3)
  await waitFor(() => resent.length === 1, 'the resend\'s PUBACK after the start-up sync', 5000)
  assert.deepEqual(resent, [null])
  outbox.close()
})

test('start-up sync: after a SIGKILL, a device\'s resend of a reading committed before it gets its PUBACK only after the restarted gateway synced its files', { timeout: 60000 }, async (t) => {
  const defer = deferrer(t)
  const tmp = tempDir('gw-startsync-k-')
  defer(() => tmp.cleanup())
  const child = await spawnGateway(tmp.dir, ['mqtt.allowAnonymous=true'])
  defer(() => child.kill('SIGKILL'))
  const payload = (n: number): string => JSON.stringify({ ts: Date.now() - 1000 + n, n, temperature: 20 + n })
  const sent = [1, 2, 3].map(payload)
  const device = await connectDevice(child.ports.mqtt, { clientId: 'dev-k' })
  for (const p of sent) await device.publishAsync('devices/dev-k/telemetry', p, { qos: 1 })
  device.end(true)
  await child.kill('SIGKILL')

  // What happened, in order: each file's sync returning, and the PUBACK of the resend.
  const events: string[] = []
  const watching: FsyncFn = (fd, file, cb) => fsync(fd, (err) => { events.push(`synced ${basename(file)}`); cb(err) })
  const gw = await startGateway({ mqtt: { allowAnonymous: true } }, { dataDir: tmp.dir, keepData: true, fsync: watching })
  defer(() => gw.close())
  const again = await connectDevice(gw.ports.mqtt, { clientId: 'dev-k' })
  defer(() => again.endAsync(true))
  await again.publishAsync('devices/dev-k/telemetry', sent[1], { qos: 1 })
  events.push('puback')
  const puback = events.indexOf('puback')
  for (const f of ['gateway.db-wal', 'gateway.db', basename(tmp.dir)]) {
    const synced = events.indexOf(`synced ${f}`)
    assert.ok(synced >= 0 && synced < puback, `${f} synced before the resend's PUBACK: ${events.join(', ')}`)
  }
  assert.deepEqual(readOutbox(tmp.dir).map((e) => [e.deviceId, e.seq, e.readings.n]), [['dev-k', 1, 1], ['dev-k', 2, 2], ['dev-k', 3, 3]], 'the resend was recognised, not stored again')
})
