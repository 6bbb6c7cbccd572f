// Reads a gateway's outbox file directly (a separate read-only connection), as an auditor would.
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { v1 } from '../../proto/index.ts'

export interface StoredEvent { id: number, lane: number, deviceId: string, seq: number, readings: Record<string, number>, control?: ReturnType<typeof v1.ControlEvent.decode> }

/**
 * Every event in the outbox in id order, decoded. A row names its device by number (events.dev =
 * device_seq.num, gateway/store/stored-event.ts); rows from before schema version 3 (dev NULL) carry
 * the id in their body. A row naming a number device_seq does not hold is an error, unless
 * `unknownDevices: 'keep'` (for tests that damage the outbox): its deviceId is then `#<number>`.
 */
export function readOutbox (dataDir: string, opts: { unknownDevices?: 'throw' | 'keep' } = {}): StoredEvent[] {
  const db = new Database(join(dataDir, 'gateway.db'), { readonly: true })
  try {
    const rows = db.prepare('SELECT e.id, e.lane, e.dev, e.body, d.device_id FROM events e LEFT JOIN device_seq d ON d.num = e.dev ORDER BY e.id').all() as Array<{ id: number, lane: number, dev: number | null, body: Buffer, device_id: string | null }>
    return rows.map((r) => {
      if (r.dev !== null && r.device_id === null) {
        if (opts.unknownDevices !== 'keep') throw new Error(`outbox row ${r.id} names device number ${r.dev}, which device_seq does not hold`)
        r.device_id = `#${r.dev}`
      }
      if (r.lane === 0) {
        const c = v1.ControlEvent.decode(r.body)
        if (r.device_id !== null) c.deviceId = r.device_id
        return { id: r.id, lane: r.lane, deviceId: c.deviceId, seq: Number(c.seq), readings: {}, control: c }
      }
      const ev = v1.TelemetryEvent.decode(r.body)
      return { id: r.id, lane: r.lane, deviceId: r.device_id ?? ev.deviceId, seq: Number(ev.seq), readings: Object.fromEntries(ev.readings.map((x) => [x.name!, x.value!])) }
    })
  } finally {
    db.close()
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
