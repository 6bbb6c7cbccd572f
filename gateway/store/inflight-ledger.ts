// The uplink's bookkeeping in the outbox, written on the writer's connection (the main thread):
// batches recorded as in flight before they are published, and batches the cloud acknowledged
// deleted with their rows and gaps. The uplink thread reads the outbox on a connection of its own
// and asks for these writes (gateway/uplink/uplink.ts): SQLite has one writer at a time, and a
// second one in the uplink thread would make the commits of ingest wait for its transactions.
//
// These transactions are not synced by themselves (the next ingest commit's sync covers them): a
// power cut can lose one, which costs only a re-send that JetStream or the cloud's idempotent apply
// drops.
import type { Statement } from 'better-sqlite3'
import type { Db } from './db.ts'
import { ROW_OVERHEAD_BYTES, type InflightBatch } from './outbox-types.ts'

/** A batch to record, with the number of lane rows it was built from (to see whether shedding took some since). */
export interface BatchToRecord extends InflightBatch { events: number }

export class InflightLedger {
  private readonly stmts: { insert: Statement, delete: Statement, rangeSize: Statement, deleteRange: Statement, deleteGaps: Statement }

  /** released: inside ack()'s transaction, the rows deleted, to count out of the budget's totals. */
  constructor (private readonly db: Db, private readonly released: (events: number, bytes: number) => void) {
    this.stmts = {
      insert: db.prepare('INSERT OR REPLACE INTO uplink_inflight (batch_id, lane, first_id, last_id, gap_first, gap_last) VALUES (?, ?, ?, ?, ?, ?)'),
      delete: db.prepare('DELETE FROM uplink_inflight WHERE batch_id = ?'),
      rangeSize: db.prepare('SELECT count(*) AS n, sum(length(body)) AS bytes FROM events WHERE lane = ? AND id BETWEEN ? AND ?'),
      deleteRange: db.prepare('DELETE FROM events WHERE lane = ? AND id BETWEEN ? AND ?'),
      deleteGaps: db.prepare('DELETE FROM gaps WHERE id BETWEEN ? AND ?'),
    }
  }

  /**
   * Persists batches before they are published, so that a restart re-sends them with the same ids.
   * A batch whose range lost rows since it was read (the disk budget shed them; rows of recorded
   * batches are spared) is not recorded: false at its index, and the uplink builds it again, so
   * that no shed event (already named by a gap record) leaves.
   */
  record (batches: BatchToRecord[]): boolean[] {
    return this.db.transaction(() => batches.map((b) => {
      if (b.lastId >= b.firstId && (this.stmts.rangeSize.get(b.lane, b.firstId, b.lastId) as { n: number }).n !== b.events) return false
      this.stmts.insert.run(b.batchId, b.lane, b.firstId, b.lastId, b.gapFirst, b.gapLast)
      return true
    }))()
  }

  /** The cloud has the batch: deletes its rows, gaps and in-flight record in one transaction; returns what was freed. */
  ack (b: InflightBatch): { events: number, bytes: number } {
    let freed = { events: 0, bytes: 0 }
    this.db.transaction(() => {
      if (b.lastId >= b.firstId) {
        // Count what is really there: shedding may have removed rows of the range meanwhile.
        const c = this.stmts.rangeSize.get(b.lane, b.firstId, b.lastId) as { n: number, bytes: number | null }
        this.stmts.deleteRange.run(b.lane, b.firstId, b.lastId)
        freed = { events: c.n, bytes: (c.bytes ?? 0) + c.n * ROW_OVERHEAD_BYTES }
        this.released(freed.events, freed.bytes)
      }
      if (b.gapLast >= b.gapFirst) this.stmts.deleteGaps.run(b.gapFirst, b.gapLast)
      this.stmts.delete.run(b.batchId)
    })()
    return freed
  }
}
