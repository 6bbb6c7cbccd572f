// Reads a gateway's outbox file directly (a separate read-only connection), as an auditor would.
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { v1 } from '../../proto/index.ts'

export interface StoredEvent { id: number, lane: number, deviceId: string, seq: number, readings: Record<string, number>, control?: ReturnType<typeof v1.ControlEvent.decode> }

type Row = { id: number, lane: number, dev: number | null, body: Buffer, device_id: string | null }
type UnknownDevices = 'throw' | 'keep'

const ROWS_AFTER = 'SELECT e.id, e.lane, e.dev, e.body, d.device_id FROM events e LEFT JOIN device_seq d ON d.num = e.dev WHERE e.id > ? ORDER BY e.id'

function decodeRow (r: Row, unknownDevices: UnknownDevices): StoredEvent {
  if (r.dev !== null && r.device_id === null) {
    if (unknownDevices !== 'keep') throw new Error(`outbox row ${r.id} names device number ${r.dev}, which device_seq does not hold`)
    r.device_id = `#${r.dev}`
  }
  if (r.lane === 0) {
    const c = v1.ControlEvent.decode(r.body)
    if (r.device_id !== null) c.deviceId = r.device_id
    return { id: r.id, lane: r.lane, deviceId: c.deviceId, seq: Number(c.seq), readings: {}, control: c }
  }
  const ev = v1.TelemetryEvent.decode(r.body)
  return { id: r.id, lane: r.lane, deviceId: r.device_id ?? ev.deviceId, seq: Number(ev.seq), readings: Object.fromEntries(ev.readings.map((x) => [x.name!, x.value!])) }
}

/**
 * Every event in the outbox in id order, decoded. A row names its device by number (events.dev =
 * device_seq.num, gateway/store/stored-event.ts); rows from before schema version 3 (dev NULL) carry
 * the id in their body. A row naming a number device_seq does not hold is an error, unless
 * `unknownDevices: 'keep'` (for tests that damage the outbox): its deviceId is then `#<number>`.
 */
export function readOutbox (dataDir: string, opts: { unknownDevices?: UnknownDevices } = {}): StoredEvent[] {
  const db = new Database(join(dataDir, 'gateway.db'), { readonly: true })
  try {
    return (db.prepare(ROWS_AFTER).all(0) as Row[]).map((r) => decodeRow(r, opts.unknownDevices ?? 'throw'))
  } finally {
    db.close()
  }
}

/**
 * An auditor that follows the outbox as it is committed: one read-only connection, kept open, which
 * sees only committed rows. next() returns the events committed since the previous call (rows the
 * uplink already removed are never seen; use it on a gateway without an uplink). close() when done.
 */
export function followOutbox (dataDir: string): { next: () => StoredEvent[], close: () => void } {
  const db = new Database(join(dataDir, 'gateway.db'), { readonly: true })
  const after = db.prepare(ROWS_AFTER)
  let last = 0
  return {
    next: () => {
      const events = (after.all(last) as Row[]).map((r) => decodeRow(r, 'throw'))
      if (events.length > 0) last = events[events.length - 1].id
      return events
    },
    close: () => { db.close() },
  }
}

/** Runs a query on the outbox file with a fresh read-only connection. */
export function queryOutbox<T> (dataDir: string, sql: string, ...params: unknown[]): T[] {
  const db = new Database(join(dataDir, 'gateway.db'), { readonly: true })
  try {
    return db.prepare(sql).all(...params) as T[]
  } finally {
    db.close()
  }
}
