// The per-device delivery ledger at the gateway ("where is my data"), kept in the uplink thread:
// for each device its highest seq accepted (the outbox's counter), its highest seq replicated (the
// highest seq of each acknowledged batch, which the batch carries: batch.ts), and the age of its
// oldest event not yet replicated (the front of the outbox: store/accepted-marks.ts). The heartbeat
// carries a part of it: at most `reportDevices` devices, those that changed since they were last
// sent first (up to half), then the others in turn. So a heartbeat that is lost (core NATS, fire and
// forget) leaves a figure stale for one round of the rotation at most, not forever.
import type { AcceptedMark, FrontScan } from '../store/accepted-marks.ts'

/** One device's marks, as the heartbeat carries them (iot.v1.DeviceDelivery). */
export interface DeviceDeliveryEntry { deviceId: string, acceptedSeq: number, replicatedSeq: number, oldestUnsentAgeMs: number, oldestUnsentAgeBound: boolean }

/** The ledger summed over the gateway's devices (/readyz `delivery`, the metrics). */
export interface DeliveryTotals {
  devices: number
  /** Devices with a seq accepted above the highest replicated. */
  devicesBehind: number
  /** Sums over devices of the highest seq accepted, and of the highest replicated. */
  acceptedSeqSum: number
  replicatedSeqSum: number
  /** The oldest unsent event of any device (ms), 0 = none. */
  oldestUnsentAgeMs: number
  /** When the marks were last read from the outbox (ms), 0 = not yet. */
  refreshedTsMs: number
}

/** What the ledger reads (store/accepted-marks.ts). */
export interface MarksSource { accepted: () => AcceptedMark[], front: (scanRows: number) => FrontScan }

interface Row { mark: AcceptedMark, replicatedSeq: number, oldestSeq: number, oldestTsMs: number, bound: boolean }

export const EMPTY_TOTALS: DeliveryTotals = { devices: 0, devicesBehind: 0, acceptedSeqSum: 0, replicatedSeqSum: 0, oldestUnsentAgeMs: 0, refreshedTsMs: 0 }

export class DeliveryLedger {
  /** Highest seq replicated, by device number (from the acks since the thread started, and from the outbox's front). */
  private readonly replicated = new Map<number, number>()
  /** What was last sent of each device (its marks as one string). */
  private readonly lastSent = new Map<string, string>()
  private rows: Row[] = []
  private cursor = 0
  private sums: DeliveryTotals = EMPTY_TOTALS

  constructor (private readonly source: MarksSource, private readonly opts: { reportDevices: number, scanRows: number }) {}

  /** A batch was acknowledged: each device's highest seq in it, as pairs (device number, seq; batch.ts). */
  acked (devSeqs: readonly number[]): void {
    for (let i = 0; i + 1 < devSeqs.length; i += 2) {
      const dev = devSeqs[i]
      const seq = devSeqs[i + 1]
      if (seq > (this.replicated.get(dev) ?? 0)) this.replicated.set(dev, seq)
    }
  }

  /**
   * Reads the marks from the outbox again (once per heartbeat period). Everything below a device's
   * oldest unsent seq has left the outbox: replicated, or shed and named by a gap record; a device
   * with nothing unsent in a complete scan has replicated (or shed) all it accepted.
   */
  refresh (nowMs: number): void {
    const scan = this.source.front(this.opts.scanRows)
    this.rows = this.source.accepted().map((mark) => {
      const o = mark.num === null ? undefined : scan.oldest.get(mark.num)
      let replicatedSeq = mark.num === null ? 0 : this.replicated.get(mark.num) ?? 0
      if (o) replicatedSeq = Math.max(replicatedSeq, o.seq - 1)
      else if (scan.complete) replicatedSeq = mark.acceptedSeq
      replicatedSeq = Math.min(replicatedSeq, mark.acceptedSeq)
      if (mark.num !== null && replicatedSeq > 0) this.replicated.set(mark.num, replicatedSeq)
      // Not found in an incomplete scan, and behind: its oldest unsent event is younger than the last row read.
      const bound = !o && !scan.complete && replicatedSeq < mark.acceptedSeq
      return { mark, replicatedSeq, oldestSeq: o?.seq ?? 0, oldestTsMs: o?.ingestTsMs ?? (bound ? scan.horizonTsMs : 0), bound }
    })
    const t = { ...EMPTY_TOTALS, devices: this.rows.length, refreshedTsMs: nowMs }
    for (const r of this.rows) {
      t.acceptedSeqSum += r.mark.acceptedSeq
      t.replicatedSeqSum += r.replicatedSeq
      if (r.replicatedSeq < r.mark.acceptedSeq || r.oldestSeq > 0) t.devicesBehind++
      if (r.oldestTsMs > 0) t.oldestUnsentAgeMs = Math.max(t.oldestUnsentAgeMs, nowMs - r.oldestTsMs)
    }
    this.sums = t
  }

  /** The ledger summed over devices, as of the last refresh(). */
  totals (): DeliveryTotals {
    return this.sums
  }

  /** Devices in the ledger. */
  get devices (): number {
    return this.rows.length
  }

  /** The devices for the next heartbeat (marked as sent): changed ones first (up to half), then the others in turn. */
  report (nowMs: number): DeviceDeliveryEntry[] {
    const limit = this.opts.reportDevices
    const rows = this.rows
    if (limit <= 0 || rows.length === 0) return []
    const taken = new Set<number>()
    const changed: number[] = []
    for (let i = 0; i < rows.length; i++) if (this.lastSent.get(rows[i].mark.deviceId) !== signature(rows[i])) changed.push(i)
    for (const i of changed.slice(0, Math.ceil(limit / 2))) taken.add(i)
    if (this.cursor >= rows.length) this.cursor = 0
    for (let n = 0; n < rows.length && taken.size < limit; n++) {
      taken.add(this.cursor)
      this.cursor = (this.cursor + 1) % rows.length
    }
    for (const i of changed) { if (taken.size >= limit) break; taken.add(i) }
    const out: DeviceDeliveryEntry[] = []
    for (const i of [...taken].sort((a, b) => a - b)) {
      const r = rows[i]
      this.lastSent.set(r.mark.deviceId, signature(r))
      out.push({ deviceId: r.mark.deviceId, acceptedSeq: r.mark.acceptedSeq, replicatedSeq: r.replicatedSeq, oldestUnsentAgeMs: r.oldestTsMs > 0 ? Math.max(1, nowMs - r.oldestTsMs) : 0, oldestUnsentAgeBound: r.bound })
    }
    return out
  }
}

function signature (r: Row): string {
  return `${r.mark.acceptedSeq}/${r.replicatedSeq}/${r.oldestSeq}/${r.bound ? r.oldestTsMs : 0}`
}
