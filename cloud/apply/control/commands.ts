// A gateway's recent commands, each with its status timeline: the document, how command_result
// events change it, and the "queued" entry the cloud records when it publishes a command. A
// command's status is that of its highest-seq event; the list is bounded (queued-only commands keep
// at most half the room, then the lowest first seq goes).
import { num, small, str, type ControlEv, type ControlLimits } from './events.ts'

export type CommandStatus = 'queued' | 'sent' | 'delivered' | 'acknowledged' | 'rejected' | 'timed_out' | 'expired'
/** Statuses after which the gateway reports nothing more about a command. */
export const TERMINAL_STATUSES: ReadonlySet<string> = new Set(['acknowledged', 'rejected', 'timed_out', 'expired'])

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

export const newCommandsDoc = (gatewayId: string): CommandsDoc => ({ v: 1, gatewayId, commands: [] })

export type CommandLike = Pick<CommandState, 'commandId' | 'firstSeq' | 'lastSeq' | 'queuedAtMs'>

/** Newest first: commands the gateway has not reported yet (only queued) first, then by first seq. */
const commandOrder = (a: CommandLike, b: CommandLike): number =>
  (b.firstSeq === 0 ? Infinity : b.firstSeq) - (a.firstSeq === 0 ? Infinity : a.firstSeq) ||
  (b.queuedAtMs ?? 0) - (a.queuedAtMs ?? 0) || (a.commandId < b.commandId ? -1 : a.commandId > b.commandId ? 1 : 0)

/**
 * Keeps at most `max` commands: those only queued by the cloud keep at most half the room (a gateway
 * offline for long must not push out what it reported); then the lowest first seq goes.
 */
export function boundCommands<T extends CommandLike> (list: T[], max: number): void {
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
export function tooOld (list: CommandLike[], max: number, seq: number): boolean {
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
