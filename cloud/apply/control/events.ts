// A control event as the aggregator applies it, the bounds of the control documents, and the small
// helpers every control document shares: decoding the event's detail JSON and the bounded
// "N highest seqs" list that makes each document independent of delivery order.
import type { ApplyEvent } from '../apply.ts'

/** One control event as the aggregator applies it (gatewayId comes from the batch). */
export interface ControlEv {
  seq: number
  kind: string
  eventTsMs: number
  ingestTsMs: number
  /** subject_device_id: the trigger of a decision or alert, the target of a command ('' if none). */
  deviceId: string
  ruleId: string
  ruleSetVersion: string
  alertId: string
  severity: string
  message: string
  commandId: string
  commandName: string
  commandStatus: string
  durationMs: number
  detail: Record<string, unknown> | null
}

/** Bounds of the control documents (entries kept). */
export interface ControlLimits {
  /** Decisions per gateway. */
  decisions: number
  /** Alert ids per gateway (state, operator ack). */
  alerts: number
  /** Raise/clear events per gateway (the feed). */
  alertEvents: number
  /** Commands per gateway. */
  commands: number
  /** Timeline entries per command. */
  timeline: number
  /** References per device and kind (decisions, alerts, commands, dead letters). */
  deviceRefs: number
  /** Dead letters per gateway. */
  deadLetters: number
}

export const DEFAULT_CONTROL_LIMITS: ControlLimits = { decisions: 200, alerts: 500, alertEvents: 200, commands: 256, timeline: 16, deviceRefs: 50, deadLetters: 200 }

/** Largest JSON kept for command args or a decision's trigger in a view document (bytes). */
const MAX_DETAIL_JSON = 1024

/** The control event's identity as a dedupe event (no readings): applyToDevice() on viewKeys.control. */
export const dedupeEvent = (ev: ControlEv): ApplyEvent => ({ deviceId: '$control', seq: ev.seq, eventTsMs: ev.eventTsMs, ingestTsMs: ev.ingestTsMs, readings: [] })

/** Parses detail_json; a malformed or non-object detail is dropped (the event still counts). */
export function parseDetail (json: string | null | undefined): Record<string, unknown> | null {
  if (!json) return null
  try {
    const v = JSON.parse(json) as unknown
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? v as Record<string, unknown> : null
  } catch {
    return null
  }
}

export const str = (v: unknown, max = 200): string => typeof v === 'string' ? v.slice(0, max) : ''
export const num = (v: unknown): number | undefined => typeof v === 'number' && Number.isFinite(v) ? v : undefined

/** The value if its JSON is small enough for a view document, else null. */
export function small (v: unknown): unknown {
  if (v === undefined) return null
  const text = JSON.stringify(v)
  return text !== undefined && text.length <= MAX_DETAIL_JSON ? v : null
}

/**
 * Inserts into a list sorted by seq, highest first, keeping at most `max`: the result is the `max`
 * highest seqs ever inserted, whatever the order. False when the seq is there or too old to keep.
 */
export function insertTopN<T extends { seq: number }> (items: T[], item: T, max: number): boolean {
  let lo = 0
  let hi = items.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (items[mid].seq > item.seq) lo = mid + 1
    else hi = mid
  }
  if (lo < items.length && items[lo].seq === item.seq) return false
  if (lo >= max) return false
  items.splice(lo, 0, item)
  if (items.length > max) items.length = max
  return true
}
