// What the outbox's writer (outbox.ts) does once at start: load the state the last run left, and,
// with durability full, make it durable before any of it is acknowledged or replicated.
//
// A SIGKILL ends the process, not the kernel's buffers: the last commits of the last run may be in
// the page cache only (with durability full the WAL is fsynced after each commit, but the process
// can die between the commit and its fsync; checkpoints write the database file). Taken as durable
// at once, they would replicate, and a resend of one of them would get its PUBACK, though a power
// cut could still erase them (and their sequence numbers be handed out again). So start() syncs the
// WAL, the database file and its directory (the WAL's entry) on the thread pool first.
import { dirname } from 'node:path'
import type { Db } from './db.ts'
import type { DeviceNumbers } from './device-numbers.ts'
import { GatewayError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { ResendWindows } from './resend-window.ts'
import type { Watermark } from './outbox-types.ts'
import type { WalSync } from './wal-sync.ts'

/** Loads every device's counter, resend window and number; returns the highest event and gap ids. */
export function loadOutbox (db: Db, into: { lastSeq: Map<string, number>, resends: ResendWindows, devices: DeviceNumbers }): Watermark {
  for (const row of db.prepare('SELECT device_id, last_seq, recent, num FROM device_seq').iterate() as Iterable<{ device_id: string, last_seq: number, recent: Buffer | null, num: number | null }>) {
    into.lastSeq.set(row.device_id, row.last_seq)
    if (row.recent !== null) into.resends.load(row.device_id, row.recent)
    if (row.num !== null) into.devices.load(row.device_id, row.num)
  }
  return {
    eventId: (db.prepare('SELECT max(id) AS id FROM events').get() as { id: number | null }).id ?? 0,
    gapId: (db.prepare('SELECT max(id) AS id FROM gaps').get() as { id: number | null }).id ?? 0,
  }
}

/**
 * The start-up sync: onSynced runs (and the promise resolves) once the WAL, the database file and
 * its directory are on disk. A failed sync rejects (logged here, so never unhandled); the walSync
 * then retries those files with every later sync, and runs no later callback before one succeeds.
 */
export function syncAtStart (walSync: WalSync, db: Db, log: Logger, onSynced: () => void): Promise<void> {
  const t0 = performance.now()
  const synced = new Promise<void>((resolve, reject) => walSync.syncAtStart([db.name, dirname(db.name)], (err) => {
    if (err) return reject(new GatewayError('GW_ERR_OUTBOX_COMMIT', 'the outbox could not be synced to disk at start', { cause: err }))
    log.info({ durationMs: Math.round(performance.now() - t0) }, 'outbox synced to disk at start: what the last run left is durable')
    onSynced()
    resolve()
  }))
  synced.catch((err: Error) => log.error({ err }, 'outbox start-up sync failed; nothing loaded is acknowledged or replicated before a sync succeeds'))
  return synced
}
