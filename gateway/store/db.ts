// Opens the gateway's SQLite database (outbox, sequence counters, dead letters, gaps, device registry)
// and brings its schema up to date. One file: gateway.db in the data directory, WAL mode.
import Database from 'better-sqlite3'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { GatewayError } from '../errors.ts'

export type Db = Database.Database

/**
 * 1: the first schema. 2: device_seq.recent (the resend window, gateway/store/resend-window.ts).
 * 3: device numbers (device_seq.num, events.dev): a row names its device by number (stored-event.ts).
 */
export const SCHEMA_VERSION = 3

/** Opens (creating if needed) gateway.db under dataDir. durability 'full' starts with synchronous=FULL; the outbox then commits with NORMAL and fsyncs the WAL itself (wal-sync.ts). */
export function openDb (dataDir: string, durability: 'full' | 'normal' = 'full'): Db {
  mkdirSync(dataDir, { recursive: true })
  const file = join(dataDir, 'gateway.db')
  const db = new Database(file)
  try {
    refuseNewer(db, file)
  } catch (err) {
    db.close()
    throw err
  }
  db.pragma('journal_mode = WAL')
  // FULL syncs the WAL on every commit (power-loss safe); NORMAL syncs only at checkpoints.
  db.pragma(`synchronous = ${durability === 'full' ? 'FULL' : 'NORMAL'}`)
  db.pragma('busy_timeout = 5000')
  migrate(db)
  addRowOverhead(db)
  return db
}

// A database of a newer gateway (a downgrade, or an old binary left on a box) may hold rows this code
// would misread: version 3 rows carry no device id in their body, so a version-2 gateway would send
// events without one. Refused before anything is written (not even the WAL switch).
function refuseNewer (db: Db, file: string): void {
  const version = db.pragma('user_version', { simple: true }) as number
  if (version > SCHEMA_VERSION) {
    throw new GatewayError('GW_ERR_SCHEMA_NEWER', `${file} has schema version ${version}, newer than this gateway's ${SCHEMA_VERSION}: it was written by a newer gateway. Nothing was changed; run that version (or a newer one) on this data directory`)
  }
}

// Each step brings the schema from one version to the next, in one transaction with its version
// bump; a fresh database takes every step. Steps only add, so that a database from any earlier
// version opens.
function migrate (db: Db): void {
  const userVersion = (): number => db.pragma('user_version', { simple: true }) as number
  if (userVersion() >= SCHEMA_VERSION) return
  db.transaction(() => {
    // Read again under the write lock: another process (the devices CLI) may have migrated meanwhile.
    const version = userVersion()
    if (version >= SCHEMA_VERSION) return
    if (version < 1) createV1(db)
    if (version < 2) {
      // The identities of a device's last committed readings (resend-window.ts: a header, then
      // ENTRY_BYTES per identity, oldest first), written with last_seq in the commit of its events.
      // NULL: none yet. Adding a nullable column rewrites nothing: instant on a full outbox.
      db.exec('ALTER TABLE device_seq ADD COLUMN recent BLOB')
    }
    if (version < 3) {
      // A small number per device, given in the commit of its first event from version 3 on, and
      // never reused; events.dev names the device of a row by it, and the row's body no longer
      // carries the device id (stored-event.ts). Rows written before keep dev NULL and the id in
      // their body. Nullable columns rewrite nothing; the index is over device_seq (one row per
      // device), not events: the step stays instant on a full outbox. Unique: two devices sharing
      // a number would mix up their events, so the commit that tried it fails instead.
      db.exec(`
        ALTER TABLE device_seq ADD COLUMN num INTEGER;
        ALTER TABLE events ADD COLUMN dev INTEGER;
        CREATE UNIQUE INDEX IF NOT EXISTS device_seq_num ON device_seq (num);
      `)
    }
    db.pragma(`user_version = ${SCHEMA_VERSION}`)
  }).immediate()
}

// outbox_state.row_overhead: the per-row overhead (ROW_OVERHEAD_BYTES, outbox-types.ts) its byte
// total was counted with, so that the budget recounts the total at start when the figure changes
// (disk-budget.ts). Added beside the versions: its absence means 12, what every total counted
// before it used, which DEFAULT gives the existing row. Adding a column rewrites nothing.
function addRowOverhead (db: Db): void {
  const has = (): boolean => (db.pragma('table_info(outbox_state)') as Array<{ name: string }>).some((c) => c.name === 'row_overhead')
  if (has()) return
  db.transaction(() => {
    // Checked again under the write lock: another process (the devices CLI) may have added it.
    if (!has()) db.exec('ALTER TABLE outbox_state ADD COLUMN row_overhead INTEGER NOT NULL DEFAULT 12')
  }).immediate()
}

function createV1 (db: Db): void {
  db.exec(`
    -- Every accepted event, in ingest order (id). lane 0 = priority (alerts, decisions, command
    -- results), lane 1 = routine telemetry. body = iot.v1.TelemetryEvent without gateway_id
    -- (lane 0: ControlEvent). Version 3 adds dev and drops device_id from new bodies (see there).
    -- AUTOINCREMENT: a rowid is never reused, even after the table empties, so replication batch
    -- ids (built from rowid ranges) never repeat.
    CREATE TABLE IF NOT EXISTS events (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      lane INTEGER NOT NULL,
      body BLOB NOT NULL
    );
    -- Priority rows are few: a partial index lets the uplink find them without scanning telemetry.
    CREATE INDEX IF NOT EXISTS events_priority ON events (id) WHERE lane = 0;
    -- Batches published to the cloud but not yet acknowledged: re-sent after a crash with the same
    -- id (JetStream de-duplicates them). Ranges are inclusive rowids of one lane (and gap rowids).
    CREATE TABLE IF NOT EXISTS uplink_inflight (
      batch_id TEXT PRIMARY KEY,
      lane INTEGER NOT NULL,
      first_id INTEGER NOT NULL,
      last_id INTEGER NOT NULL,
      gap_first INTEGER NOT NULL,
      gap_last INTEGER NOT NULL
    ) WITHOUT ROWID;
    -- Last sequence number handed out per device; written in the same transaction as the events.
    CREATE TABLE IF NOT EXISTS device_seq (
      device_id TEXT PRIMARY KEY,
      last_seq INTEGER NOT NULL
    ) WITHOUT ROWID;
    -- Running totals so that start-up never scans the events table.
    CREATE TABLE IF NOT EXISTS outbox_state (
      id INTEGER PRIMARY KEY CHECK (id = 1),
      events INTEGER NOT NULL,
      bytes INTEGER NOT NULL,
      shed_events INTEGER NOT NULL,
      -- Random per database: part of every batch id, so a re-installed gateway never repeats one.
      epoch TEXT NOT NULL
    );
    INSERT OR IGNORE INTO outbox_state (id, events, bytes, shed_events, epoch) VALUES (1, 0, 0, 0, lower(hex(randomblob(6))));
    -- Ranges of sequence numbers that will never be sent (shed over budget), to be reported to the cloud.
    CREATE TABLE IF NOT EXISTS gaps (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      device_id TEXT NOT NULL,
      from_seq INTEGER NOT NULL,
      to_seq INTEGER NOT NULL,
      count INTEGER NOT NULL,
      reason TEXT NOT NULL,
      ts INTEGER NOT NULL
    );
    -- Quarantined input: why, from whom, and a bounded copy of the payload.
    CREATE TABLE IF NOT EXISTS dead_letters (
      id INTEGER PRIMARY KEY,
      ts INTEGER NOT NULL,
      device_id TEXT,
      topic TEXT NOT NULL,
      reason TEXT NOT NULL,
      detail TEXT NOT NULL,
      payload_bytes INTEGER NOT NULL,
      payload BLOB NOT NULL
    );
    -- Device registry: secrets are stored only as salted SHA-256 hashes.
    CREATE TABLE IF NOT EXISTS devices (
      device_id TEXT PRIMARY KEY,
      salt BLOB NOT NULL,
      hash BLOB NOT NULL,
      disabled INTEGER NOT NULL DEFAULT 0,
      created_ts INTEGER NOT NULL,
      rotated_ts INTEGER NOT NULL
    ) WITHOUT ROWID;
  `)
}
