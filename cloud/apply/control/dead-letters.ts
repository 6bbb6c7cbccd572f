// A gateway's recent dead letters (payloads it quarantined, reported in its priority lane):
// the document, bounded to the highest control seqs like the decisions, and how dead_letter events
// change it. The device page reads the same entries from the device's references (device-refs.ts);
// counts by reason since the gateway's start come with its heartbeats (gateway-docs.ts).
import { insertTopN, num, str, type ControlEv } from './events.ts'

export interface DeadLetterEntry {
  seq: number
  /** Gateway clock: when it was quarantined. */
  tsMs: number
  deviceId: string
  reason: string
  detail: string
  topic: string
  /** Size of the whole payload; payloadBase64 holds its first bytes (outbox.deadLetterPayloadBytes). */
  payloadBytes: number
  payloadBase64: string
}

/** A gateway's recent dead letters, highest seq first. */
export interface DeadLettersDoc { v: 1, gatewayId: string, items: DeadLetterEntry[] }

export const newDeadLettersDoc = (gatewayId: string): DeadLettersDoc => ({ v: 1, gatewayId, items: [] })

/** Base64 of at most this many characters (about 3 KiB of payload) is kept. */
const MAX_BASE64 = 4096

/** The entry a dead_letter event makes. */
export function deadLetterEntry (ev: ControlEv): DeadLetterEntry {
  const d = ev.detail
  const b64 = str(d?.payloadBase64, MAX_BASE64)
  return {
    seq: ev.seq,
    tsMs: ev.eventTsMs,
    deviceId: ev.deviceId,
    reason: str(ev.message, 64),
    detail: str(d?.detail, 200),
    topic: str(d?.topic, 256),
    payloadBytes: num(d?.payloadBytes) ?? 0,
    payloadBase64: /^[A-Za-z0-9+/]*={0,2}$/.test(b64) ? b64 : '',
  }
}

/** Applies dead_letter events to a gateway's document in place; returns how many were new. */
export function applyDeadLetters (doc: DeadLettersDoc, events: ControlEv[], max: number): number {
  let n = 0
  for (const ev of events) if (ev.kind === 'dead_letter' && insertTopN(doc.items, deadLetterEntry(ev), max)) n++
  return n
}
