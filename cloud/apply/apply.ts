// The pure apply logic of the aggregator: how a device's events and gap records change its view
// documents. No I/O here: the aggregator loads documents, calls these, and writes them back with
// compare-and-set. Every function is idempotent by (gateway, device, seq): applying the same events
// again changes nothing but the duplicate count, whatever the order and however late they come.
import { addOne, addRange, dropUpTo, overlap, size, type Range } from './ranges.ts'

/** One event as the aggregator applies it (gatewayId comes from the batch). */
export interface ApplyEvent {
  deviceId: string
  seq: number
  eventTsMs: number
  ingestTsMs: number
  readings: Array<{ name: string, value: number }>
  labels?: Record<string, string>
  /** MQTT 5 user properties of the device's publish (e.g. traceparent). */
  userProperties?: Record<string, string>
  eventTsFromGateway?: boolean
}

/** A range of a device's seqs the gateway says will never arrive (it shed them). */
export interface ApplyGap { deviceId: string, fromSeq: number, toSeq: number, reason: string }

export interface LatestReading { value: number, eventTsMs: number, seq: number }

export interface Latest {
  seq: number
  eventTsMs: number
  ingestTsMs: number
  appliedMs: number
  eventTsFromGateway: boolean
  labels: Record<string, string>
  /** The latest event's MQTT 5 user properties (absent in documents written before they were kept). */
  userProperties?: Record<string, string>
  /** Per reading name, the value with the latest event time (ties: higher seq). */
  readings: Record<string, LatestReading>
}

/** Per-device view: latest state plus the dedupe state and delivery accounting, in one document. */
export interface DeviceDoc {
  v: 1
  gatewayId: string
  deviceId: string
  /** Every seq <= hwm is settled: received, or a hole folded away by the range bound (counted below). */
  hwm: number
  /** Received seqs above hwm (bounded: at most maxRanges ranges). */
  recv: Range[]
  /** Seqs above hwm that gap records explain (shed at the gateway). */
  shed: Range[]
  /** Highest seq known: received, or named by a gap record. */
  highest: number
  acct: {
    received: number
    duplicates: number
    /** Events that arrived below the highest seq already known: holes that were filled late. */
    lateFilled: number
    gapRecords: number
    /** Gap records that added nothing (seen before). */
    gapRecordDuplicates: number
    /** Explained holes folded into hwm by the range bound (still counted as explained). */
    settledShed: number
    /** Unexplained holes folded into hwm by the range bound: a late arrival there counts as a duplicate. */
    abandoned: number
  }
  latest: Latest | null
  updatedMs: number
}

export interface Agg { count: number, min: number, max: number, sum: number, last: number, lastTs: number, lastSeq: number }

export interface DeviceApplyStats { applied: number, duplicates: number, lateFilled: number, explained: number }

/** Accounting derived from a device document. */
export interface DeviceAccounting {
  received: number
  duplicates: number
  highestSeq: number
  /** Holes below highestSeq that no gap record explains (may still arrive). */
  gapsOpen: number
  /** Number of separate unexplained holes. */
  gapRangesOpen: number
  /** Holes explained by gap records from the gateway (shed). */
  gapsExplained: number
  /** Holes filled by late events. */
  gapsClosed: number
  /** Unexplained holes given up on because of the state bound. */
  gapsAbandoned: number
  gapRecords: number
  gapRecordDuplicates: number
}

export function newDeviceDoc (gatewayId: string, deviceId: string): DeviceDoc {
  return {
    v: 1, gatewayId, deviceId, hwm: 0, recv: [], shed: [], highest: 0,
    acct: { received: 0, duplicates: 0, lateFilled: 0, gapRecords: 0, gapRecordDuplicates: 0, settledShed: 0, abandoned: 0 },
    latest: null, updatedMs: 0,
  }
}

const later = (ts: number, seq: number, thanTs: number, thanSeq: number): boolean => ts > thanTs || (ts === thanTs && seq > thanSeq)

/**
 * Applies events and gap records to a device document in place; returns what changed.
 * `maxRanges` bounds the out-of-order state: beyond it the lowest hole is folded (and counted).
 */
export function applyToDevice (doc: DeviceDoc, events: ApplyEvent[], gaps: ApplyGap[], nowMs: number, maxRanges = 1000): DeviceApplyStats {
  const stats: DeviceApplyStats = { applied: 0, duplicates: 0, lateFilled: 0, explained: 0 }
  for (const g of gaps) {
    const from = Math.max(g.fromSeq, doc.hwm + 1)
    // Only seqs not received count as explained holes; the record's range may span received ones.
    const added = g.toSeq < from ? 0 : addRange(doc.shed, from, g.toSeq)
    // A record that adds nothing was applied before (or is wholly settled): a duplicate.
    if (added === 0) { doc.acct.gapRecordDuplicates++; continue }
    doc.acct.gapRecords++
    stats.explained += Math.max(0, added - overlap(doc.recv, from, g.toSeq))
    if (g.toSeq > doc.highest) doc.highest = g.toSeq
  }
  // Ascending seq: reordering inside one delivery is not lateness.
  const sorted = events.length > 1 ? [...events].sort((a, b) => a.seq - b.seq) : events
  for (const ev of sorted) {
    if (ev.seq <= doc.hwm || !addOne(doc.recv, ev.seq)) {
      stats.duplicates++
      continue
    }
    stats.applied++
    if (ev.seq < doc.highest) stats.lateFilled++
    else doc.highest = ev.seq
    updateLatest(doc, ev, nowMs)
  }
  if (stats.applied === 0 && stats.duplicates === 0 && gaps.length === 0) return stats
  // Advance the contiguous high-water mark over received seqs.
  while (doc.recv.length > 0 && doc.recv[0][0] === doc.hwm + 1) {
    doc.hwm = doc.recv[0][1]
    doc.recv.shift()
  }
  while (doc.recv.length + doc.shed.length > maxRanges && doc.recv.length > 0) {
    const holeFrom = doc.hwm + 1
    const holeTo = doc.recv[0][0] - 1
    const explained = overlap(doc.shed, holeFrom, holeTo)
    doc.acct.settledShed += explained
    doc.acct.abandoned += holeTo - holeFrom + 1 - explained
    doc.hwm = doc.recv[0][1]
    doc.recv.shift()
  }
  dropUpTo(doc.shed, doc.hwm)
  doc.acct.received += stats.applied
  doc.acct.duplicates += stats.duplicates
  doc.acct.lateFilled += stats.lateFilled
  // A delivery of duplicates only changes the duplicate count, not the time of the last change.
  if (stats.applied > 0 || stats.explained > 0) doc.updatedMs = nowMs
  return stats
}

function updateLatest (doc: DeviceDoc, ev: ApplyEvent, nowMs: number): void {
  let l = doc.latest
  if (!l) {
    l = doc.latest = { seq: 0, eventTsMs: -Infinity, ingestTsMs: 0, appliedMs: 0, eventTsFromGateway: false, labels: {}, readings: {} }
  }
  for (const r of ev.readings) {
    const cur = l.readings[r.name]
    if (!cur || later(ev.eventTsMs, ev.seq, cur.eventTsMs, cur.seq)) l.readings[r.name] = { value: r.value, eventTsMs: ev.eventTsMs, seq: ev.seq }
  }
  if (later(ev.eventTsMs, ev.seq, l.eventTsMs, l.seq)) {
    l.seq = ev.seq
    l.eventTsMs = ev.eventTsMs
    l.ingestTsMs = ev.ingestTsMs
    l.appliedMs = nowMs
    l.eventTsFromGateway = ev.eventTsFromGateway ?? false
    l.labels = ev.labels ?? {}
    l.userProperties = ev.userProperties ?? {}
  }
}

/** Accounting of a device document (holes computed from the dedupe state). */
export function accountingOf (doc: DeviceDoc): DeviceAccounting {
  const holes = Math.max(0, doc.highest - doc.hwm) - size(doc.recv)
  let explainedOpen = 0
  for (const [a, b0] of doc.shed) {
    const b = Math.min(b0, doc.highest)
    if (b < a) continue
    explainedOpen += b - a + 1 - overlap(doc.recv, a, b)
  }
  // Number of separate holes: gaps between hwm and the received ranges, minus fully explained ones.
  let gapRangesOpen = 0
  let prevEnd = doc.hwm
  const bounds = [...doc.recv.map((r) => r[0]), doc.highest + 1]
  for (let i = 0; i < bounds.length; i++) {
    const from = prevEnd + 1
    const to = bounds[i] - 1
    if (to >= from && overlap(doc.shed, from, to) < to - from + 1) gapRangesOpen++
    if (i < doc.recv.length) prevEnd = doc.recv[i][1]
  }
  return {
    received: doc.acct.received,
    duplicates: doc.acct.duplicates,
    highestSeq: doc.highest,
    gapsOpen: holes - explainedOpen,
    gapRangesOpen,
    gapsExplained: explainedOpen + doc.acct.settledShed,
    gapsClosed: doc.acct.lateFilled,
    gapsAbandoned: doc.acct.abandoned,
    gapRecords: doc.acct.gapRecords,
    gapRecordDuplicates: doc.acct.gapRecordDuplicates,
  }
}

/** Merges one reading into an aggregate (null: none yet); returns the aggregate. */
export function mergeReading (a: Agg | null, v: number, ts: number, seq: number): Agg {
  if (!a) return { count: 1, min: v, max: v, sum: v, last: v, lastTs: ts, lastSeq: seq }
  a.count++
  if (v < a.min) a.min = v
  if (v > a.max) a.max = v
  a.sum += v
  if (later(ts, seq, a.lastTs, a.lastSeq)) { a.last = v; a.lastTs = ts; a.lastSeq = seq }
  return a
}
