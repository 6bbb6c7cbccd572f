// A gateway's alerts: the state per alert id (raised/cleared by max seq, the operator's
// acknowledgement of the current raise) and the recent raise/clear events, bounded. The bound drops
// cleared alerts first; an alert dropped raises the floor below which unknown ids are ignored.
import { insertTopN, type ControlEv, type ControlLimits } from './events.ts'

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

export const newAlertsDoc = (gatewayId: string): AlertsDoc => ({ v: 1, gatewayId, alerts: [], events: [], floorSeq: 0 })

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
