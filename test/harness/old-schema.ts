// Databases as older gateways left them, for the upgrade tests: today's schema less what later
// versions added (gateway/store/db.ts), holding rows in the old layout.
import { openDb } from '../../gateway/index.ts'
import { ROW_OVERHEAD_BYTES, type Lane } from '../../gateway/store/outbox.ts'

/** A version-2 gateway's database: today's schema without what version 3 added, holding `rows` (device id in the body). */
export function v2Database (dir: string, rows: Array<{ lane: Lane, body: Uint8Array }>, lastSeq: Record<string, number>): void {
  const db = openDb(dir, 'normal')
  db.exec('DROP INDEX device_seq_num; ALTER TABLE device_seq DROP COLUMN num; ALTER TABLE events DROP COLUMN dev')
  db.pragma('user_version = 2')
  const insert = db.prepare('INSERT INTO events (lane, body) VALUES (?, ?)')
  db.transaction(() => {
    for (const r of rows) insert.run(r.lane, r.body)
    for (const [id, seq] of Object.entries(lastSeq)) db.prepare('INSERT INTO device_seq (device_id, last_seq) VALUES (?, ?)').run(id, seq)
    const bytes = rows.reduce((s, r) => s + r.body.length + ROW_OVERHEAD_BYTES, 0)
    db.prepare('UPDATE outbox_state SET events = ?, bytes = ? WHERE id = 1').run(rows.length, bytes)
  })()
  db.close()
}

