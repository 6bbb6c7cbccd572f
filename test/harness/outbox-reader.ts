// Reads a gateway's outbox file directly (a separate read-only connection), as an auditor would.
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { v1 } from '../../proto/index.ts'

export interface StoredEvent { id: number, lane: number, deviceId: string, seq: number, readings: Record<string, number>, control?: ReturnType<typeof v1.ControlEvent.decode> }

/** Every event in the outbox in id order, decoded. */
export function readOutbox (dataDir: string): StoredEvent[] {
  const db = new Database(join(dataDir, 'gateway.db'), { readonly: true })
  try {
    return (db.prepare('SELECT id, lane, body FROM events ORDER BY id').all() as Array<{ id: number, lane: number, body: Buffer }>).map((r) => {
      if (r.lane === 0) {
        const c = v1.ControlEvent.decode(r.body)
        return { id: r.id, lane: r.lane, deviceId: c.deviceId, seq: Number(c.seq), readings: {}, control: c }
      }
      const ev = v1.TelemetryEvent.decode(r.body)
      return { id: r.id, lane: r.lane, deviceId: ev.deviceId, seq: Number(ev.seq), readings: Object.fromEntries(ev.readings.map((x) => [x.name!, x.value!])) }
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
