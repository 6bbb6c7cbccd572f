// A gateway's recent decisions (rules that fired or cleared), highest control seq first, bounded:
// the document, and how decision events change it. Trigger and actions are taken from the event's
// detail JSON and cut to what the console shows.
import { insertTopN, num, str, type ControlEv } from './events.ts'

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

export const newDecisionsDoc = (gatewayId: string): DecisionsDoc => ({ v: 1, gatewayId, items: [] })

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
