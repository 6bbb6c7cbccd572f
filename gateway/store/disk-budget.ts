// The outbox's disk budget: running totals of what it holds (events, bytes, events shed), kept in
// outbox_state in the same transaction as the rows they count, and the overflow policy that makes
// room for a new row. Shedding deletes the oldest rows (routine telemetry first) and records a gap
// per device and run of consecutive seqs, so the loss reaches the cloud; it is counted and logged,
// never silent. Rows of a batch in flight (published, not yet acknowledged: uplink_inflight) are
// never shed: the cloud may already hold them, and a gap record must name only what it never gets.
import type { Statement } from 'better-sqlite3'
import type { Db } from './db.ts'
import type { DeviceNumbers } from './device-numbers.ts'
import type { Logger } from '../log.ts'
import type { GatewayMetrics } from '../metrics.ts'
import { decodeStored, LANE_PRIORITY, LANE_TELEMETRY, ROW_OVERHEAD_BYTES, type Lane, type OutboxOptions } from './outbox-types.ts'

// A row is in flight while a batch recorded in uplink_inflight (a handful of rows) spans its id.
const NOT_IN_FLIGHT = 'NOT EXISTS (SELECT 1 FROM uplink_inflight f WHERE f.lane = events.lane AND events.id BETWEEN f.first_id AND f.last_id)'

/** A run of consecutive seqs of one device, shed. */
interface ShedRun { deviceId: string, from: number, to: number }

/** The running totals of the outbox. */
export interface BudgetTotals { events: number, bytes: number, shedEvents: number }

export class DiskBudget {
  private totals: BudgetTotals = { events: 0, bytes: 0, shedEvents: 0 }
  private readonly stmts: {
    saveState: Statement
    oldestTelemetry: Statement
    oldestAny: Statement
    deleteRow: Statement
    insertGap: Statement
  }

  /**
   * Every method that writes runs inside a transaction of the caller (the writer's commit, the
   * reader's ack). onGap: the id of each gap record written, which the writer's watermark follows.
   */
  constructor (
    db: Db,
    private readonly opts: Pick<OutboxOptions, 'budgetBytes' | 'overflow'>,
    private readonly devices: Pick<DeviceNumbers, 'idOf'>,
    private readonly onGap: (gapId: number) => void,
    private readonly log: Logger,
    private readonly metrics: GatewayMetrics,
  ) {
    this.stmts = {
      saveState: db.prepare('UPDATE outbox_state SET events = ?, bytes = ?, shed_events = ? WHERE id = 1'),
      oldestTelemetry: db.prepare(`SELECT id, lane, dev, body FROM events WHERE lane = ${LANE_TELEMETRY} AND id > ? AND ${NOT_IN_FLIGHT} ORDER BY id LIMIT ?`),
      oldestAny: db.prepare(`SELECT id, lane, dev, body FROM events WHERE id > ? AND ${NOT_IN_FLIGHT} ORDER BY id LIMIT ?`),
      deleteRow: db.prepare('DELETE FROM events WHERE id = ?'),
      insertGap: db.prepare('INSERT INTO gaps (device_id, from_seq, to_seq, count, reason, ts) VALUES (?, ?, ?, ?, ?, ?)'),
    }
    const s = db.prepare('SELECT events, bytes, shed_events, row_overhead FROM outbox_state WHERE id = 1').get() as { events: number, bytes: number, shed_events: number, row_overhead: number }
    this.totals = { events: s.events, bytes: s.bytes, shedEvents: s.shed_events }
    if (s.row_overhead !== ROW_OVERHEAD_BYTES) {
      // Counted with another per-row overhead (12 before it was measured again): every buffered row
      // is recounted with today's, which releasing it will take off. No scan: instant on a full outbox.
      this.totals.bytes += s.events * (ROW_OVERHEAD_BYTES - s.row_overhead)
      db.prepare('UPDATE outbox_state SET bytes = ?, row_overhead = ? WHERE id = 1').run(this.totals.bytes, ROW_OVERHEAD_BYTES)
      log.info({ events: s.events, bytes: this.totals.bytes, rowOverheadBytes: ROW_OVERHEAD_BYTES, was: s.row_overhead }, 'outbox budget recounted with the current per-row overhead')
    }
    this.metrics.outboxBudgetBytes.set(opts.budgetBytes)
  }

  /** A copy of the totals, e.g. to restore after a failed commit. */
  snapshot (): BudgetTotals {
    return { ...this.totals }
  }

  /** After a rolled-back transaction: the totals as they were before it. */
  restore (totals: BudgetTotals): void {
    this.totals = { ...totals }
  }

  /** Whether a row of `size` bytes fits, after making room by the overflow policy if need be. */
  fits (size: number, lane: Lane): boolean {
    return this.totals.bytes + size <= this.opts.budgetBytes || this.makeRoom(size, lane)
  }

  /** A row of `size` bytes was inserted. */
  added (size: number): void {
    this.totals.events++
    this.totals.bytes += size
  }

  /** Rows were deleted (the cloud has them): counted out and saved. */
  released (events: number, bytes: number): void {
    this.totals.events -= events
    this.totals.bytes -= bytes
    this.save()
  }

  /** Writes the totals to outbox_state (in the caller's transaction). */
  save (): void {
    this.stmts.saveState.run(this.totals.events, this.totals.bytes, this.totals.shedEvents)
  }

  stats (): BudgetTotals {
    return { ...this.totals }
  }

  updateGauges (): void {
    this.metrics.outboxEvents.set(this.totals.events)
    this.metrics.outboxBytes.set(this.totals.bytes)
  }

  // Frees room for `size` bytes by the overflow policy. Shedding goes a little past the need (2% of
  // the budget) so that a full outbox does not shed on every single commit.
  private makeRoom (size: number, lane: Lane): boolean {
    if (this.opts.overflow === 'reject-new') return false
    if (size > this.opts.budgetBytes) return false
    const target = this.totals.bytes + size - this.opts.budgetBytes + Math.floor(this.opts.budgetBytes * 0.02)
    let freed = this.shed(target, false)
    // Routine telemetry goes first; priority events are shed only for other priority events.
    if (this.totals.bytes + size > this.opts.budgetBytes && lane === LANE_PRIORITY) freed += this.shed(target - freed, true)
    return this.totals.bytes + size <= this.opts.budgetBytes
  }

  private shed (bytesWanted: number, includePriority: boolean): number {
    let freed = 0
    let count = 0
    let lastId = 0
    const runs: ShedRun[] = []
    const open = new Map<string, ShedRun>()
    const stmt = includePriority ? this.stmts.oldestAny : this.stmts.oldestTelemetry
    while (freed < bytesWanted) {
      const rows = stmt.all(lastId, 512) as Array<{ id: number, lane: Lane, dev: number | null, body: Buffer }>
      if (rows.length === 0) break
      for (const row of rows) {
        const ev = decodeStored(row.lane, row.body)
        const deviceId = row.dev === null ? ev.deviceId : this.devices.idOf(row.dev)
        const seq = Number(ev.seq)
        // Rows come in id order, so a device's seqs rise: a run ends where a seq is skipped (a row
        // of the other lane, or one in flight, that stays).
        const run = open.get(deviceId)
        if (run && seq === run.to + 1) run.to = seq
        else { const r = { deviceId, from: seq, to: seq }; runs.push(r); open.set(deviceId, r) }
        this.stmts.deleteRow.run(row.id)
        freed += row.body.length + ROW_OVERHEAD_BYTES
        count++
        lastId = row.id
        if (freed >= bytesWanted) break
      }
    }
    if (count === 0) return 0
    const now = Date.now()
    for (const r of runs) this.onGap(Number(this.stmts.insertGap.run(r.deviceId, r.from, r.to, r.to - r.from + 1, 'shed', now).lastInsertRowid))
    this.totals.events -= count
    this.totals.bytes -= freed
    this.totals.shedEvents += count
    this.metrics.shed.inc({ lane: includePriority ? 'any' : 'telemetry' }, count)
    this.log.warn({ shedEvents: count, shedBytes: freed, devices: open.size, gaps: runs.length, lane: includePriority ? 'any' : 'telemetry', budgetBytes: this.opts.budgetBytes }, 'outbox over budget: shed oldest events, gaps recorded')
    return freed
  }
}
