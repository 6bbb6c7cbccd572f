// A device's history from the rollup tiers (apply/tiers/): the aggregates of one tier for a range of
// event time, read one document (span) at a time with bounded parallelism. Which tier answers a
// range: `res`, or for `auto` the finest tier that keeps the range within MAX_BUCKETS buckets.
import type { Agg } from '../apply/apply.ts'
import { slotsOf, spanStart, TIER_NAMES, TIERS, tierKey, type TierDoc, type TierName } from '../apply/tiers/tiers.ts'
import type { ViewStore } from '../store/view-store.ts'

export interface AggView { count: number, min: number, max: number, sum: number, avg: number, last: number, lastTs: number }
export interface HistoryBucket { start: number, readings: Record<string, AggView> }
export type Resolution = TierName

/** Most documents one history request reads (a 1m request covers at most 93 days). */
export const MAX_HISTORY_DOCS = 24 * 93
/** What `res=auto` aims at: the finest tier with at most this many buckets in the range. */
export const AUTO_MAX_BUCKETS = 1500

/** The finest tier whose buckets over [fromMs, toMs) number at most AUTO_MAX_BUCKETS. */
export function autoResolution (fromMs: number, toMs: number): Resolution {
  return TIER_NAMES.find((t) => (toMs - fromMs) / TIERS[t].slotMs <= AUTO_MAX_BUCKETS) ?? '1h'
}

/** Buckets of one tier by event time in [fromMs, toMs), oldest first; empty buckets are left out. */
export async function tierHistory (store: ViewStore, gatewayId: string, deviceId: string, fromMs: number, toMs: number, res: Resolution): Promise<HistoryBucket[]> {
  const { spanMs } = TIERS[res]
  const first = spanStart(res, fromMs)
  if ((toMs - first) / spanMs > MAX_HISTORY_DOCS) throw new RangeError(`range too long for res=${res}: at most ${MAX_HISTORY_DOCS * spanMs / 3_600_000} hours`)
  const starts: number[] = []
  for (let s = first; s < toMs; s += spanMs) starts.push(s)
  const out: HistoryBucket[] = []
  for (let i = 0; i < starts.length; i += 64) {
    const got = await Promise.all(starts.slice(i, i + 64).map((s) => store.get<TierDoc>(tierKey(res, gatewayId, deviceId, s))))
    for (const d of got) {
      if (!d) continue
      for (const slot of slotsOf(d.value)) if (slot.start >= fromMs && slot.start < toMs) out.push({ start: slot.start, readings: aggViews(slot.aggs) })
    }
  }
  return out
}

function aggViews (aggs: Record<string, Agg>): Record<string, AggView> {
  const out: Record<string, AggView> = {}
  for (const [name, a] of Object.entries(aggs)) out[name] = { count: a.count, min: a.min, max: a.max, sum: a.sum, avg: a.sum / a.count, last: a.last, lastTs: a.lastTs }
  return out
}
