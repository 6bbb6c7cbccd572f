// The documents of a gateway's link, written by the apply side from heartbeats and applied groups:
// the heartbeat as stored (GatewayDoc), the apply lag an aggregator last measured (LagDoc), and the
// link-health history (one sample per heartbeat). They live here, on the write side, so that the
// views read them without the apply side ever importing the views; replicationLag() is the one
// derivation both sides need (a health sample records it, the gateway view shows it).

/** The heartbeat as stored: the gateway's status plus when the cloud last heard it. */
export interface GatewayDoc {
  v: 1
  gatewayId: string
  /** Cloud clock, ms: when the last heartbeat was received (not the gateway's clock). */
  lastSeenMs: number
  /**
   * The drain's progress (drainProgress()): the lowest backlog seen since the link came up, and
   * since when (cloud clock) it has not gone lower. Absent in documents written before it existed.
   */
  drain?: { low: number, sinceMs: number }
  status: {
    tsMs: number
    version: string
    linkState: string
    backlogEvents: number
    backlogBytes: number
    oldestUnsentAgeMs: number
    ingestEventsPerSec: number
    uplinkEventsPerSec: number
    connectedDevices: number
    rejectedTotal: number
    shedEventsTotal: number
    startedTsMs: number
    lastAckTsMs: number
    lastError: string
    /** Version of the rule set the gateway runs ('' = none). Absent in documents written before it existed. */
    ruleSetVersion?: string
    /** Decision latency p99 (publish received -> command sent) over the gateway's recent decisions, ms. */
    decisionP99Ms?: number
    quarantinedTotal?: number
    /** Payloads quarantined since the gateway's start, by reason (absent in older documents). */
    quarantinedByReason?: Record<string, number>
    /** The gateway's cloud-to-edge channel: 'attached', 'attaching', 'detached' ('' in documents written before it existed). */
    cloudChannelState?: string
    cloudChannelError?: string
    /** The gateway's stall watchdog: stalled now, and stalls since its start (absent in older documents). */
    uplinkStalled?: boolean
    uplinkStallsTotal?: number
  }
}

/**
 * The drain's progress after a heartbeat: reset when the backlog is empty or the link is not up (an
 * outage is reported by itself), moved on when the backlog reaches a new low, kept otherwise. A
 * backlog that stays above its low while the link is up, for long, is not draining (a stalled
 * consumer, a cloud that refuses, or ingest above the uplink's rate): views.ts flags it.
 */
export function drainProgress (prev: GatewayDoc['drain'] | undefined, status: GatewayDoc['status'], nowMs: number): NonNullable<GatewayDoc['drain']> {
  const backlog = status.backlogEvents
  if (backlog === 0 || status.linkState !== 'up' || !prev || backlog < prev.low) return { low: backlog, sinceMs: nowMs }
  return prev
}

/** Apply lag of a gateway as last measured by an aggregator replica (last writer wins). */
export interface LagDoc { v: 1, gatewayId: string, applyLagMs: number, atMs: number }

/**
 * How far the cloud views are behind a gateway, in ms: the age of the oldest event the gateway has
 * not had acknowledged (when it has a backlog), or else the ingest -> applied lag last measured by an
 * aggregator (when measured within a minute of the heartbeat), or 0.
 */
export function replicationLag (doc: GatewayDoc, lag: LagDoc | null, nowMs: number): number {
  const s = doc.status
  const backlog = s.backlogEvents > 0 ? s.oldestUnsentAgeMs : 0
  const applied = lag && nowMs - lag.atMs <= 60_000 ? lag.applyLagMs : 0
  return Math.max(backlog, applied)
}

/** Columns of a link-health sample (stored as arrays to keep the document small). */
export const HEALTH_COLUMNS = ['t', 'backlogEvents', 'oldestUnsentAgeMs', 'replicationLagMs', 'ingestEventsPerSec', 'uplinkEventsPerSec', 'linkUp'] as const
export type HealthSample = Record<typeof HEALTH_COLUMNS[number], number>

/** A gateway's link-health history: one sample per heartbeat, oldest first, bounded. */
export interface HealthDoc { v: 1, gatewayId: string, samples: number[][] }

export const newHealthDoc = (gatewayId: string): HealthDoc => ({ v: 1, gatewayId, samples: [] })

/** Adds a sample (kept in time order; one per time), dropping the oldest beyond `max`. */
export function appendHealth (doc: HealthDoc, s: HealthSample, max: number): boolean {
  const row = HEALTH_COLUMNS.map((c) => s[c])
  const t = row[0]
  let i = doc.samples.length
  while (i > 0 && doc.samples[i - 1][0] > t) i--
  if (i > 0 && doc.samples[i - 1][0] === t) return false
  doc.samples.splice(i, 0, row)
  if (doc.samples.length > max) doc.samples.splice(0, doc.samples.length - max)
  return true
}

/** The samples as objects, oldest first. */
export const healthSamples = (doc: HealthDoc): HealthSample[] =>
  doc.samples.map((row) => Object.fromEntries(HEALTH_COLUMNS.map((c, i) => [c, row[i] ?? 0])) as HealthSample)
