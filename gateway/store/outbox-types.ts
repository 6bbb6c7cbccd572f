// What the outbox's parts (outbox.ts: the writer; outbox-reader.ts: the uplink's reader;
// disk-budget.ts: the budget and shedding) and their users share: lanes, the shapes of what goes in
// and comes out, and how a stored body is decoded.
import { v1, type ControlEventProps } from '../../proto/index.ts'
import type { GatewayError } from '../errors.ts'
import type { StoredRow } from './stored-event.ts'

export const LANE_PRIORITY = 0
export const LANE_TELEMETRY = 1
export type Lane = typeof LANE_PRIORITY | typeof LANE_TELEMETRY

/**
 * Per-row cost counted against the budget on top of the body: the cell (its pointer, payload size,
 * rowid, record header, lane, dev) and the row's share of page headers, free space at the end of
 * pages and interior pages. Measured with SQLite's dbstat (sum(pgsize) of the events table) over
 * outboxes of 2-3 readings per event (68-94 byte bodies): 13-15 bytes per row while rowids are
 * small, 16-17 once they pass 2^21 (a 4-byte varint), so 15 keeps the budget within about 2% of the
 * pages used (test/gateway-budget.test.ts). Nominal, and fixed: rows are counted in at insert and
 * out at delete with this same figure. The stored total records the figure it was counted with
 * (outbox_state.row_overhead, db.ts): at start the budget recounts a total counted with another
 * one (disk-budget.ts), so the figure can change without a migration of its own. It was 12.
 */
export const ROW_OVERHEAD_BYTES = 15

export interface IncomingEvent {
  deviceId: string
  lane: Lane
  eventTsMs: number
  ingestTsMs: number
  eventTsFromGateway: boolean
  readings: Array<{ name: string, value: number }>
  labels?: Record<string, string>
  /** MQTT 5 user properties of the publish, bounded by the broker. */
  userProperties?: Record<string, string>
}

/**
 * What makes a reading recognisable when its device resends it (resend-window.ts): the ts the device
 * stamped on it, and its raw payload (the outbox hashes it).
 */
export interface ReadingIdentity { deviceTsMs: number, payload: Uint8Array }

/** A control-path event (decision, alert, command outcome) for the priority lane; seq is assigned at commit. */
export type IncomingControl = Omit<ControlEventProps, 'seq' | 'deviceId' | 'gatewayId'> & { ingestTsMs: number, eventTsMs: number }

export interface DeadLetter {
  deviceId: string | null
  topic: string
  reason: string
  detail: string
  payload: Buffer
}

export type CommitCallback = (err: GatewayError | null, seq?: number) => void

export interface OutboxOptions {
  budgetBytes: number
  overflow: 'shed-oldest' | 'reject-new'
  maxGroupEvents: number
  maxPendingEvents: number
  deadLetterRows: number
  deadLetterPayloadBytes: number
  /** Dead letters reported to the cloud per second (dead-letters.ts); 0 = none. */
  deadLetterReportsPerSec: number
  /** Committed reading identities remembered per device for resend de-duplication (0 = off). */
  resendWindow: number
}

/** A stored event for the uplink; dev null: a row from before schema version 3, device id in its body. */
export interface UplinkRow extends StoredRow { id: number }

/** A replication batch: inclusive rowid ranges of one lane and of the gaps table (empty when last < first). */
export interface InflightBatch { batchId: string, lane: Lane, firstId: number, lastId: number, gapFirst: number, gapLast: number }

/** A gap record (events shed before they left) as the uplink sends it. */
export interface GapRecord { id: number, deviceId: string, fromSeq: number, toSeq: number, count: number, reason: string, tsMs: number }

export interface OutboxStats { events: number, bytes: number, shedEvents: number, pending: number }

/** Highest events rowid and gaps id: written by a commit, or on disk (synced). */
export interface Watermark { eventId: number, gapId: number }

/** The body stored for a telemetry event: its TelemetryEvent without device_id (the row's dev names the device, stored-event.ts). */
export function encodeTelemetry (ev: IncomingEvent, seq: number): Uint8Array {
  return v1.TelemetryEvent.encode({ seq, eventTsMs: ev.eventTsMs, ingestTsMs: ev.ingestTsMs, readings: ev.readings, labels: ev.labels, eventTsFromGateway: ev.eventTsFromGateway, userProperties: ev.userProperties }).finish()
}

/** The body stored for a control event: its ControlEvent without device_id. */
export function encodeControl (ev: IncomingControl, seq: number): Uint8Array {
  return v1.ControlEvent.encode({ ...ev, deviceId: null, seq }).finish()
}

/**
 * Decodes a stored body: lane 0 holds ControlEvents, lane 1 TelemetryEvents (fields 1-5 agree).
 * deviceId is '' for a row with a device number (stored-event.ts): the outbox's device numbers (device-numbers.ts) name it.
 */
export function decodeStored (lane: Lane, body: Uint8Array): { deviceId: string, seq: number | Long, ingestTsMs: number | Long, eventTsMs: number | Long } {
  return lane === LANE_PRIORITY ? v1.ControlEvent.decode(body) : v1.TelemetryEvent.decode(body)
}
type Long = { toNumber: () => number }
