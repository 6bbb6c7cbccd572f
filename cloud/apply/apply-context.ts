// What the pieces of the apply side share: the store and its cached compare-and-set writer, metrics,
// the logger, the running counts that Aggregator.stats() reports, the clock, and how rejected data is
// counted and logged. Built once by the aggregator and handed to the group and heartbeat appliers.
import type { Logger } from '../log.ts'
import type { CloudMetrics } from '../metrics.ts'
import type { ViewStore } from '../store/view-store.ts'
import type { DocWriter } from './doc-writer.ts'

export interface AggregatorStats { batches: number, applied: number, duplicates: number, rejected: number, flushes: number, heartbeats: number, conflicts: number, controlApplied: number, controlDuplicates: number, rollupTooOld: number }

export const newStats = (): AggregatorStats => ({ batches: 0, applied: 0, duplicates: 0, rejected: 0, flushes: 0, heartbeats: 0, conflicts: 0, controlApplied: 0, controlDuplicates: 0, rollupTooOld: 0 })

/** Counts and logs replicated data that cannot be applied (a reason label, and what identifies it). */
export type Reject = (reason: string, detail: Record<string, unknown>) => void

export interface ApplyContext {
  store: ViewStore
  writer: DocWriter
  metrics: CloudMetrics
  log: Logger
  /** Mutated in place by every applier; copied out by Aggregator.stats(). */
  counts: AggregatorStats
  now: () => number
  reject: Reject
}

/** The rejecter of an apply context: a counter, a metric by reason, a warning. */
export function rejecter (counts: AggregatorStats, metrics: CloudMetrics, log: Logger): Reject {
  return (reason, detail) => {
    counts.rejected++
    metrics.rejected.inc({ reason })
    log.warn({ reason, ...detail }, 'rejected replicated data')
  }
}
