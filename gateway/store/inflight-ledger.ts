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

/**
 * A batch to record, with the number of lane rows it was built from and the budget's shedEvents as
 * the reader knew it when it read them (to see whether shedding took some since).
 */
export interface BatchToRecord extends InflightBatch { events: number, shedSeen: number }

/** An acknowledged batch, with what its rows weigh in the budget (their bodies plus ROW_OVERHEAD_BYTES each), as read when it was built. */
export interface AckedBatch extends InflightBatch { events: number, bytes: number }

/** Thrown inside ack()'s fast path to roll it back when the range does not hold what the batch says. */
class RangeChanged extends Error {}

export class InflightLedger {
  private readonly stmts: { insert: Statement, delete: Statement, rangeSize: Statement, deleteRange: Statement, deleteGaps: Statement }

  /**
   * released: inside ack()'s transaction, the rows deleted, to count out of the budget's totals.
   * shedEvents: the budget's running count of events shed (it only grows), to see whether any
   * shedding happened since a batch was read.
   */
  constructor (private readonly db: Db, private readonly released: (events: number, bytes: number) => void, private readonly shedEvents: () => number) {
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
   * that no shed event (already named by a gap record) leaves. A batch read while nothing has been
   * shed since (its shedSeen is the budget's count now) is not counted again: a count scans the
   * range on the loop that serves MQTT, and shedding is rare.
   */
  record (batches: BatchToRecord[]): boolean[] {
    const shed = this.shedEvents()
    return this.db.transaction(() => batches.map((b) => {
      if (b.shedSeen !== shed && b.lastId >= b.firstId && (this.stmts.rangeSize.get(b.lane, b.firstId, b.lastId) as { n: number }).n !== b.events) return false
      this.stmts.insert.run(b.batchId, b.lane, b.firstId, b.lastId, b.gapFirst, b.gapLast)
      return true
    }))()
  }

  /**
   * The cloud has the batch: deletes its rows, gaps and in-flight record in one transaction; returns
   * what was freed. Rows of a recorded batch are never shed (disk-budget.ts), so the range holds
   * what the batch was built from and its weight is taken from it, without a scan. Should the
   * range hold anything else, the transaction is rolled back and the range counted as it is.
   */
  ack (b: AckedBatch): { events: number, bytes: number } {
    try {
      return this.db.transaction(() => {
        const deleted = b.lastId >= b.firstId ? this.stmts.deleteRange.run(b.lane, b.firstId, b.lastId).changes : 0
        if (deleted !== b.events) throw new RangeChanged()
        return this.finishAck(b, { events: b.events, bytes: b.bytes })
      })()
    } catch (err) {
      if (!(err instanceof RangeChanged)) throw err
    }
    return this.db.transaction(() => {
      const c = this.stmts.rangeSize.get(b.lane, b.firstId, b.lastId) as { n: number, bytes: number | null }
      this.stmts.deleteRange.run(b.lane, b.firstId, b.lastId)
      return this.finishAck(b, { events: c.n, bytes: (c.bytes ?? 0) + c.n * ROW_OVERHEAD_BYTES })
    })()
  }

  private finishAck (b: InflightBatch, freed: { events: number, bytes: number }): { events: number, bytes: number } {
    if (freed.events > 0) this.released(freed.events, freed.bytes)
    if (b.gapLast >= b.gapFirst) this.stmts.deleteGaps.run(b.gapFirst, b.gapLast)
    this.stmts.delete.run(b.batchId)
    return freed
  }
}
