// What the per-device delivery ledger (gateway/uplink/delivery-ledger.ts) reads of the outbox, on
// the uplink thread's read-only connection: each device's highest accepted seq (device_seq, written
// in the same transaction as its events), and the oldest unsent event of each device found in the
// front of the outbox. The outbox holds only what the cloud has not acknowledged, in ingest order,
// so a device's first row there is its oldest unsent event. Reading it for every device would scan
// the whole outbox (no index by device: one would cost ingest and disk), so only the first
// `scanRows` telemetry rows are read, and only their first bytes; a device whose oldest unsent row
// lies further is younger than the last row read: its age is given as that bound.
import type { Statement } from 'better-sqlite3'
import { CONTROL_DEVICE_ID } from '../../proto/index.ts'
import type { Db } from './db.ts'
import { LANE_TELEMETRY } from './outbox-types.ts'
import { storedSeqAndIngest } from './stored-event.ts'

/** A device's accepted mark: its number (events.dev; null before its first event of version 3) and highest seq. */
export interface AcceptedMark { deviceId: string, num: number | null, acceptedSeq: number }

/** The oldest unsent events found in the front of the outbox. */
export interface FrontScan {
  /** By device number: the seq and ingest time (ms) of its oldest unsent event. */
  oldest: Map<number, { seq: number, ingestTsMs: number }>
  /** The scan read the whole telemetry lane: a device not in `oldest` has nothing unsent. */
  complete: boolean
  /** Ingest time of the last row read (a bound for the devices not found), 0 when none. */
  horizonTsMs: number
}

/** Bytes of a body read by the scan: enough for fields 3-5 (seq, event and ingest time). */
const HEAD_BYTES = 32

export class AcceptedMarks {
  private readonly stmts: { marks: Statement, front: Statement }

  constructor (db: Db) {
    this.stmts = {
      marks: db.prepare('SELECT device_id, num, last_seq FROM device_seq WHERE last_seq > 0'),
      front: db.prepare(`SELECT dev, substr(body, 1, ${HEAD_BYTES}) AS head FROM events WHERE lane = ${LANE_TELEMETRY} AND dev IS NOT NULL ORDER BY id LIMIT ?`),
    }
  }

  /** Every device's highest accepted seq (the control events' own counter left out). */
  accepted (): AcceptedMark[] {
    const rows = this.stmts.marks.all() as Array<{ device_id: string, num: number | null, last_seq: number }>
    const out: AcceptedMark[] = []
    for (const r of rows) if (r.device_id !== CONTROL_DEVICE_ID) out.push({ deviceId: r.device_id, num: r.num, acceptedSeq: r.last_seq })
    return out
  }

  /** The oldest unsent event of each device among the first `scanRows` telemetry rows. */
  front (scanRows: number): FrontScan {
    const rows = this.stmts.front.all(scanRows) as Array<{ dev: number, head: Buffer }>
    const oldest = new Map<number, { seq: number, ingestTsMs: number }>()
    let horizonTsMs = 0
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i]
      if (oldest.has(r.dev) && i < rows.length - 1) continue
      const head = storedSeqAndIngest(r.head)
      if (!oldest.has(r.dev)) oldest.set(r.dev, head)
      if (i === rows.length - 1) horizonTsMs = head.ingestTsMs
    }
    return { oldest, complete: rows.length < scanRows, horizonTsMs }
  }
}
