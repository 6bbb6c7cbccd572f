// Decodes and validates a device's telemetry payload (JSON or protobuf DeviceReport) into readings.
// Pure: no I/O. A refusal names its reason (a stable code) and a human-readable detail.
import protobuf from 'protobufjs/minimal.js'
import { v1 } from '../../proto/index.ts'

/** Why a payload was refused; these are the `reason` labels of gateway_rejected_total. */
export type PayloadRejectReason =
  | 'payload_too_large' | 'malformed_json' | 'malformed_protobuf' | 'unknown_field' | 'unsupported_schema'
  | 'non_finite_value' | 'bad_value' | 'no_readings' | 'too_many_readings' | 'bad_reading_name' | 'bad_label'

export interface DecodedPayload {
  readings: Array<{ name: string, value: number }>
  labels?: Record<string, string>
  /** Device's event time (ms) when it sent one, else null. */
  tsMs: number | null
}

export type DecodeResult = { ok: true, value: DecodedPayload } | { ok: false, reason: PayloadRejectReason, detail: string }

export const MAX_READINGS = 64
export const MAX_LABELS = 16
export const SUPPORTED_SCHEMA = 1
const NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/
const RESERVED_JSON_KEYS = new Set(['ts', 'labels', 'schema'])
/** Event time is trusted when within this window around the gateway's clock; otherwise ingest time is used. */
export const MAX_PAST_MS = 30 * 24 * 3600 * 1000
export const MAX_FUTURE_MS = 60 * 1000

const reject = (reason: PayloadRejectReason, detail: string): DecodeResult => ({ ok: false, reason, detail })

/**
 * Decodes a payload. JSON is recognised by its first non-blank byte `{`; anything else is read as a
 * protobuf iot.v1.DeviceReport (a valid report can never start with 0x7b: that is a group tag).
 */
export function decodePayload (payload: Buffer, maxBytes: number): DecodeResult {
  if (payload.length > maxBytes) return reject('payload_too_large', `payload is ${payload.length} bytes, limit ${maxBytes}`)
  let i = 0
  while (i < payload.length && (payload[i] === 0x20 || payload[i] === 0x0a || payload[i] === 0x0d || payload[i] === 0x09)) i++
  return payload[i] === 0x7b ? decodeJson(payload) : decodeProtobuf(payload)
}

function decodeJson (payload: Buffer): DecodeResult {
  let doc: unknown
  try {
    doc = JSON.parse(payload.toString('utf8'))
  } catch (err) {
    return reject('malformed_json', (err as Error).message.slice(0, 200))
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return reject('malformed_json', 'top level must be an object')
  const obj = doc as Record<string, unknown>
  if (obj.schema !== undefined && obj.schema !== SUPPORTED_SCHEMA) return reject('unsupported_schema', `schema ${JSON.stringify(obj.schema)} is not supported (use ${SUPPORTED_SCHEMA})`)
  let tsMs: number | null = null
  if (obj.ts !== undefined) {
    if (typeof obj.ts !== 'number' || !Number.isFinite(obj.ts)) return reject('bad_value', 'ts must be a finite number of ms since the epoch')
    tsMs = obj.ts
  }
  let labels: Record<string, string> | undefined
  if (obj.labels !== undefined) {
    const checked = checkLabels(obj.labels)
    if (typeof checked === 'string') return reject('bad_label', checked)
    labels = checked
  }
  const readings: Array<{ name: string, value: number }> = []
  for (const [name, value] of Object.entries(obj)) {
    if (RESERVED_JSON_KEYS.has(name)) continue
    if (typeof value !== 'number') return reject('unknown_field', `field "${name.slice(0, 64)}" is not a number`)
    const bad = checkReading(name, value)
    if (bad) return bad
    readings.push({ name, value })
  }
  return finish(readings, labels, tsMs)
}

function decodeProtobuf (payload: Buffer): DecodeResult {
  let report: ReturnType<typeof v1.DeviceReport.decode>
  try {
    // Keep unknown fields (protobufjs drops them by default) so that they can be refused.
    const reader = protobuf.Reader.create(payload)
    reader.discardUnknown = false
    report = v1.DeviceReport.decode(reader)
  } catch (err) {
    return reject('malformed_protobuf', (err as Error).message.slice(0, 200))
  }
  if (report.$unknowns?.length || report.readings.some((r) => (r as { $unknowns?: unknown[] }).$unknowns?.length)) return reject('unknown_field', 'report has fields unknown to iot.v1.DeviceReport')
  const schema = report.schema || SUPPORTED_SCHEMA
  if (schema !== SUPPORTED_SCHEMA) return reject('unsupported_schema', `schema ${schema} is not supported (use ${SUPPORTED_SCHEMA})`)
  const readings: Array<{ name: string, value: number }> = []
  for (const r of report.readings) {
    const bad = checkReading(r.name ?? '', r.value ?? 0)
    if (bad) return bad
    readings.push({ name: r.name ?? '', value: r.value ?? 0 })
  }
  let labels: Record<string, string> | undefined
  if (report.labels && Object.keys(report.labels).length > 0) {
    const checked = checkLabels(report.labels)
    if (typeof checked === 'string') return reject('bad_label', checked)
    labels = checked
  }
  const ts = Number(report.tsMs)
  return finish(readings, labels, ts > 0 ? ts : null)
}

function checkReading (name: string, value: number): DecodeResult | null {
  if (!NAME.test(name)) return reject('bad_reading_name', `reading name "${name.slice(0, 64)}" must match ${NAME.source}`)
  if (!Number.isFinite(value)) return reject('non_finite_value', `reading "${name}" is ${value}`)
  return null
}

function checkLabels (labels: unknown): Record<string, string> | string {
  if (typeof labels !== 'object' || labels === null || Array.isArray(labels)) return 'labels must be an object of strings'
  const entries = Object.entries(labels as Record<string, unknown>)
  if (entries.length > MAX_LABELS) return `at most ${MAX_LABELS} labels`
  for (const [k, v] of entries) {
    if (!NAME.test(k)) return `label name "${k.slice(0, 64)}" must match ${NAME.source}`
    if (typeof v !== 'string' || v.length > 256) return `label "${k}" must be a string of at most 256 characters`
  }
  return labels as Record<string, string>
}

function finish (readings: DecodedPayload['readings'], labels: DecodedPayload['labels'], tsMs: number | null): DecodeResult {
  if (readings.length === 0) return reject('no_readings', 'payload has no readings')
  if (readings.length > MAX_READINGS) return reject('too_many_readings', `${readings.length} readings, limit ${MAX_READINGS}`)
  return { ok: true, value: { readings, labels, tsMs } }
}

/** Chooses the event time: the device's when sane, otherwise ingest time (flagged). */
export function eventTime (deviceTsMs: number | null, ingestTsMs: number): { eventTsMs: number, fromGateway: boolean } {
  if (deviceTsMs !== null && deviceTsMs >= ingestTsMs - MAX_PAST_MS && deviceTsMs <= ingestTsMs + MAX_FUTURE_MS) {
    return { eventTsMs: Math.trunc(deviceTsMs), fromGateway: false }
  }
  return { eventTsMs: ingestTsMs, fromGateway: true }
}
