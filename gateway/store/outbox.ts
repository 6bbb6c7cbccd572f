// The store-and-forward outbox: every accepted event is committed here, in groups, before it is
// acknowledged. Sequence numbers are assigned inside the commit, so a number is never reused after
// a crash; so is each device's resend window (resend-window.ts), so a resend is recognised after a
// crash too. A disk budget with an explicit overflow policy bounds it; shedding records a gap.
import type { Statement } from 'better-sqlite3'
import { CONTROL_DEVICE_ID, v1, type ControlEventProps } from '../../proto/index.ts'
import type { Db } from './db.ts'
import { GatewayError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { GatewayMetrics } from '../metrics.ts'
import { COMMITTED_READING, NEW_READING, ResendWindows } from './resend-window.ts'
import { DeviceNumbers } from './device-numbers.ts'
import type { StoredRow } from './stored-event.ts'
import { WalSync } from './wal-sync.ts'

export const LANE_PRIORITY = 0
export const LANE_TELEMETRY = 1
export type Lane = typeof LANE_PRIORITY | typeof LANE_TELEMETRY

/**
 * Per-row cost counted against the budget on top of the body (rowid, lane, dev, record header).
 * Nominal, and fixed: rows are counted in at insert and out at delete with this same figure.
 */
export const ROW_OVERHEAD_BYTES = 12

export interface IncomingEvent {
  deviceId: string
  lane: Lane
  eventTsMs: number
  ingestTsMs: number
  eventTsFromGateway: boolean
  readings: Array<{ name: string, value: number }>
  labels?: Record<string, string>
}

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
  /** Committed reading identities remembered per device for resend de-duplication (0 = off). */
  resendWindow: number
}

/** A control-path event (decision, alert, command outcome) for the priority lane; seq is assigned at commit. */
export type IncomingControl = Omit<ControlEventProps, 'seq' | 'deviceId' | 'gatewayId'> & { ingestTsMs: number, eventTsMs: number }

type Pending =
  | { kind: 'event', ev: IncomingEvent, cb: CommitCallback, at: number, ticket: number }
  | { kind: 'control', ev: IncomingControl, cb: CommitCallback, at: number }
  | { kind: 'dead', dl: DeadLetter, cb: CommitCallback, at: number }

/** A stored event for the uplink; dev null: a row from before schema version 3, device id in its body. */
export interface UplinkRow extends StoredRow { id: number }

/** A replication batch: inclusive rowid ranges of one lane and of the gaps table (empty when last < first). */
export interface InflightBatch { batchId: string, lane: Lane, firstId: number, lastId: number, gapFirst: number, gapLast: number }

export interface OutboxStats { events: number, bytes: number, shedEvents: number, pending: number }

/**
 * Decodes a stored body: lane 0 holds ControlEvents, lane 1 TelemetryEvents (fields 1-5 agree).
 * deviceId is '' for a row with a device number (stored-event.ts): the outbox's device numbers (device-numbers.ts) name it.
 */
export function decodeStored (lane: Lane, body: Uint8Array): { deviceId: string, seq: number | Long, ingestTsMs: number | Long, eventTsMs: number | Long } {
  return lane === LANE_PRIORITY ? v1.ControlEvent.decode(body) : v1.TelemetryEvent.decode(body)
}
type Long = { toNumber: () => number }

/** The SQLite outbox with group commit. Lifecycle: start(), close() (flushes), destroy(). */
export class Outbox {
  private readonly db: Db
  private readonly opts: OutboxOptions
  private readonly log: Logger
  private readonly metrics: GatewayMetrics
  private queue: Pending[] = []
  private flushScheduled = false
  private closed = false
  private readonly lastSeq = new Map<string, number>()
  /** Device numbers (device_seq.num, events.dev). */
  private readonly devices = new DeviceNumbers()
  /** Mean wire size of the rows readLane last returned, per lane (see there). */
  private readonly rowBytes = [128, 128]
  private readonly resends: ResendWindows
  private readonly commitListeners: Array<() => void> = []
  private state = { events: 0, bytes: 0, shedEvents: 0 }
  /** Random id of this database, part of every replication batch id. */
  epoch = ''
  /** durability=full: the WAL is fsynced by walSync after each commit, off the event loop. */
  private walSync: WalSync | null = null
  /** Highest events rowid and gaps id that are on disk (synced): the uplink never reads past them. */
  private durable = { eventId: 0, gapId: 0 }
  /** Highest ids written by the commit in progress. */
  private written = { eventId: 0, gapId: 0 }
  private stmts!: {
    insertEvent: Statement
    upsertSeq: Statement
    numberDevice: Statement
    upsertSeqRecent: Statement
    readRecent: Statement
    saveState: Statement
    insertDead: Statement
    trimDead: Statement
    oldestTelemetry: Statement
    oldestAny: Statement
    deleteUpTo: Statement
    insertGap: Statement
    firstBody: Statement
    readLane: Statement
    maxId: Statement
    readGaps: Statement
    insertInflight: Statement
    deleteInflight: Statement
    rangeSize: Statement
    deleteRange: Statement
    deleteGaps: Statement
  }

  constructor (db: Db, opts: OutboxOptions, log: Logger, metrics: GatewayMetrics) {
    this.db = db
    this.opts = opts
    this.log = log
    this.metrics = metrics
    this.resends = new ResendWindows(opts.resendWindow)
  }

  /** Loads sequence counters, resend windows and running totals; fast even with millions of buffered events. */
  start (): void {
    const db = this.db
    if ((db.pragma('synchronous', { simple: true }) as number) >= 2) {
      // Durability full, without an fsync inside each commit on this thread: commits write the WAL
      // (synchronous=NORMAL) and walSync fsyncs it on the thread pool before anything is acknowledged.
      db.pragma('synchronous = NORMAL')
      this.walSync = new WalSync(`${db.name}-wal`, (ms) => this.metrics.walSyncSeconds.observe(ms / 1000))
    }
    this.stmts = {
      insertEvent: db.prepare('INSERT INTO events (lane, dev, body) VALUES (?, ?, ?)'),
      upsertSeq: db.prepare('INSERT INTO device_seq (device_id, last_seq) VALUES (?, ?) ON CONFLICT(device_id) DO UPDATE SET last_seq = excluded.last_seq'),
      // last_seq 0 only until the upsert at the end of the same transaction sets the real one.
      numberDevice: db.prepare('INSERT INTO device_seq (device_id, last_seq, num) VALUES (?, 0, ?) ON CONFLICT(device_id) DO UPDATE SET num = excluded.num'),
      upsertSeqRecent: db.prepare('INSERT INTO device_seq (device_id, last_seq, recent) VALUES (?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET last_seq = excluded.last_seq, recent = excluded.recent'),
      readRecent: db.prepare('SELECT recent FROM device_seq WHERE device_id = ?').pluck(),
      saveState: db.prepare('UPDATE outbox_state SET events = ?, bytes = ?, shed_events = ? WHERE id = 1'),
      insertDead: db.prepare('INSERT INTO dead_letters (ts, device_id, topic, reason, detail, payload_bytes, payload) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      trimDead: db.prepare('DELETE FROM dead_letters WHERE id <= ?'),
      oldestTelemetry: db.prepare(`SELECT id, lane, dev, body FROM events WHERE lane = ${LANE_TELEMETRY} ORDER BY id LIMIT ?`),
      oldestAny: db.prepare('SELECT id, lane, dev, body FROM events ORDER BY id LIMIT ?'),
      deleteUpTo: db.prepare('DELETE FROM events WHERE id <= ? AND (? OR lane = ' + LANE_TELEMETRY + ')'),
      insertGap: db.prepare('INSERT INTO gaps (device_id, from_seq, to_seq, count, reason, ts) VALUES (?, ?, ?, ?, ?, ?)'),
      firstBody: db.prepare('SELECT lane, body FROM events ORDER BY id LIMIT 1'),
      readLane: db.prepare('SELECT id, dev, body FROM events WHERE lane = ? AND id > ? AND id <= ? ORDER BY id LIMIT ?'),
      maxId: db.prepare('SELECT max(id) AS id FROM events WHERE lane = ?'),
      readGaps: db.prepare('SELECT id, device_id, from_seq, to_seq, count, reason, ts FROM gaps WHERE id > ? AND id <= ? ORDER BY id LIMIT ?'),
      insertInflight: db.prepare('INSERT OR REPLACE INTO uplink_inflight (batch_id, lane, first_id, last_id, gap_first, gap_last) VALUES (?, ?, ?, ?, ?, ?)'),
      deleteInflight: db.prepare('DELETE FROM uplink_inflight WHERE batch_id = ?'),
      rangeSize: db.prepare('SELECT count(*) AS n, sum(length(body)) AS bytes FROM events WHERE lane = ? AND id BETWEEN ? AND ?'),
      deleteRange: db.prepare('DELETE FROM events WHERE lane = ? AND id BETWEEN ? AND ?'),
      deleteGaps: db.prepare('DELETE FROM gaps WHERE id BETWEEN ? AND ?'),
    }
    for (const row of db.prepare('SELECT device_id, last_seq, recent, num FROM device_seq').iterate() as Iterable<{ device_id: string, last_seq: number, recent: Buffer | null, num: number | null }>) {
      this.lastSeq.set(row.device_id, row.last_seq)
      if (row.recent !== null) this.resends.load(row.device_id, row.recent)
      if (row.num !== null) this.devices.load(row.device_id, row.num)
    }
    this.durable = {
      eventId: (db.prepare('SELECT max(id) AS id FROM events').get() as { id: number | null }).id ?? 0,
      gapId: (db.prepare('SELECT max(id) AS id FROM gaps').get() as { id: number | null }).id ?? 0,
    }
    this.written = { ...this.durable }
    const s = db.prepare('SELECT events, bytes, shed_events, epoch FROM outbox_state WHERE id = 1').get() as { events: number, bytes: number, shed_events: number, epoch: string }
    this.state = { events: s.events, bytes: s.bytes, shedEvents: s.shed_events }
    this.epoch = s.epoch
    this.metrics.outboxBudgetBytes.set(this.opts.budgetBytes)
    this.updateGauges()
  }

  /**
   * Queues an event for the next commit group; cb runs after the commit with its sequence number.
   * With the device's ts and the payload's hash (a reading the device stamped), a resend of it is
   * recognised from now on.
   */
  appendEvent (ev: IncomingEvent, cb: CommitCallback, deviceTsMs: number | null = null, payloadHash = 0): void {
    const p: Pending = { kind: 'event', ev, cb, at: performance.now(), ticket: -1 }
    if (this.enqueue(p) && deviceTsMs !== null && this.resends.enabled) p.ticket = this.resends.queue(ev.deviceId, deviceTsMs, payloadHash)
  }

  /** Whether resends are recognised at all (outbox.resendWindow > 0). */
  get recognisesResends (): boolean { return this.resends.enabled }

  /**
   * A device resending a reading it sent before (its PUBACK was lost): when the first copy is
   * committed, or queued for commit, returns true and runs cb once that copy is durable (with the
   * first copy's error if it is refused). Nothing is stored for the resend. False: a new reading.
   */
  acceptResend (deviceId: string, deviceTsMs: number, payloadHash: number, cb: (err: GatewayError | null) => void): boolean {
    const first = this.resends.find(deviceId, deviceTsMs, payloadHash)
    if (first === NEW_READING) return false
    const queued = first !== COMMITTED_READING
    const done = (err: GatewayError | null): void => {
      if (err === null) {
        this.metrics.resendsDropped.inc()
        this.log.debug({ deviceId, tsMs: deviceTsMs, hash: payloadHash, queued }, 'resend of a committed reading acknowledged, not stored again')
      }
      cb(err)
    }
    if (queued) this.resends.wait(deviceId, first, done)
    else done(null)
    return true
  }

  /** Queues a control event (priority lane); cb runs after the commit with its control sequence number. */
  appendControl (ev: IncomingControl, cb: CommitCallback): void {
    this.enqueue({ kind: 'control', ev, cb, at: performance.now() })
  }

  /** Queues a quarantined payload; cb runs once it is committed to the dead-letter table. */
  appendDeadLetter (dl: DeadLetter, cb: CommitCallback): void {
    this.enqueue({ kind: 'dead', dl, cb, at: performance.now() })
  }

  /** False when p was refused at once (its callback has run). */
  private enqueue (p: Pending): boolean {
    if (this.closed) {
      p.cb(new GatewayError('GW_ERR_OUTBOX_CLOSED', 'outbox is closed'))
      return false
    }
    if (this.queue.length >= this.opts.maxPendingEvents) {
      this.metrics.rejected.inc({ reason: 'outbox_busy' })
      p.cb(new GatewayError('GW_ERR_OUTBOX_BUSY', `commit queue is full (${this.opts.maxPendingEvents} pending)`))
      return false
    }
    this.queue.push(p)
    if (!this.flushScheduled) {
      this.flushScheduled = true
      // Everything that arrives in this turn of the event loop joins the same group. The second
      // turn lets a command decided on this publish reach its actuator's socket (aedes writes on
      // setImmediate) before the commit and its fsync block the loop: control never waits for disk.
      setImmediate(() => setImmediate(() => this.flush()))
    }
    return true
  }

  /** Commits one group of what is queued; schedules itself again while more is waiting. */
  flush (): void {
    this.flushScheduled = false
    if (this.queue.length > 0) this.commitGroup(this.takeGroup())
    if (this.queue.length > 0 && !this.closed) {
      // Yield between groups so that the broker keeps serving other clients.
      this.flushScheduled = true
      setImmediate(() => this.flush())
    }
    this.metrics.outboxPending.set(this.queue.length)
  }

  private takeGroup (): Pending[] {
    if (this.queue.length <= this.opts.maxGroupEvents) {
      const all = this.queue
      this.queue = []
      return all
    }
    return this.queue.splice(0, this.opts.maxGroupEvents)
  }

  private commitGroup (group: Pending[]): void {
    const started = performance.now()
    const results: Array<GatewayError | number | null> = new Array(group.length).fill(null)
    const before = { ...this.state }
    const writtenBefore = { ...this.written }
    const touched = new Map<string, number>()
    this.devices.mark()
    try {
      this.db.transaction(() => this.writeGroup(group, results, touched))()
    } catch (err) {
      // Nothing of the group is durable: restore counters and refuse every item of it.
      this.state = before
      this.written = writtenBefore
      for (const [deviceId, prev] of touched) {
        if (prev === 0) this.lastSeq.delete(deviceId)
        else this.lastSeq.set(deviceId, prev)
        this.restoreWindow(deviceId)
      }
      // Numbers given in the group were rolled back with it: the next commit gives them again.
      this.devices.undo()
      this.metrics.commitFailures.inc()
      this.log.error({ err, items: group.length }, 'outbox commit failed; group refused')
      const e = new GatewayError('GW_ERR_OUTBOX_COMMIT', 'outbox commit failed', { cause: err })
      for (const p of group) this.refuse(p, e)
      return
    }
    this.metrics.commitSeconds.observe((performance.now() - started) / 1000)
    this.metrics.commitGroupEvents.observe(group.length)
    const written = { ...this.written }
    if (this.walSync) this.walSync.after((err) => this.acknowledge(group, results, written, err))
    else this.acknowledge(group, results, written, null)
  }

  // Once the group is on disk: answers every item, lets the uplink read it, wakes the listeners.
  // A failed sync refuses the group: nothing unsynced is acknowledged (devices resend it).
  private acknowledge (group: Pending[], results: Array<GatewayError | number | null>, written: { eventId: number, gapId: number }, syncErr: Error | null): void {
    const done = performance.now()
    if (syncErr) {
      this.metrics.commitFailures.inc()
      this.log.error({ err: syncErr, items: group.length }, 'outbox WAL sync failed; group refused')
      const e = new GatewayError('GW_ERR_OUTBOX_COMMIT', 'outbox commit could not be synced to disk', { cause: syncErr })
      for (const p of group) this.refuse(p, e)
      return
    }
    this.durable = { eventId: Math.max(this.durable.eventId, written.eventId), gapId: Math.max(this.durable.gapId, written.gapId) }
    let committed = 0
    for (let i = 0; i < group.length; i++) {
      const p = group[i]
      const r = results[i]
      this.metrics.commitWaitSeconds.observe((done - p.at) / 1000)
      if (r instanceof GatewayError) this.refuse(p, r)
      else {
        if (p.kind !== 'dead') committed++
        p.cb(null, r ?? undefined)
        // Resends that arrived while this first copy waited for its commit are acknowledged after it.
        if (p.kind === 'event' && p.ticket >= 0) this.resends.settle(p.ev.deviceId, p.ticket, null)
      }
    }
    this.metrics.ingested.inc(committed)
    this.updateGauges()
    for (const l of this.commitListeners) l()
  }

  private refuse (p: Pending, err: GatewayError): void {
    p.cb(err)
    if (p.kind === 'event' && p.ticket >= 0) this.resends.settle(p.ev.deviceId, p.ticket, err)
  }

  // After a failed commit: the window as the database has it (the transaction rolled back). If even
  // that read fails, the window is forgotten: at worst a resend is stored twice, never one lost.
  private restoreWindow (deviceId: string): void {
    try {
      this.resends.restore(deviceId, (this.stmts.readRecent.get(deviceId) as Buffer | null | undefined) ?? null)
    } catch {
      this.resends.restore(deviceId, null)
    }
  }

  /** Runs after every successful commit (the uplink wakes up on it). */
  onCommit (listener: () => void): void {
    this.commitListeners.push(listener)
  }

  // Runs inside the transaction: assigns sequence numbers, enforces the budget, writes everything.
  private writeGroup (group: Pending[], results: Array<GatewayError | number | null>, touched: Map<string, number>): void {
    const now = Date.now()
    let deadLetters = 0
    for (let i = 0; i < group.length; i++) {
      const p = group[i]
      if (p.kind === 'dead') {
        const dl = p.dl
        const copy = dl.payload.subarray(0, this.opts.deadLetterPayloadBytes)
        this.stmts.insertDead.run(now, dl.deviceId, dl.topic, dl.reason, dl.detail, dl.payload.length, copy)
        deadLetters++
        continue
      }
      const deviceId = p.kind === 'event' ? p.ev.deviceId : CONTROL_DEVICE_ID
      const lane: Lane = p.kind === 'event' ? p.ev.lane : LANE_PRIORITY
      const prev = this.lastSeq.get(deviceId) ?? 0
      const seq = prev + 1
      // Without device_id: the row's dev names the device (stored-event.ts).
      const body = p.kind === 'event'
        ? v1.TelemetryEvent.encode({
          seq,
          eventTsMs: p.ev.eventTsMs,
          ingestTsMs: p.ev.ingestTsMs,
          readings: p.ev.readings,
          labels: p.ev.labels,
          eventTsFromGateway: p.ev.eventTsFromGateway,
        }).finish()
        : v1.ControlEvent.encode({ ...p.ev, deviceId: null, seq }).finish()
      const size = body.length + ROW_OVERHEAD_BYTES
      if (this.state.bytes + size > this.opts.budgetBytes && !this.makeRoom(size, lane)) {
        this.metrics.rejected.inc({ reason: 'outbox_full' })
        results[i] = new GatewayError('GW_ERR_OUTBOX_FULL', `outbox is at its budget of ${this.opts.budgetBytes} bytes`)
        continue
      }
      const dev = this.deviceNumber(deviceId)
      this.written.eventId = Math.max(this.written.eventId, Number(this.stmts.insertEvent.run(lane, dev, body).lastInsertRowid))
      if (!touched.has(deviceId)) touched.set(deviceId, prev)
      this.lastSeq.set(deviceId, seq)
      if (p.kind === 'event' && p.ticket >= 0) this.resends.stored(deviceId, p.ticket)
      this.state.events++
      this.state.bytes += size
      results[i] = seq
    }
    // Once per device per group: the counter, and the resend window when this group changed it.
    for (const deviceId of touched.keys()) {
      const recent = this.resends.takeDirty(deviceId)
      if (recent === null) this.stmts.upsertSeq.run(deviceId, this.lastSeq.get(deviceId))
      else this.stmts.upsertSeqRecent.run(deviceId, this.lastSeq.get(deviceId), recent)
    }
    this.stmts.saveState.run(this.state.events, this.state.bytes, this.state.shedEvents)
    if (deadLetters > 0) {
      const last = this.db.prepare('SELECT max(id) AS id FROM dead_letters').get() as { id: number }
      this.stmts.trimDead.run(last.id - this.opts.deadLetterRows)
    }
  }

  // The device's number; a device without one gets the next, written in this transaction, so the
  // number is on disk in the same commit as the first event that carries it.
  private deviceNumber (deviceId: string): number {
    const { num, fresh } = this.devices.numberOf(deviceId)
    if (fresh) this.stmts.numberDevice.run(deviceId, num)
    return num
  }

  /** The encoded device_id field of the device with number `dev`, for the uplink. */
  deviceField (dev: number): Buffer {
    return this.devices.field(dev)
  }

  // Frees room for `size` bytes by the overflow policy. Shedding goes a little past the need (2% of
  // the budget) so that a full outbox does not shed on every single commit.
  private makeRoom (size: number, lane: Lane): boolean {
    if (this.opts.overflow === 'reject-new') return false
    if (size > this.opts.budgetBytes) return false
    const target = this.state.bytes + size - this.opts.budgetBytes + Math.floor(this.opts.budgetBytes * 0.02)
    let freed = this.shed(target, false)
    // Routine telemetry goes first; priority events are shed only for other priority events.
    if (this.state.bytes + size > this.opts.budgetBytes && lane === LANE_PRIORITY) freed += this.shed(target - freed, true)
    return this.state.bytes + size <= this.opts.budgetBytes
  }

  private shed (bytesWanted: number, includePriority: boolean): number {
    let freed = 0
    let count = 0
    let lastId = -1
    const ranges = new Map<string, { from: number, to: number, count: number }>()
    const stmt = includePriority ? this.stmts.oldestAny : this.stmts.oldestTelemetry
    while (freed < bytesWanted) {
      const rows = stmt.all(512) as Array<{ id: number, lane: Lane, dev: number | null, body: Buffer }>
      const fresh = rows.filter((r) => r.id > lastId)
      if (fresh.length === 0) break
      for (const row of fresh) {
        const ev = decodeStored(row.lane, row.body)
        const deviceId = row.dev === null ? ev.deviceId : this.devices.idOf(row.dev)
        const seq = Number(ev.seq)
        const r = ranges.get(deviceId)
        if (r) { r.from = Math.min(r.from, seq); r.to = Math.max(r.to, seq); r.count++ } else ranges.set(deviceId, { from: seq, to: seq, count: 1 })
        freed += row.body.length + ROW_OVERHEAD_BYTES
        count++
        lastId = row.id
        if (freed >= bytesWanted) break
      }
      this.stmts.deleteUpTo.run(lastId, includePriority ? 1 : 0)
    }
    if (count === 0) return 0
    const now = Date.now()
    for (const [deviceId, r] of ranges) this.written.gapId = Math.max(this.written.gapId, Number(this.stmts.insertGap.run(deviceId, r.from, r.to, r.count, 'shed', now).lastInsertRowid))
    this.state.events -= count
    this.state.bytes -= freed
    this.state.shedEvents += count
    this.metrics.shed.inc({ lane: includePriority ? 'any' : 'telemetry' }, count)
    this.log.warn({ shedEvents: count, shedBytes: freed, devices: ranges.size, budgetBytes: this.opts.budgetBytes }, 'outbox over budget: shed oldest events, gaps recorded')
    return freed
  }

  // ---- For the uplink: read unsent rows by lane, remember batches in flight, delete what the cloud acknowledged.
  // Its bookkeeping transactions are not synced by themselves (the next ingest commit's sync covers
  // them): a power cut can lose one, which costs only a re-send that JetStream or the cloud's
  // idempotent apply drops.

  /** Rows of a lane with afterId < id <= uptoId, in id order, at most `limit` rows or about `maxBytes` on the wire. */
  readLane (lane: Lane, afterId: number, uptoId: number, limit: number, maxBytes: number): UplinkRow[] {
    // all() reads rows markedly faster than iterate() but cannot stop at maxBytes: the LIMIT is cut
    // to what maxBytes holds at the mean row size of the lane's last read, so that large rows are
    // not read far past it (a misjudged size costs only a smaller batch or a few rows read twice).
    const cap = Math.min(limit, Math.ceil(maxBytes / this.rowBytes[lane]) + 1)
    // Only what is on disk leaves: a row sent before its sync could reach the cloud and then be lost
    // here in a power cut, and its seq handed out again to another event.
    const rows = this.stmts.readLane.all(lane, afterId, Math.min(uptoId, this.durable.eventId), cap) as UplinkRow[]
    let bytes = 0
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]
      bytes += row.body.length + (row.dev === null ? 0 : this.deviceField(row.dev).length)
      if (bytes >= maxBytes) { rows.length = i + 1; break }
    }
    if (rows.length > 0) this.rowBytes[lane] = Math.max(1, bytes / rows.length)
    return rows
  }

  /** Highest row id of a lane (0 when empty). */
  maxId (lane: Lane): number {
    return Math.min((this.stmts.maxId.get(lane) as { id: number | null }).id ?? 0, this.durable.eventId)
  }

  /** Gap records not yet acknowledged by the cloud, after a gap rowid. */
  readGaps (afterId: number, uptoId: number, limit: number): Array<{ id: number, deviceId: string, fromSeq: number, toSeq: number, count: number, reason: string, tsMs: number }> {
    return (this.stmts.readGaps.all(afterId, Math.min(uptoId, this.durable.gapId), limit) as Array<{ id: number, device_id: string, from_seq: number, to_seq: number, count: number, reason: string, ts: number }>)
      .map((g) => ({ id: g.id, deviceId: g.device_id, fromSeq: g.from_seq, toSeq: g.to_seq, count: g.count, reason: g.reason, tsMs: g.ts }))
  }

  /** Persists batches before they are published, so a restart re-sends them with the same ids. */
  recordInflight (batches: InflightBatch[]): void {
    this.db.transaction(() => {
      for (const b of batches) this.stmts.insertInflight.run(b.batchId, b.lane, b.firstId, b.lastId, b.gapFirst, b.gapLast)
    })()
  }

  /** Batches published before the last stop and never acknowledged, oldest first. */
  loadInflight (): InflightBatch[] {
    return (this.db.prepare('SELECT batch_id, lane, first_id, last_id, gap_first, gap_last FROM uplink_inflight ORDER BY lane, first_id, gap_first').all() as Array<{ batch_id: string, lane: Lane, first_id: number, last_id: number, gap_first: number, gap_last: number }>)
      .map((r) => ({ batchId: r.batch_id, lane: r.lane, firstId: r.first_id, lastId: r.last_id, gapFirst: r.gap_first, gapLast: r.gap_last }))
  }

  /** The cloud has the batch: delete its rows, gaps and in-flight record in one transaction. */
  ackBatch (b: InflightBatch): { events: number, bytes: number } {
    let freed = { events: 0, bytes: 0 }
    this.db.transaction(() => {
      if (b.lastId >= b.firstId) {
        // Count what is really there: shedding may have removed rows of the range meanwhile.
        const c = this.stmts.rangeSize.get(b.lane, b.firstId, b.lastId) as { n: number, bytes: number | null }
        this.stmts.deleteRange.run(b.lane, b.firstId, b.lastId)
        freed = { events: c.n, bytes: (c.bytes ?? 0) + c.n * ROW_OVERHEAD_BYTES }
        this.state.events -= freed.events
        this.state.bytes -= freed.bytes
        this.stmts.saveState.run(this.state.events, this.state.bytes, this.state.shedEvents)
      }
      if (b.gapLast >= b.gapFirst) this.stmts.deleteGaps.run(b.gapFirst, b.gapLast)
      this.stmts.deleteInflight.run(b.batchId)
    })()
    this.updateGauges()
    return freed
  }

  /** Last sequence number handed out to a device (0 if none). */
  lastSeqOf (deviceId: string): number {
    return this.lastSeq.get(deviceId) ?? 0
  }

  stats (): OutboxStats {
    return { ...this.state, pending: this.queue.length }
  }

  /** Ingest time (ms) of the oldest buffered event, or null when the outbox is empty. */
  oldestIngestTs (): number | null {
    if (this.closed) return null
    const row = this.stmts.firstBody.get() as { lane: Lane, body: Buffer } | undefined
    return row ? Number(decodeStored(row.lane, row.body).ingestTsMs) : null
  }

  private updateGauges (): void {
    this.metrics.outboxEvents.set(this.state.events)
    this.metrics.outboxBytes.set(this.state.bytes)
    this.metrics.outboxPending.set(this.queue.length)
  }

  /** Commits what is queued, then refuses new input. Idempotent. */
  close (): void {
    if (this.closed) return
    while (this.queue.length > 0) this.commitGroup(this.takeGroup())
    // The last groups' sync, on this thread: their callbacks run before close returns.
    this.walSync?.close()
    this.closed = true
  }

  /** Refuses everything queued and stops at once. */
  destroy (err?: Error): void {
    this.closed = true
    const e = new GatewayError('GW_ERR_OUTBOX_CLOSED', 'outbox destroyed', { cause: err })
    const q = this.queue
    this.queue = []
    for (const p of q) this.refuse(p, e)
    // Committed groups still waiting for their sync get it now (their devices may be gone already).
    this.walSync?.close()
  }
}
