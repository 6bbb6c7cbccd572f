// The store-and-forward outbox, its writer: every accepted event is committed here, in groups,
// before it is acknowledged. Sequence numbers are assigned inside the commit, so a number is never
// reused after a crash; so is each device's resend window (resend-window.ts), so a resend is
// recognised after a crash too. Its parts: disk-budget.ts (the budget, overflow policy, shedding with
// gap records), dead-letters.ts, and the uplink's side: outbox-reader.ts and inflight-ledger.ts.
import type { Statement } from 'better-sqlite3'
import { CONTROL_DEVICE_ID } from '../../proto/index.ts'
import type { Db } from './db.ts'
import { GatewayError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { GatewayMetrics } from '../metrics.ts'
import { COMMITTED_READING, NEW_READING, payloadHash, ResendWindows } from './resend-window.ts'
import { DeviceNumbers } from './device-numbers.ts'
import { DiskBudget } from './disk-budget.ts'
import { DeadLetters } from './dead-letters.ts'
import { OutboxReader } from './outbox-reader.ts'
import { InflightLedger } from './inflight-ledger.ts'
import { loadOutbox, syncAtStart } from './outbox-start.ts'
import { WalSync, type FsyncFn } from './wal-sync.ts'
import { Lifecycle } from '../../lib/lifecycle.ts'
import {
  decodeStored, encodeControl, encodeTelemetry, LANE_PRIORITY, ROW_OVERHEAD_BYTES,
  type CommitCallback, type DeadLetter, type IncomingControl, type IncomingEvent, type Lane, type OutboxOptions,
  type OutboxStats, type ReadingIdentity, type Watermark,
} from './outbox-types.ts'

// The shared shapes, re-exported: importers of outbox.ts need not know how the outbox is split.
export * from './outbox-types.ts'

type Pending =
  | { kind: 'event', ev: IncomingEvent, cb: CommitCallback, at: number, ticket: number }
  | { kind: 'control', ev: IncomingControl, cb: CommitCallback, at: number }
  | { kind: 'dead', dl: DeadLetter, cb: CommitCallback, at: number }

/** The SQLite outbox with group commit. Lifecycle: start(), close() (flushes), destroy(). deps.fsync: how its WAL sync syncs a file (tests inject one). */
export class Outbox extends Lifecycle {
  /** Set once close() has drained the queue, or by destroy(): new input is refused from then on. */
  private refusing = false
  private queue: Pending[] = []
  private flushScheduled = false
  private readonly lastSeq = new Map<string, number>()
  /** Device numbers (device_seq.num, events.dev). */
  private readonly devices = new DeviceNumbers()
  private readonly resends: ResendWindows
  private readonly commitListeners: Array<() => void> = []
  private budget!: DiskBudget
  private deadLetters!: DeadLetters
  /** Reads as the uplink's (made by start()), on this connection: for tests and tools; the uplink thread has its own. */
  reader!: OutboxReader
  /** The uplink's bookkeeping writes (made by start()): batches in flight, acknowledged batches deleted. */
  ledger!: InflightLedger
  /** Random id of this database, part of every replication batch id (made by start()). */
  epoch = ''
  /** durability=full: the WAL is fsynced by walSync after each commit, off the event loop. */
  private walSync: WalSync | null = null
  /** Highest events rowid and gaps id that are on disk (synced): the reader never reads past them. */
  private durable: Watermark = { eventId: 0, gapId: 0 }
  /** Highest ids written by the commit in progress. */
  private written: Watermark = { eventId: 0, gapId: 0 }
  private startSync!: Promise<void>
  private stmts!: {
    insertEvent: Statement
    upsertSeq: Statement
    numberDevice: Statement
    upsertSeqRecent: Statement
    readRecent: Statement
    firstBody: Statement
  }

  constructor (private readonly db: Db, private readonly opts: OutboxOptions, private readonly log: Logger, private readonly metrics: GatewayMetrics, private readonly deps: { fsync?: FsyncFn } = {}) {
    super()
    this.resends = new ResendWindows(opts.resendWindow)
  }

  /** Loads sequence counters, resend windows and running totals; fast even with millions of buffered events. */
  start (): void {
    const db = this.db
    if ((db.pragma('synchronous', { simple: true }) as number) >= 2) {
      // Durability full, without an fsync inside each commit on this thread: commits write the WAL
      // (synchronous=NORMAL) and walSync fsyncs it on the thread pool before anything is acknowledged.
      db.pragma('synchronous = NORMAL')
      this.walSync = new WalSync(`${db.name}-wal`, (ms) => this.metrics.walSyncSeconds.observe(ms / 1000), this.deps.fsync)
    }
    this.stmts = {
      insertEvent: db.prepare('INSERT INTO events (lane, dev, body) VALUES (?, ?, ?)'),
      upsertSeq: db.prepare('INSERT INTO device_seq (device_id, last_seq) VALUES (?, ?) ON CONFLICT(device_id) DO UPDATE SET last_seq = excluded.last_seq'),
      // last_seq 0 only until the upsert at the end of the same transaction sets the real one.
      numberDevice: db.prepare('INSERT INTO device_seq (device_id, last_seq, num) VALUES (?, 0, ?) ON CONFLICT(device_id) DO UPDATE SET num = excluded.num'),
      upsertSeqRecent: db.prepare('INSERT INTO device_seq (device_id, last_seq, recent) VALUES (?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET last_seq = excluded.last_seq, recent = excluded.recent'),
      readRecent: db.prepare('SELECT recent FROM device_seq WHERE device_id = ?').pluck(),
      firstBody: db.prepare('SELECT lane, body FROM events ORDER BY id LIMIT 1'),
    }
    const loaded = loadOutbox(db, { lastSeq: this.lastSeq, resends: this.resends, devices: this.devices })
    this.written = { ...loaded }
    // Durability full: what the last run left is durable only after the start-up sync (outbox-start.ts).
    const durableLoaded = (): void => {
      this.durable = { eventId: Math.max(this.durable.eventId, loaded.eventId), gapId: Math.max(this.durable.gapId, loaded.gapId) }
      for (const l of this.commitListeners) l()
    }
    this.startSync = this.walSync ? syncAtStart(this.walSync, db, this.log, durableLoaded) : Promise.resolve(durableLoaded())
    this.deadLetters = new DeadLetters(db, this.opts, this.metrics)
    this.budget = new DiskBudget(db, this.opts, this.devices, (gapId) => { this.written.gapId = Math.max(this.written.gapId, gapId) }, this.log, this.metrics)
    this.epoch = (db.prepare('SELECT epoch FROM outbox_state WHERE id = 1').get() as { epoch: string }).epoch
    this.reader = new OutboxReader(db, this.epoch, {
      durable: () => this.durable,
      shedEvents: () => this.budget.stats().shedEvents,
      deviceField: (dev) => this.devices.field(dev),
      onCommit: (listener) => this.onCommit(listener),
    })
    this.ledger = new InflightLedger(db, (events, bytes) => {
      this.budget.released(events, bytes)
      this.updateGauges()
    }, () => this.budget.stats().shedEvents)
    this.updateGauges()
  }

  /** Resolves once what start() found in the database is on disk (durability full: the start-up sync); rejects when that sync failed. */
  started (): Promise<void> {
    return this.startSync
  }

  /**
   * The one entry for a telemetry reading. With its identity (a reading its device stamped), a resend
   * of a reading queued or committed before is recognised: it is not stored again, cb runs once the
   * first copy is durable (with the first copy's error if that is refused), and append returns false.
   * Otherwise the reading is queued for the next commit group, cb runs after the commit with its
   * sequence number, and append returns true (also when the queue refused it at once: cb has run).
   */
  append (ev: IncomingEvent, identity: ReadingIdentity | null, cb: CommitCallback): boolean {
    if (identity === null || !this.resends.enabled) {
      this.appendEvent(ev, cb)
      return true
    }
    const hash = payloadHash(identity.payload)
    if (this.acceptResend(ev.deviceId, identity.deviceTsMs, hash, cb)) return false
    this.appendEvent(ev, cb, identity.deviceTsMs, hash)
    return true
  }

  /**
   * append()'s second half (public for tests that drive the resend window with chosen hashes): queues
   * an event; with the device's ts and the payload's hash, a resend of it is recognised from now on.
   */
  appendEvent (ev: IncomingEvent, cb: CommitCallback, deviceTsMs: number | null = null, hash = 0): void {
    const p: Pending = { kind: 'event', ev, cb, at: performance.now(), ticket: -1 }
    if (this.enqueue(p) && deviceTsMs !== null && this.resends.enabled) p.ticket = this.resends.queue(ev.deviceId, deviceTsMs, hash)
  }

  /**
   * append()'s first half. A device resending a reading it sent before (its PUBACK was lost): when
   * the first copy is committed, or queued for commit, returns true and runs cb once that copy is
   * durable (with the first copy's error if it is refused); nothing is stored. False: a new reading.
   */
  acceptResend (deviceId: string, deviceTsMs: number, hash: number, cb: (err: GatewayError | null) => void): boolean {
    const first = this.resends.find(deviceId, deviceTsMs, hash)
    if (first === NEW_READING) return false
    const queued = first !== COMMITTED_READING
    const done = (err: GatewayError | null): void => {
      if (err === null) {
        this.metrics.resendsDropped.inc()
        this.log.debug({ deviceId, tsMs: deviceTsMs, hash, queued }, 'resend of a committed reading acknowledged, not stored again')
      }
      cb(err)
    }
    if (queued) this.resends.wait(deviceId, first, done)
    // A reading loaded at start is durable only after the start-up sync: the next sync covers it.
    else if (this.walSync?.startPending) this.walSync.after((err) => done(err && new GatewayError('GW_ERR_OUTBOX_COMMIT', 'outbox could not be synced to disk', { cause: err })))
    else done(null)
    return true
  }

  /** Queues a control event (priority lane); cb runs after the commit with its control sequence number. */
  appendControl (ev: IncomingControl, cb: CommitCallback): void {
    this.enqueue({ kind: 'control', ev, cb, at: performance.now() })
  }

  /** Queues a quarantined payload, and its report to the cloud in the same group (dead-letters.ts); cb runs once it is committed to the dead-letter table. */
  quarantine (dl: DeadLetter, cb: CommitCallback): void {
    if (!this.enqueue({ kind: 'dead', dl, cb, at: performance.now() })) return
    const report = this.deadLetters.report(dl, Date.now())
    if (report) this.appendControl(report, (err) => { if (err) this.log.debug({ err, deviceId: dl.deviceId }, 'dead letter kept, its report to the cloud not') })
  }

  /** False when p was refused at once (its callback has run). */
  private enqueue (p: Pending): boolean {
    if (this.refusing) {
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
    if (this.queue.length > 0 && !this.refusing) {
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
    const before = this.budget.snapshot()
    const writtenBefore = { ...this.written }
    const touched = new Map<string, number>()
    this.devices.mark()
    try {
      this.db.transaction(() => this.writeGroup(group, results, touched))()
    } catch (err) {
      // Nothing of the group is durable: restore counters and refuse every item of it.
      this.budget.restore(before)
      this.written = writtenBefore
      for (const [deviceId, prev] of touched) {
        if (prev === 0) this.lastSeq.delete(deviceId)
        else this.lastSeq.set(deviceId, prev)
        // The window as the database has it (the transaction rolled back); if even that read fails,
        // it is forgotten: at worst a resend is stored twice, never one lost.
        try {
          this.resends.restore(deviceId, (this.stmts.readRecent.get(deviceId) as Buffer | null | undefined) ?? null)
        } catch {
          this.resends.restore(deviceId, null)
        }
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
        this.deadLetters.write(p.dl, now)
        deadLetters++
        continue
      }
      const deviceId = p.kind === 'event' ? p.ev.deviceId : CONTROL_DEVICE_ID
      const lane: Lane = p.kind === 'event' ? p.ev.lane : LANE_PRIORITY
      const prev = this.lastSeq.get(deviceId) ?? 0
      const seq = prev + 1
      const body = p.kind === 'event' ? encodeTelemetry(p.ev, seq) : encodeControl(p.ev, seq)
      const size = body.length + ROW_OVERHEAD_BYTES
      if (!this.budget.fits(size, lane)) {
        this.metrics.rejected.inc({ reason: 'outbox_full' })
        results[i] = new GatewayError('GW_ERR_OUTBOX_FULL', `outbox is at its budget of ${this.opts.budgetBytes} bytes`)
        continue
      }
      const dev = this.deviceNumber(deviceId)
      this.written.eventId = Math.max(this.written.eventId, Number(this.stmts.insertEvent.run(lane, dev, body).lastInsertRowid))
      if (!touched.has(deviceId)) touched.set(deviceId, prev)
      this.lastSeq.set(deviceId, seq)
      if (p.kind === 'event' && p.ticket >= 0) this.resends.stored(deviceId, p.ticket)
      this.budget.added(size)
      results[i] = seq
    }
    // Once per device per group: the counter, and the resend window when this group changed it.
    for (const deviceId of touched.keys()) {
      const recent = this.resends.takeDirty(deviceId)
      if (recent === null) this.stmts.upsertSeq.run(deviceId, this.lastSeq.get(deviceId))
      else this.stmts.upsertSeqRecent.run(deviceId, this.lastSeq.get(deviceId), recent)
    }
    this.budget.save()
    if (deadLetters > 0) this.deadLetters.trim()
  }

  // The device's number; a device without one gets the next, written in this transaction, so the
  // number is on disk in the same commit as the first event that carries it.
  private deviceNumber (deviceId: string): number {
    const { num, fresh } = this.devices.numberOf(deviceId)
    if (fresh) this.stmts.numberDevice.run(deviceId, num)
    return num
  }

  /** The database file (the uplink thread opens it read-only). */
  get dbFile (): string { return this.db.name }

  /** Highest event and gap ids on disk (synced): what the uplink may read. */
  durableMark (): Watermark { return { ...this.durable } }

  /** Last sequence number handed out to a device (0 if none). */
  lastSeqOf (deviceId: string): number { return this.lastSeq.get(deviceId) ?? 0 }

  stats (): OutboxStats {
    return { ...this.budget.stats(), pending: this.queue.length }
  }

  /** Ingest time (ms) of the oldest buffered event, or null when the outbox is empty. */
  oldestIngestTs (): number | null {
    if (this.refusing) return null
    const row = this.stmts.firstBody.get() as { lane: Lane, body: Buffer } | undefined
    return row ? Number(decodeStored(row.lane, row.body).ingestTsMs) : null
  }

  private updateGauges (): void {
    this.budget.updateGauges()
    this.metrics.outboxPending.set(this.queue.length)
  }

  /** Commits what is queued, then refuses new input. Idempotent. */
  protected onClose (): void {
    while (this.queue.length > 0) this.commitGroup(this.takeGroup())
    // The last groups' sync, on this thread: their callbacks run before close returns.
    this.walSync?.close()
    this.refusing = true
  }

  /** Refuses everything queued and stops at once. */
  protected onDestroy (err?: Error): void {
    this.refusing = true
    const e = new GatewayError('GW_ERR_OUTBOX_CLOSED', 'outbox destroyed', { cause: err })
    const q = this.queue
    this.queue = []
    for (const p of q) this.refuse(p, e)
    // Committed groups still waiting for their sync get it now (their devices may be gone already).
    this.walSync?.close()
  }
}
