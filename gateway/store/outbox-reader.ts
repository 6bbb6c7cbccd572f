// The uplink's reads of the outbox: unsent rows by lane, gap records, the batches left in flight by
// the last run. It works on a Db handle of its own choosing (the uplink thread's own connection) and
// learns what it needs of the writer through an OutboxFeed (what is on disk, device names), never
// writing: the writes of the uplink's bookkeeping are the writer's (inflight-ledger.ts).
import type { Statement } from 'better-sqlite3'
import type { Db } from './db.ts'
import type { GapRecord, InflightBatch, Lane, UplinkRow, Watermark } from './outbox-types.ts'

/** What the reader needs from the writer (outbox.ts). */
export interface OutboxFeed {
  /** Highest event and gap ids on disk (synced): the reader never reads past them. */
  durable: () => Watermark
  /**
   * The budget's count of events shed (it only grows) as of the last commit the reader knows of:
   * rows read while it stays the same were not shed since (store/inflight-ledger.ts).
   */
  shedEvents: () => number
  /** The encoded device_id field of the device with number `dev` (device-numbers.ts). */
  deviceField: (dev: number) => Buffer
  /** Runs `listener` after every commit that is on disk (new rows to read). */
  onCommit: (listener: () => void) => void
}

export class OutboxReader {
  /** Mean wire size of the rows readLane last returned, per lane (see there). */
  private readonly rowBytes = [128, 128]
  private readonly stmts: {
    readLane: Statement
    maxId: Statement
    readGaps: Statement
  }

  /** epoch: random id of this database, part of every replication batch id. */
  constructor (private readonly db: Db, readonly epoch: string, private readonly feed: OutboxFeed) {
    this.stmts = {
      readLane: db.prepare('SELECT id, dev, body FROM events WHERE lane = ? AND id > ? AND id <= ? ORDER BY id LIMIT ?'),
      maxId: db.prepare('SELECT max(id) AS id FROM events WHERE lane = ?'),
      readGaps: db.prepare('SELECT id, device_id, from_seq, to_seq, count, reason, ts FROM gaps WHERE id > ? AND id <= ? ORDER BY id LIMIT ?'),
    }
  }

  /** Runs `listener` after every commit that is on disk (the replicator wakes up on it). */
  onCommit (listener: () => void): void {
    this.feed.onCommit(listener)
  }

  /** The encoded device_id field of the device with number `dev`, to put back in front of a row's body. */
  deviceField (dev: number): Buffer {
    return this.feed.deviceField(dev)
  }

  /** The budget's count of events shed, as of the rows the reader reads now (OutboxFeed.shedEvents). */
  shedEvents (): number {
    return this.feed.shedEvents()
  }

  /** Rows of a lane with afterId < id <= uptoId, in id order, at most `limit` rows or about `maxBytes` on the wire. */
  readLane (lane: Lane, afterId: number, uptoId: number, limit: number, maxBytes: number): UplinkRow[] {
    // all() reads rows markedly faster than iterate() but cannot stop at maxBytes: the LIMIT is cut
    // to what maxBytes holds at the mean row size of the lane's last read, so that large rows are
    // not read far past it (a misjudged size costs only a smaller batch or a few rows read twice).
    const cap = Math.min(limit, Math.ceil(maxBytes / this.rowBytes[lane]) + 1)
    // Only what is on disk leaves: a row sent before its sync could reach the cloud and then be lost
    // here in a power cut, and its seq handed out again to another event.
    const rows = this.stmts.readLane.all(lane, afterId, Math.min(uptoId, this.feed.durable().eventId), cap) as UplinkRow[]
    let bytes = 0
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]
      bytes += row.body.length + (row.dev === null ? 0 : this.deviceField(row.dev).length)
      if (bytes >= maxBytes) { rows.length = i + 1; break }
    }
    if (rows.length > 0) this.rowBytes[lane] = Math.max(1, bytes / rows.length)
    return rows
  }

  /** Highest row id of a lane that is on disk (0 when empty). */
  maxId (lane: Lane): number {
    return Math.min((this.stmts.maxId.get(lane) as { id: number | null }).id ?? 0, this.feed.durable().eventId)
  }

  /** Gap records not yet acknowledged by the cloud, after a gap rowid. */
  readGaps (afterId: number, uptoId: number, limit: number): GapRecord[] {
    return (this.stmts.readGaps.all(afterId, Math.min(uptoId, this.feed.durable().gapId), limit) as Array<{ id: number, device_id: string, from_seq: number, to_seq: number, count: number, reason: string, ts: number }>)
      .map((g) => ({ id: g.id, deviceId: g.device_id, fromSeq: g.from_seq, toSeq: g.to_seq, count: g.count, reason: g.reason, tsMs: g.ts }))
  }

  /** Batches published before the last stop and never acknowledged, oldest first. */
  loadInflight (): InflightBatch[] {
    return (this.db.prepare('SELECT batch_id, lane, first_id, last_id, gap_first, gap_last FROM uplink_inflight ORDER BY lane, first_id, gap_first').all() as Array<{ batch_id: string, lane: Lane, first_id: number, last_id: number, gap_first: number, gap_last: number }>)
      .map((r) => ({ batchId: r.batch_id, lane: r.lane, firstId: r.first_id, lastId: r.last_id, gapFirst: r.gap_first, gapLast: r.gap_last }))
  }
}
