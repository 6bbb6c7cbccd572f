// One device's references into its gateway's control views (its recent decisions, alerts, commands
// and dead letters), for the device page: bounded lists by seq, like the gateway's documents.
import { boundCommands, tooOld, type CommandStatus, type QueuedCommand } from './commands.ts'
import { deadLetterEntry, type DeadLetterEntry } from './dead-letters.ts'
import { insertTopN, type ControlEv } from './events.ts'

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
  /** Absent in documents written before dead letters were reported. */
  deadLetters?: DeadLetterEntry[]
}

export const newDeviceControlDoc = (gatewayId: string, deviceId: string): DeviceControlDoc => ({ v: 1, gatewayId, deviceId, decisions: [], alerts: [], commands: [] })

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
    } else if (ev.kind === 'dead_letter') {
      if (insertTopN(doc.deadLetters ??= [], deadLetterEntry(ev), max)) changed = true
    }
  }
  return changed
}

/** Records a queued command in its device's references. */
export function recordQueuedRef (doc: DeviceControlDoc, q: QueuedCommand, max: number): boolean {
  return upsertCommandRef(doc, { commandId: q.commandId, name: q.name, status: 'queued', seq: 0, tsMs: q.queuedAtMs, queuedAtMs: q.queuedAtMs }, max)
}
