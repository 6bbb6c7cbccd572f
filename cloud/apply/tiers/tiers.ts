// Retention tiers of the rollups: 1-minute, 5-minute and 1-hour aggregates, each tier in its own KV
// bucket whose max_age is the tier's retention, so NATS itself ages old documents out (no sweeper of
// ours). A tier document holds one device's slots for a span of event time (1m: an hour, 5m: six
// hours, 1h: a day) and the seqs it has absorbed, so its apply is idempotent like every view document.
//
// Retention and late events: a document's age in its bucket runs from its last write. An event
// whose document span starts before now - retention is "too old" for that tier: it is counted
// (cloud_rollup_too_old_total{tier}) and not applied, so a write never brings back a document that
// may have expired already (a document of that span could have been written, then aged out). The
// latest state and the dedupe/accounting documents live in VIEWS, without a TTL.
import { addOne, type Range } from '../ranges.ts'
import { mergeReading, type Agg, type ApplyEvent } from '../apply.ts'

export type TierName = '1m' | '5m' | '1h'
export const TIER_NAMES: readonly TierName[] = ['1m', '5m', '1h']

export interface TierSpec {
  /** Width of one aggregate (a slot) in event time. */
  slotMs: number
  /** Event time one document covers: a whole number of slots, aligned to the epoch. */
  spanMs: number
  /** First token of the document keys (routes the document to the tier's bucket). */
  keyPrefix: string
  /** Name of the KV bucket that holds the tier. */
  bucket: string
}

const MIN = 60_000
const HOUR = 3_600_000

export const TIERS: Readonly<Record<TierName, TierSpec>> = {
  '1m': { slotMs: MIN, spanMs: HOUR, keyPrefix: 'r1m', bucket: 'ROLLUP_1M' },
  '5m': { slotMs: 5 * MIN, spanMs: 6 * HOUR, keyPrefix: 'r5m', bucket: 'ROLLUP_5M' },
  '1h': { slotMs: HOUR, spanMs: 24 * HOUR, keyPrefix: 'r1h', bucket: 'ROLLUP_1H' },
}

/** How long each tier keeps its documents (ms), by tier. */
export type TierRetention = Record<TierName, number>

/** Defaults of config retention.rollup1mMs / rollup5mMs / rollup1hMs: 14 days, 90 days, 730 days. */
export const DEFAULT_RETENTION: Readonly<TierRetention> = { '1m': 14 * 24 * HOUR, '5m': 90 * 24 * HOUR, '1h': 730 * 24 * HOUR }

/** One device's aggregates of one tier over one span of event time. */
export interface TierDoc {
  v: 2
  tier: TierName
  gatewayId: string
  deviceId: string
  /** Start of the span (event time, ms since the epoch). */
  startMs: number
  /** Seqs absorbed (the idempotency of the document). */
  applied: Range[]
  /** Reading names, in order of first appearance: the index used in `slots`. */
  names: string[]
  /** Slot index within the span ("0".."n-1") -> aggregate per name index (null where the reading had none). */
  slots: Record<string, Array<Agg | null>>
}

// Device ids may contain '.', a token separator in KV keys: written as '=' (as in the VIEWS keys).
const enc = (id: string): string => id.replaceAll('.', '=')

export const spanStart = (tier: TierName, tsMs: number): number => Math.floor(tsMs / TIERS[tier].spanMs) * TIERS[tier].spanMs

export const tierKey = (tier: TierName, gatewayId: string, deviceId: string, startMs: number): string =>
  `${TIERS[tier].keyPrefix}.${gatewayId}.${enc(deviceId)}.${startMs}`

export function newTierDoc (tier: TierName, gatewayId: string, deviceId: string, startMs: number): TierDoc {
  return { v: 2, tier, gatewayId, deviceId, startMs, applied: [], names: [], slots: {} }
}

/** True when a document of this span may have aged out of its tier already: its events are too old for it. */
export const tooOld = (tier: TierName, startMs: number, nowMs: number, retention: TierRetention): boolean =>
  startMs < nowMs - retention[tier]

/** Applies events (all inside the document's span) in place; returns how many were new to it. */
export function applyToTier (doc: TierDoc, events: ApplyEvent[]): number {
  const { slotMs } = TIERS[doc.tier]
  // Integer-like keys: the slots object keeps them as elements (no string per event).
  const slots = doc.slots as unknown as Record<number, Array<Agg | null>>
  let n = 0
  for (const ev of events) {
    if (!addOne(doc.applied, ev.seq)) continue
    n++
    const slot = Math.floor((ev.eventTsMs - doc.startMs) / slotMs)
    const aggs = slots[slot] ??= []
    const readings = ev.readings
    for (let r = 0; r < readings.length; r++) {
      const { name, value } = readings[r]
      if (!Number.isFinite(value)) continue
      // Readings mostly come in the same order in every event: try the same position first.
      let i = doc.names[r] === name ? r : doc.names.indexOf(name)
      if (i < 0) i = doc.names.push(name) - 1
      while (aggs.length <= i) aggs.push(null)
      aggs[i] = mergeReading(aggs[i], value, ev.eventTsMs, ev.seq)
    }
  }
  return n
}

/** The slots of a document as (start, aggregates by reading name), oldest first. */
export function slotsOf (doc: TierDoc): Array<{ start: number, aggs: Record<string, Agg> }> {
  const { slotMs } = TIERS[doc.tier]
  return Object.keys(doc.slots).map(Number).sort((a, b) => a - b).map((s) => {
    const aggs: Record<string, Agg> = {}
    doc.slots[String(s)].forEach((a, i) => { if (a) aggs[doc.names[i]] = a })
    return { start: doc.startMs + s * slotMs, aggs }
  })
}
