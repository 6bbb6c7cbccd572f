// A replication batch as the replicator keeps it (its rows already encoded into one JetStream
// message), and how it is built from outbox rows or read again from its recorded ranges.
import { v1 } from '../../proto/index.ts'
import { LANE_PRIORITY, LANE_TELEMETRY, ROW_OVERHEAD_BYTES, type InflightBatch, type Lane, type UplinkRow } from '../store/outbox-types.ts'
import type { OutboxReader } from '../store/outbox-reader.ts'
import { encodeBatch, storedSeq } from '../store/stored-event.ts'

export type Kind = 'priority' | 'live' | 'backlog'

export interface Batch extends InflightBatch {
  kind: Kind
  events: number
  /** What its rows weigh in the outbox's budget (bodies plus ROW_OVERHEAD_BYTES each): released with the ack. */
  bytes: number
  /** The budget's count of events shed when its rows were read (store/inflight-ledger.ts). */
  shedSeen: number
  payload: Buffer
  /** Ingest time of the newest event (live batches only), for the freshness metric. */
  newestIngestTs: number
  /** Which publish attempt is current: results of older attempts are ignored, except an ack. */
  attempt: number
  done: boolean
  /** Recorded in the outbox's in-flight ledger: only then may it be published. */
  recorded: boolean
  /**
   * Telemetry batches: the highest seq of each device in it, as pairs (device number, seq) in one
   * flat list (DeviceSeqs; delivery-ledger.ts: what its ack replicated). Rows from before schema
   * version 3 (no device number) are left out.
   */
  devSeqs: number[] | null
}

/** Sending order of the kinds: priority, live, backlog. */
export const order = (b: Batch): number => (b.kind === 'priority' ? 0 : b.kind === 'live' ? 1 : 2)

export class BatchBuilder {
  private readonly devSeqs = new DeviceSeqs()

  constructor (private readonly reader: OutboxReader, private readonly gatewayId: string) {}

  // Encodes the batch header, then appends each stored event without decoding it (protobuf
  // concatenation merges): telemetry as field 3, control events (priority lane) as field 6, each
  // with its device_id field put back in front of the stored body (stored-event.ts). The drain does
  // no per-event protobuf work and allocates one buffer per batch.
  build (kind: Kind, lane: Lane, rows: UplinkRow[], firstId: number, lastId: number, gapFirst: number, gapLast: number): Batch {
    const batchId = `${this.gatewayId}.${this.reader.epoch}.${lane}.${firstId}-${lastId}.${gapFirst}-${gapLast}`
    const gaps = gapLast >= gapFirst ? this.reader.readGaps(gapFirst - 1, gapLast, gapLast - gapFirst + 1) : []
    const header = v1.ReplicationBatch.encode({
      gatewayId: this.gatewayId,
      batchId,
      sentTsMs: Date.now(),
      gaps: gaps.map((g) => ({ gatewayId: this.gatewayId, deviceId: g.deviceId, fromSeq: g.fromSeq, toSeq: g.toSeq, count: g.count, reason: g.reason, recordedTsMs: g.tsMs })),
    }).finish()
    const payload = encodeBatch(header, lane === LANE_PRIORITY ? 6 : 3, rows, (dev) => this.reader.deviceField(dev))
    const newestIngestTs = kind === 'live' && rows.length > 0 ? Number(v1.TelemetryEvent.decode(rows[rows.length - 1].body).ingestTsMs) : 0
    let bytes = rows.length * ROW_OVERHEAD_BYTES
    for (let i = 0; i < rows.length; i++) bytes += rows[i].body.length
    return { batchId, lane, firstId, lastId, gapFirst, gapLast, kind, events: rows.length, bytes, shedSeen: this.reader.shedEvents(), payload, newestIngestTs, attempt: 0, done: false, recorded: false, devSeqs: lane === LANE_TELEMETRY ? this.devSeqs.of(rows) : null }
  }

  /** A batch recorded by the last run, from its row ranges (rows shed since are simply absent). */
  rebuild (b: InflightBatch): Batch {
    return { ...this.fromRange(b.lane === LANE_PRIORITY ? 'priority' : 'backlog', b), batchId: b.batchId, recorded: true }
  }

  /** A batch that the writer refused to record (rows of it were shed), read again from its ranges. */
  readAgain (b: Batch): Batch {
    return { ...this.fromRange(b.kind, b), newestIngestTs: b.newestIngestTs }
  }

  private fromRange (kind: Kind, b: InflightBatch): Batch {
    const rows = b.lastId >= b.firstId ? this.reader.readLane(b.lane, b.firstId - 1, b.lastId, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER) : []
    return this.build(kind, b.lane, rows, b.firstId, b.lastId, b.gapFirst, b.gapLast)
  }
}

/**
 * Each device's highest seq among a batch's rows, for the delivery ledger. Rows are in id order, so a
 * device's last row holds its highest seq: the rows are walked from the end and one body per device
 * is read (its first bytes), the others are skipped by a stamp per device number, without a lookup.
 */
export class DeviceSeqs {
  private stamp = new Int32Array(1024)
  private round = 0

  /** Pairs in one flat list: device number, highest seq, device number, highest seq, … */
  of (rows: readonly UplinkRow[]): number[] {
    const out: number[] = []
    if (++this.round === 0x7fffffff) { this.stamp.fill(0); this.round = 1 }
    for (let i = rows.length - 1; i >= 0; i--) {
      const dev = rows[i].dev
      if (dev === null) continue
      if (dev >= this.stamp.length) {
        const grown = new Int32Array(Math.max(dev + 1, this.stamp.length * 2))
        grown.set(this.stamp)
        this.stamp = grown
      }
      if (this.stamp[dev] === this.round) continue
      this.stamp[dev] = this.round
      out.push(dev, storedSeq(rows[i].body))
    }
    return out
  }
}
