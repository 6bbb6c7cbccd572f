// @ts-check
// The checkpoint worker thread (started by checkpointer.ts): its own SQLite connection on
// gateway.db, copying committed WAL frames into the database file in PASSIVE mode (it never takes a
// lock that the ingest writer waits for) and syncing it. Plain JavaScript on purpose: a worker
// thread does not inherit the main thread's TypeScript loader, and loading tsx into the worker
// costs about 37 MB of RSS, against about 7 MB for this file. Messages: checkpointer.ts declares
// their types (CheckpointWorkerData in, CheckpointWorkerMessage out).
import Database from 'better-sqlite3'
import { parentPort, workerData } from 'node:worker_threads'

const port = /** @type {import('node:worker_threads').MessagePort} */ (parentPort)
const { file, intervalMs, synchronous } = /** @type {{ file: string, intervalMs: number, synchronous: 'FULL' | 'NORMAL' }} */ (workerData)
const db = new Database(file, { fileMustExist: true })
// A checkpoint syncs the database file unless synchronous is OFF.
db.pragma(`synchronous = ${synchronous}`)
const pageSize = /** @type {number} */ (db.pragma('page_size', { simple: true }))

function checkpoint () {
  const t0 = performance.now()
  try {
    const r = /** @type {Array<{ busy: number, log: number, checkpointed: number }>} */ (db.pragma('wal_checkpoint(PASSIVE)'))[0]
    port.postMessage({ kind: 'checkpoint', ms: performance.now() - t0, walFrames: r.log, checkpointedFrames: r.checkpointed, pageSize })
  } catch (err) {
    const e = /** @type {Error & { code?: string }} */ (err)
    port.postMessage({ kind: 'error', message: e.message, code: e.code })
  }
}

const timer = setInterval(checkpoint, intervalMs)
port.on('message', (/** @type {{ cmd: string }} */ msg) => {
  if (msg.cmd !== 'close') return
  clearInterval(timer)
  checkpoint()
  db.close()
  port.postMessage({ kind: 'closed' })
  port.close()
})
