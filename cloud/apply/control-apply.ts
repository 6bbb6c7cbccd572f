// The pure apply logic of control events (decisions, alerts, command outcomes): how they change the
// per-gateway and per-device control documents. No I/O here; the aggregator loads, calls, and writes
// back with compare-and-set, exactly as for telemetry.
//
// Every document is idempotent and order-independent on its own, by the control seq of the event:
//   - bounded lists keep the N highest seqs ever applied (an entry already there, or older than
//     everything a full list keeps, changes nothing), so the same set of events gives the same list
//     whatever the order, the duplicates or the replica;
//   - an alert's state is max(seq) of its raises against max(seq) of its clears;
//   - a command's status is the status of its highest-seq event, its timeline the events by seq.
// The bounds on alert ids and commands drop whole entries (cleared alerts first; commands by lowest
// first seq): within the bounds the documents do not depend on order; at the margin a very late
// event of an entry already dropped may bring back a partial one. That is the price of a bound.
// The (gateway, "$control", seq) dedupe state and accounting live in a DeviceDoc (apply.ts) under
// viewKeys.control, written after these, like a device document after its rollups.
import type { ApplyEvent } from './apply.ts'

export type CommandStatus = 'queued' | 'sent' | 'delivered' | 'acknowledged' | 'rejected' | 'timed_out' | 'expired'
/** Statuses after which the gateway reports nothing more about a command. */
export const TERMINAL_STATUSES: ReadonlySet<string> = new Set(['acknowledged', 'rejected', 'timed_out', 'expired'])

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
  /** References per device and kind (decisions, alerts, commands). */
  deviceRefs: number
}

export const DEFAULT_CONTROL_LIMITS: ControlLimits = { decisions: 200, alerts: 500, alertEvents: 200, commands: 256, timeline: 16, deviceRefs: 50 }

/** Largest JSON kept for command args or a decision's trigger in a view document (bytes). */
const MAX_DETAIL_JSON = 1024

// --- documents ---------------------------------------------------------------------------------

export interface DecisionTriggerView { reading?: string, value?: number, eventTsMs?: number }
export type DecisionActionView =
  | { type: 'command', device: string, name: string }
  | { type: 'raiseAlert', id: string, severity: string }
  | { type: 'clearAlert', id: string }

export interface DecisionEntry {
  seq: number
  /** Gateway clock: when the rule decided. */
  tsMs: number
  ruleId: string
  ruleSetVersion: string
  /** The device whose event triggered the decision. */
  deviceId: string
  /** "fired" or "cleared". */
  kind: string
  /** Trigger ingest to commands handed to the broker, ms (gateway-measured). */
  durationMs: number
  trigger: DecisionTriggerView | null
  actions: DecisionActionView[]
}

/** A gateway's recent decisions, highest seq first. */
export interface DecisionsDoc { v: 1, gatewayId: string, items: DecisionEntry[] }

export interface AlertAck { raisedSeq: number, atMs: number, by: string, note: string }

export interface AlertState {
  alertId: string
  deviceId: string
  ruleId: string
  severity: string
  message: string
  /** Raised and not cleared since: the highest raise seq is above the highest clear seq. */
  active: boolean
  raisedSeq: number
  raisedTsMs: number
  clearedSeq: number
  clearedTsMs: number
  /** The operator's acknowledgement; it applies to the raise it was given for (raisedSeq). */
  ack: AlertAck | null
}

export interface AlertEventEntry { seq: number, tsMs: number, alertId: string, change: 'raised' | 'cleared', deviceId: string, ruleId: string, severity: string, message: string }

/** A gateway's alerts: state per alert id, and the recent raise/clear events (highest seq first). */
export interface AlertsDoc {
  v: 1
  gatewayId: string
  alerts: AlertState[]
  events: AlertEventEntry[]
  /** Highest last seq of an alert state dropped by the bound: older events of unknown ids are ignored. */
  floorSeq: number
}

export interface TimelineEntry {
  status: CommandStatus
  /** Control seq at the gateway; 0 for "queued" (recorded by the cloud when it published the command). */
  seq: number
  tsMs: number
  /** Gateway-measured time since first sent, ms. */
  durationMs?: number
  attempts?: number
  detail?: string
}

export interface CommandState {
  commandId: string
  deviceId: string
  name: string
  /** The command's args (null when larger than the view keeps). */
  args: unknown
  /** "cloud" (POST /api/commands) or "rule". */
  source: string
  ruleId: string
  ruleSetVersion: string
  status: CommandStatus
  terminal: boolean
  /** Lowest and highest control seq seen for it (0: none yet, only queued by the cloud). */
  firstSeq: number
  lastSeq: number
  queuedAtMs: number | null
  expiresAtMs: number | null
  /** Time of the entry that gives the status. */
  statusTsMs: number
  attempts: number
  /** Entries by seq, the highest `timeline` limit kept. */
  timeline: TimelineEntry[]
}

/** A gateway's recent commands, newest (highest first seq; queued-only first) first. */
export interface CommandsDoc { v: 1, gatewayId: string, commands: CommandState[] }

export interface DeviceDecisionRef { seq: number, tsMs: number, ruleId: string, kind: string, durationMs: number }
export interface DeviceAlertRef { seq: number, tsMs: number, alertId: string, change: 'raised' | 'cleared', severity: string, message: string }
export interface DeviceCommandRef { commandId: string, name: string, status: CommandStatus, firstSeq: number, lastSeq: number, statusTsMs: number, queuedAtMs: number | null }

/** One device's references into its gateway's control views, for the device page. */
export interface DeviceControlDoc {
  v: 1
  gatewayId: string
  deviceId: string
  decisions: DeviceDecisionRef[]
  alerts: DeviceAlertRef[]
  commands: DeviceCommandRef[]
}

export const newDecisionsDoc = (gatewayId: string): DecisionsDoc => ({ v: 1, gatewayId, items: [] })
export const newAlertsDoc = (gatewayId: string): AlertsDoc => ({ v: 1, gatewayId, alerts: [], events: [], floorSeq: 0 })
export const newCommandsDoc = (gatewayId: string): CommandsDoc => ({ v: 1, gatewayId, commands: [] })
export const newDeviceControlDoc = (gatewayId: string, deviceId: string): DeviceControlDoc => ({ v: 1, gatewayId, deviceId, decisions: [], alerts: [], commands: [] })

// --- decoding ----------------------------------------------------------------------------------

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

const str = (v: unknown, max = 200): string => typeof v === 'string' ? v.slice(0, max) : ''
const num = (v: unknown): number | undefined => typeof v === 'number' && Number.isFinite(v) ? v : undefined

/** The value if its JSON is small enough for a view document, else null. */
function small (v: unknown): unknown {
  if (v === undefined) return null
  const text = JSON.stringify(v)
  return text !== undefined && text.length <= MAX_DETAIL_JSON ? v : null
}

function decisionTrigger (detail: Record<string, unknown> | null): DecisionTriggerView | null {
  const t = detail?.trigger
  if (!t || typeof t !== 'object') return null
  const o = t as Record<string, unknown>
  const out: DecisionTriggerView = {}
  if (typeof o.reading === 'string') out.reading = o.reading.slice(0, 64)
  const value = num(o.value)
  if (value !== undefined) out.value = value
  const ts = num(o.eventTsMs)
  if (ts !== undefined) out.eventTsMs = ts
  return out
}

function decisionActions (detail: Record<string, unknown> | null): DecisionActionView[] {
  const list = Array.isArray(detail?.actions) ? detail!.actions as unknown[] : []
  const out: DecisionActionView[] = []
  for (const a of list.slice(0, 8)) {
    if (!a || typeof a !== 'object') continue
    const o = a as Record<string, Record<string, unknown> | undefined>
    if (o.command) out.push({ type: 'command', device: str(o.command.device, 64), name: str(o.command.name, 64) })
    else if (o.raiseAlert) out.push({ type: 'raiseAlert', id: str(o.raiseAlert.id, 128), severity: str(o.raiseAlert.severity, 16) })
    else if (o.clearAlert) out.push({ type: 'clearAlert', id: str(o.clearAlert.id, 128) })
  }
  return out
}

// --- bounded lists -----------------------------------------------------------------------------

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

// --- decisions ---------------------------------------------------------------------------------

/** Applies decision events to a gateway's decisions document in place; returns how many were new. */
export function applyDecisions (doc: DecisionsDoc, events: ControlEv[], max: number): number {
  let n = 0
  for (const ev of events) {
    if (ev.kind !== 'decision') continue
    const entry: DecisionEntry = {
      seq: ev.seq,
      tsMs: ev.eventTsMs,
      ruleId: ev.ruleId,
      ruleSetVersion: ev.ruleSetVersion,
      deviceId: ev.deviceId,
      kind: ev.message,
      durationMs: ev.durationMs,
      trigger: decisionTrigger(ev.detail),
      actions: decisionActions(ev.detail),
    }
    if (insertTopN(doc.items, entry, max)) n++
  }
  return n
}

// --- alerts ------------------------------------------------------------------------------------

const alertLastSeq = (a: AlertState): number => Math.max(a.raisedSeq, a.clearedSeq)

/** Applies raise/clear events to a gateway's alerts document in place; returns whether it changed. */
export function applyAlerts (doc: AlertsDoc, events: ControlEv[], limits: Pick<ControlLimits, 'alerts' | 'alertEvents'>): boolean {
  let changed = false
  const byId = new Map(doc.alerts.map((a) => [a.alertId, a]))
  for (const ev of events) {
    if ((ev.kind !== 'alert_raised' && ev.kind !== 'alert_cleared') || ev.alertId === '') continue
    const raised = ev.kind === 'alert_raised'
    const entry: AlertEventEntry = { seq: ev.seq, tsMs: ev.eventTsMs, alertId: ev.alertId, change: raised ? 'raised' : 'cleared', deviceId: ev.deviceId, ruleId: ev.ruleId, severity: ev.severity, message: ev.message }
    if (insertTopN(doc.events, entry, limits.alertEvents)) changed = true
    let st = byId.get(ev.alertId)
    if (!st) {
      if (ev.seq <= doc.floorSeq) continue
      st = { alertId: ev.alertId, deviceId: ev.deviceId, ruleId: ev.ruleId, severity: '', message: '', active: false, raisedSeq: 0, raisedTsMs: 0, clearedSeq: 0, clearedTsMs: 0, ack: null }
      byId.set(ev.alertId, st)
      doc.alerts.push(st)
      changed = true
    }
    if (raised && ev.seq > st.raisedSeq) {
      Object.assign(st, { raisedSeq: ev.seq, raisedTsMs: ev.eventTsMs, deviceId: ev.deviceId, ruleId: ev.ruleId, severity: ev.severity, message: ev.message })
      changed = true
    } else if (!raised && ev.seq > st.clearedSeq) {
      Object.assign(st, { clearedSeq: ev.seq, clearedTsMs: ev.eventTsMs })
      if (st.raisedSeq === 0) Object.assign(st, { deviceId: ev.deviceId, ruleId: ev.ruleId })
      changed = true
    }
    st.active = st.raisedSeq > st.clearedSeq
  }
  // The bound: drop cleared alerts first, the least recently changed first.
  while (doc.alerts.length > limits.alerts) {
    let victim = -1
    for (let i = 0; i < doc.alerts.length; i++) {
      const a = doc.alerts[i]
      const v = victim < 0 ? null : doc.alerts[victim]
      if (!v || (v.active && !a.active) || (v.active === a.active && alertLastSeq(a) < alertLastSeq(v))) victim = i
    }
    doc.floorSeq = Math.max(doc.floorSeq, alertLastSeq(doc.alerts[victim]))
    doc.alerts.splice(victim, 1)
    changed = true
  }
  if (changed) doc.alerts.sort((a, b) => alertLastSeq(b) - alertLastSeq(a) || (a.alertId < b.alertId ? -1 : 1))
  return changed
}

/** Records the operator's acknowledgement of an alert's current raise; null when the alert is unknown. */
export function ackAlert (doc: AlertsDoc, alertId: string, by: string, note: string, nowMs: number): AlertState | null {
  const st = doc.alerts.find((a) => a.alertId === alertId)
  if (!st) return null
  st.ack = { raisedSeq: st.raisedSeq, atMs: nowMs, by, note }
  return st
}

/** True when the operator acknowledged the alert's current raise. */
export const isAcknowledged = (a: AlertState): boolean => a.ack !== null && a.ack.raisedSeq === a.raisedSeq

// --- commands ----------------------------------------------------------------------------------

type CommandLike = Pick<CommandState, 'commandId' | 'firstSeq' | 'lastSeq' | 'queuedAtMs'>

/** Newest first: commands the gateway has not reported yet (only queued) first, then by first seq. */
const commandOrder = (a: CommandLike, b: CommandLike): number =>
  (b.firstSeq === 0 ? Infinity : b.firstSeq) - (a.firstSeq === 0 ? Infinity : a.firstSeq) ||
  (b.queuedAtMs ?? 0) - (a.queuedAtMs ?? 0) || (a.commandId < b.commandId ? -1 : a.commandId > b.commandId ? 1 : 0)

/**
 * Keeps at most `max` commands: those only queued by the cloud keep at most half the room (a gateway
 * offline for long must not push out what it reported); then the lowest first seq goes.
 */
function boundCommands<T extends CommandLike> (list: T[], max: number): void {
  const queuedOnly = list.filter((c) => c.firstSeq === 0)
  const maxQueued = Math.max(1, Math.floor(max / 2))
  if (queuedOnly.length > maxQueued) {
    const drop = new Set(queuedOnly.sort((a, b) => (a.queuedAtMs ?? 0) - (b.queuedAtMs ?? 0)).slice(0, queuedOnly.length - maxQueued))
    for (let i = list.length - 1; i >= 0; i--) if (drop.has(list[i])) list.splice(i, 1)
  }
  list.sort(commandOrder)
  if (list.length > max) list.length = max
}

/**
 * True when a full list keeps only commands first reported after `seq`: a command not in it and
 * first seen at `seq` would be dropped at once (derived from the list, so the same for any order).
 */
function tooOld (list: CommandLike[], max: number, seq: number): boolean {
  if (list.length < max) return false
  let lowest = Infinity
  for (const c of list) if (c.firstSeq > 0 && c.firstSeq < lowest) lowest = c.firstSeq
  return seq < lowest
}

function statusOf (timeline: TimelineEntry[]): TimelineEntry | undefined {
  return timeline[timeline.length - 1]
}

/** Applies command_result events to a gateway's commands document in place; returns whether it changed. */
export function applyCommands (doc: CommandsDoc, events: ControlEv[], limits: Pick<ControlLimits, 'commands' | 'timeline'>): boolean {
  let changed = false
  const byId = new Map(doc.commands.map((c) => [c.commandId, c]))
  for (const ev of events) {
    if (ev.kind !== 'command_result' || ev.commandId === '') continue
    let c = byId.get(ev.commandId)
    if (!c) {
      if (tooOld(doc.commands, limits.commands, ev.seq)) continue
      c = { commandId: ev.commandId, deviceId: ev.deviceId, name: ev.commandName, args: null, source: '', ruleId: ev.ruleId, ruleSetVersion: ev.ruleSetVersion, status: 'sent', terminal: false, firstSeq: 0, lastSeq: 0, queuedAtMs: null, expiresAtMs: null, statusTsMs: 0, attempts: 0, timeline: [] }
      byId.set(ev.commandId, c)
      doc.commands.push(c)
    }
    // Seen: in the timeline, or above the first seq but below what a full timeline still keeps.
    const full = c.timeline.length >= limits.timeline && c.firstSeq > 0
    if (c.timeline.some((t) => t.seq === ev.seq) || (full && ev.seq >= c.firstSeq && ev.seq < c.timeline[0].seq)) continue
    const entry: TimelineEntry = { status: ev.commandStatus as CommandStatus, seq: ev.seq, tsMs: ev.eventTsMs, durationMs: ev.durationMs }
    const attempts = num(ev.detail?.attempts)
    if (attempts !== undefined) entry.attempts = attempts
    const detail = str(ev.detail?.detail)
    if (detail) entry.detail = detail
    // Timeline sorted by seq (queued, seq 0, first); the highest `timeline` seqs kept.
    const at = c.timeline.findIndex((t) => t.seq > ev.seq)
    if (at < 0) c.timeline.push(entry)
    else c.timeline.splice(at, 0, entry)
    if (c.timeline.length > limits.timeline) c.timeline.splice(0, c.timeline.length - limits.timeline)
    changed = true
    if (c.firstSeq === 0 || ev.seq < c.firstSeq) {
      c.firstSeq = ev.seq
      // What the first report says about the command fills in what the cloud did not record itself.
      if (!c.name) c.name = ev.commandName
      if (!c.deviceId) c.deviceId = ev.deviceId
      c.ruleId = ev.ruleId
      c.ruleSetVersion = ev.ruleSetVersion
      if (!c.source) c.source = str(ev.detail?.source, 16)
      if (c.args === null && ev.detail && 'args' in ev.detail) c.args = small(ev.detail.args)
      if (c.expiresAtMs === null) c.expiresAtMs = num(ev.detail?.expiresAtMs) ?? null
    }
    if (ev.seq > c.lastSeq) {
      c.lastSeq = ev.seq
      if (attempts !== undefined) c.attempts = attempts
    }
    const last = statusOf(c.timeline)!
    c.status = last.status
    c.statusTsMs = last.tsMs
    c.terminal = TERMINAL_STATUSES.has(last.status)
  }
  if (changed) boundCommands(doc.commands, limits.commands)
  return changed
}

/** A command the cloud published on iot.<gw>.commands, before the gateway reports anything. */
export interface QueuedCommand { commandId: string, deviceId: string, name: string, args: Record<string, unknown>, queuedAtMs: number, expiresAtMs: number }

/** Records a command the cloud queued (status "queued", seq 0); merges with reports already applied. */
export function recordQueued (doc: CommandsDoc, q: QueuedCommand, limits: Pick<ControlLimits, 'commands' | 'timeline'>): boolean {
  let c = doc.commands.find((x) => x.commandId === q.commandId)
  if (c?.timeline.some((t) => t.seq === 0)) return false
  if (!c) {
    c = { commandId: q.commandId, deviceId: q.deviceId, name: q.name, args: null, source: 'cloud', ruleId: '', ruleSetVersion: '', status: 'queued', terminal: false, firstSeq: 0, lastSeq: 0, queuedAtMs: null, expiresAtMs: null, statusTsMs: q.queuedAtMs, attempts: 0, timeline: [] }
    doc.commands.push(c)
  }
  Object.assign(c, { deviceId: q.deviceId, name: q.name, args: small(q.args), source: 'cloud', queuedAtMs: q.queuedAtMs, expiresAtMs: q.expiresAtMs })
  c.timeline.unshift({ status: 'queued', seq: 0, tsMs: q.queuedAtMs })
  if (c.timeline.length > limits.timeline) c.timeline.splice(0, c.timeline.length - limits.timeline)
  const last = statusOf(c.timeline)!
  c.status = last.status
  c.statusTsMs = last.tsMs
  c.terminal = TERMINAL_STATUSES.has(last.status)
  boundCommands(doc.commands, limits.commands)
  return true
}

// --- per device --------------------------------------------------------------------------------

function upsertCommandRef (doc: DeviceControlDoc, r: { commandId: string, name: string, status: CommandStatus, seq: number, tsMs: number, queuedAtMs: number | null }, max: number): boolean {
  let c = doc.commands.find((x) => x.commandId === r.commandId)
  if (!c) {
    if (r.seq !== 0 && tooOld(doc.commands, max, r.seq)) return false
    c = { commandId: r.commandId, name: r.name, status: r.status, firstSeq: 0, lastSeq: 0, statusTsMs: r.tsMs, queuedAtMs: null }
    doc.commands.push(c)
  }
  if (r.seq === 0) {
    if (c.queuedAtMs !== null) return false
    c.queuedAtMs = r.queuedAtMs
    if (c.lastSeq === 0) { c.status = 'queued'; c.statusTsMs = r.tsMs }
  } else {
    if (r.seq === c.firstSeq || r.seq === c.lastSeq) return false
    if (c.firstSeq === 0 || r.seq < c.firstSeq) c.firstSeq = r.seq
    if (r.seq > c.lastSeq) {
      c.lastSeq = r.seq
      c.status = r.status
      c.statusTsMs = r.tsMs
    } else if (r.seq !== c.firstSeq) {
      return false // between first and last: nothing the reference shows changes
    }
    if (!c.name) c.name = r.name
  }
  boundCommands(doc.commands, max)
  return true
}

/** Applies a device's control events (subject_device_id == the device) to its references; returns whether it changed. */
export function applyDeviceControl (doc: DeviceControlDoc, events: ControlEv[], max: number): boolean {
  let changed = false
  for (const ev of events) {
    if (ev.kind === 'decision') {
      if (insertTopN(doc.decisions, { seq: ev.seq, tsMs: ev.eventTsMs, ruleId: ev.ruleId, kind: ev.message, durationMs: ev.durationMs }, max)) changed = true
    } else if (ev.kind === 'alert_raised' || ev.kind === 'alert_cleared') {
      if (insertTopN(doc.alerts, { seq: ev.seq, tsMs: ev.eventTsMs, alertId: ev.alertId, change: ev.kind === 'alert_raised' ? 'raised' : 'cleared', severity: ev.severity, message: ev.message }, max)) changed = true
    } else if (ev.kind === 'command_result' && ev.commandId !== '') {
      if (upsertCommandRef(doc, { commandId: ev.commandId, name: ev.commandName, status: ev.commandStatus as CommandStatus, seq: ev.seq, tsMs: ev.eventTsMs, queuedAtMs: null }, max)) changed = true
    }
  }
  return changed
}

/** Records a queued command in its device's references. */
export function recordQueuedRef (doc: DeviceControlDoc, q: QueuedCommand, max: number): boolean {
  return upsertCommandRef(doc, { commandId: q.commandId, name: q.name, status: 'queued', seq: 0, tsMs: q.queuedAtMs, queuedAtMs: q.queuedAtMs }, max)
}

// --- link health -------------------------------------------------------------------------------

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

/** Apply lag of a gateway as last measured by an aggregator replica (last writer wins). */
export interface LagDoc { v: 1, gatewayId: string, applyLagMs: number, atMs: number }
