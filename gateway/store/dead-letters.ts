// The dead-letter table: quarantined payloads (reason, detail, the payload's first bytes), written in
// the commit group like events and kept to the newest outbox.deadLetterRows; and their reports to
// the cloud: a 'dead_letter' control event in the priority lane (deduplicated there like every
// control event), at most outbox.deadLetterReportsPerSec, so that a flood of bad input is counted
// but never crowds decisions out of the priority lane.
import type { Statement } from 'better-sqlite3'
import { TokenBucket } from '../../lib/token-bucket.ts'
import type { GatewayMetrics } from '../metrics.ts'
import type { Db } from './db.ts'
import type { DeadLetter, IncomingControl, OutboxOptions } from './outbox-types.ts'

/** Reports may come in bursts of this many seconds of the rate. */
const REPORT_BURST_SECONDS = 10

export class DeadLetters {
  private readonly insert: Statement
  private readonly trimBelow: Statement
  private readonly lastId: Statement
  private readonly reports: TokenBucket | null

  constructor (db: Db, private readonly opts: Pick<OutboxOptions, 'deadLetterRows' | 'deadLetterPayloadBytes' | 'deadLetterReportsPerSec'>, private readonly metrics: GatewayMetrics) {
    this.insert = db.prepare('INSERT INTO dead_letters (ts, device_id, topic, reason, detail, payload_bytes, payload) VALUES (?, ?, ?, ?, ?, ?, ?)')
    this.trimBelow = db.prepare('DELETE FROM dead_letters WHERE id <= ?')
    this.lastId = db.prepare('SELECT max(id) FROM dead_letters').pluck()
    const rate = opts.deadLetterReportsPerSec
    this.reports = rate > 0 ? new TokenBucket(rate, Math.max(1, rate * REPORT_BURST_SECONDS), Date.now()) : null
  }

  /** Inside the commit transaction: stores one quarantined payload (its first deadLetterPayloadBytes). */
  write (dl: DeadLetter, nowMs: number): void {
    this.insert.run(nowMs, dl.deviceId, dl.topic, dl.reason, dl.detail, dl.payload.length, this.head(dl))
  }

  /** Inside the commit transaction, after a group that wrote some: keeps the newest deadLetterRows. */
  trim (): void {
    this.trimBelow.run((this.lastId.get() as number) - this.opts.deadLetterRows)
  }

  /** The control event that reports `dl` to the cloud, or null when over the rate (counted as suppressed). */
  report (dl: DeadLetter, nowMs: number): IncomingControl | null {
    if (this.reports === null || this.reports.take(nowMs) > 0) {
      this.reports?.refund()
      this.metrics.deadLetterReports.inc({ result: 'suppressed' })
      return null
    }
    this.metrics.deadLetterReports.inc({ result: 'sent' })
    const detailJson = JSON.stringify({ detail: dl.detail.slice(0, 200), topic: dl.topic.slice(0, 256), payloadBytes: dl.payload.length, payloadBase64: this.head(dl).toString('base64') })
    return { kind: 'dead_letter', subjectDeviceId: dl.deviceId ?? '', message: dl.reason, detailJson, eventTsMs: nowMs, ingestTsMs: nowMs }
  }

  private head (dl: DeadLetter): Buffer {
    return dl.payload.subarray(0, this.opts.deadLetterPayloadBytes)
  }
}
