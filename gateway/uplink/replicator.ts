// Replicates the outbox to JetStream: several events per message (a ReplicationBatch), a bounded
// number of batches in flight, rows deleted only after JetStream acknowledged them. Every batch is
// recorded before it is published, so after a crash it is re-sent with the same id and JetStream
// drops the copy. Lanes: priority (alerts, decisions, gaps) first, then live telemetry, then the
// backlog left by an outage, so fresh data is not stuck behind hours of history.
//
// It runs in the uplink thread (uplink-thread.ts): it reads the outbox on that thread's connection,
// and asks the writer (main thread) to record batches before they go and to delete what was
// acknowledged (LedgerPort).
import { subjects } from '../../proto/index.ts'
import type { GatewayConfig } from '../config.ts'
import { GatewayError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { UplinkMetrics } from './uplink-metrics.ts'
import { LANE_PRIORITY, LANE_TELEMETRY, type UplinkRow } from '../store/outbox-types.ts'
import type { OutboxReader } from '../store/outbox-reader.ts'
import type { AckedBatch, BatchToRecord } from '../store/inflight-ledger.ts'
import { TokenBucket } from '../../lib/token-bucket.ts'
import { BatchBuilder, order, type Batch, type Kind } from './batch.ts'
import { backoffMs, classify, type UplinkLink } from './link.ts'
import { Lifecycle } from '../../lib/lifecycle.ts'

/** A rowid range (after, upto] of telemetry still to be sent by the backlog lane. */
interface Range { after: number, upto: number }

const LANE_LIMIT: Record<Kind, number> = { priority: 2, live: 2, backlog: 0 }

/** The writes of the uplink's bookkeeping, which the outbox's writer does on request (store/inflight-ledger.ts). */
export interface LedgerPort {
  /** Records batches as in flight; false at the index of one whose rows were shed since it was read (build it again). */
  record: (batches: BatchToRecord[]) => Promise<boolean[]>
  /** JetStream has the batch: its rows, gaps and record go; devSeqs: each device's highest seq in it (telemetry; pairs of device number and seq, batch.ts). */
  ack: (b: AckedBatch, devSeqs: readonly number[] | null) => void
}

export class Replicator extends Lifecycle {
  private readonly inFlight = new Map<string, Batch>()
  private retry: Batch[] = []
  private prioCursor = 0
  private gapCursor = 0
  private liveCursor = 0
  private backlog: Range[] = []
  /** Telemetry ranges re-sent after a restart; the backlog lane skips them. */
  private skip: Array<{ firstId: number, lastId: number }> = []
  private pumpScheduled = false
  /** Replication stopped for good (halt()). */
  private halted = false
  private retryTimer: NodeJS.Timeout | null = null
  private throttleTimer: NodeJS.Timeout | null = null
  private failures = 0
  /** Set once closed or destroyed: the database may be gone, so nothing touches it any more. */
  private released = false
  private readonly drain: TokenBucket | null
  private readonly bandwidth: TokenBucket | null
  private throttledUntil = 0
  /** When the last live batch was built (performance.now()), for uplink.liveLingerMs. */
  private lastLiveAt = -Infinity
  private lingerTimer: NodeJS.Timeout | null = null
  private readonly batches: BatchBuilder
  lastAckTs = 0

  constructor (
    private readonly reader: OutboxReader,
    private readonly ledger: LedgerPort,
    private readonly link: UplinkLink,
    private readonly cfg: GatewayConfig['uplink'],
    private readonly gatewayId: string,
    private readonly log: Logger,
    private readonly metrics: UplinkMetrics,
  ) {
    super()
    this.batches = new BatchBuilder(reader, gatewayId)
    const now = performance.now()
    // Bursts of one batch or 100 ms of the rate, whichever is larger: a burst of a whole second
    // let a small backlog drain uncapped (a 200k backlog under a 200k/s cap went out at once).
    this.drain = cfg.drainEventsPerSec > 0 ? new TokenBucket(cfg.drainEventsPerSec, Math.max(cfg.batchMaxEvents, cfg.drainEventsPerSec / 10), now) : null
    this.bandwidth = cfg.bandwidthBytesPerSec > 0 ? new TokenBucket(cfg.bandwidthBytesPerSec, Math.max(cfg.batchMaxBytes, cfg.bandwidthBytesPerSec / 10), now) : null
  }

  /** Loads batches left in flight by the last run (to re-send with their ids) and starts following commits. */
  start (): void {
    for (const b of this.reader.loadInflight()) {
      const batch = this.batches.rebuild(b)
      this.retry.push(batch)
      if (b.lane === LANE_PRIORITY) this.prioCursor = Math.max(this.prioCursor, b.lastId)
      else this.skip.push({ firstId: b.firstId, lastId: b.lastId })
      this.gapCursor = Math.max(this.gapCursor, b.gapLast)
    }
    this.skip.sort((a, b) => a.firstId - b.firstId)
    if (this.retry.length > 0) this.log.info({ batches: this.retry.length }, 're-sending batches left in flight by the last run')
    this.reader.onCommit(() => this.schedule())
    this.link.onState((s) => { if (s === 'up') this.onLinkUp() })
    if (this.link.state === 'up') this.onLinkUp()
  }

  // Everything buffered until now becomes backlog; what is ingested from now on goes out live.
  private onLinkUp (): void {
    const max = this.reader.maxId(LANE_TELEMETRY)
    if (max > this.liveCursor) {
      this.backlog.push({ after: this.liveCursor, upto: max })
      this.liveCursor = max
    }
    this.failures = 0
    // Batches that failed while the link was down go first, with their ids. One still waiting to be
    // recorded stays: it goes once recorded (recordThenPublish).
    for (const b of [...this.inFlight.values()]) {
      if (!b.recorded) continue
      if (!this.retry.includes(b)) this.retry.push(b)
      this.inFlight.delete(b.batchId)
    }
    this.retry.sort((a, b) => order(a) - order(b) || a.firstId - b.firstId)
    this.schedule()
  }

  private schedule (): void {
    if (this.pumpScheduled || this.isClosing) return
    this.pumpScheduled = true
    setImmediate(() => {
      this.pumpScheduled = false
      try {
        this.pump()
      } catch (err) {
        this.halt(err as Error)
      }
    })
  }

  private count (kind: Kind): number {
    let n = 0
    for (const b of this.inFlight.values()) if (b.kind === kind) n++
    return n
  }

  // An outbox that contradicts itself (GW_ERR_OUTBOX_CORRUPT) cannot be replicated correctly, and
  // retrying cannot fix it: replication stops with the error in /readyz, the heartbeat and the
  // metrics, while ingest and decisions go on. Anything else thrown here is a bug, handled the same
  // way rather than by a crash loop.
  private halt (err: Error): void {
    if (this.halted) return
    this.halted = true
    const kind = err instanceof GatewayError && err.code === 'GW_ERR_OUTBOX_CORRUPT' ? 'corrupt' : 'internal'
    this.link.refused(kind, err)
    this.log.error({ err, code: (err as GatewayError).code }, 'replication stopped: the outbox cannot be replicated as it is')
  }

  private pump (): void {
    if (this.isClosing || this.retryTimer || this.halted) return
    const conn = this.link.current()
    if (!conn) return
    const fresh: Batch[] = []
    const toSend: Batch[] = []
    while (this.retry.length > 0 && this.inFlight.size < this.cfg.maxInFlight + 4) {
      const b = this.retry.shift()!
      this.inFlight.set(b.batchId, b)
      toSend.push(b)
    }
    // At most one new batch per turn: reading and encoding them is synchronous SQLite work, and
    // ingest and decisions must get the loop between turns while a backlog drains.
    let more = false
    for (;;) {
      if (fresh.length >= 1) { more = true; break }
      let b: Batch | null = null
      if (this.count('priority') < LANE_LIMIT.priority) b = this.nextPriority()
      // The priority lane goes first: while records of it wait for a slot, no telemetry batch
      // overtakes them (a priority ack schedules the next turn).
      else if (this.reader.maxId(LANE_PRIORITY) > this.prioCursor) break
      if (!b && this.count('live') < LANE_LIMIT.live) b = this.nextLive()
      if (!b && this.count('backlog') < this.cfg.maxInFlight) {
        if (performance.now() >= this.throttledUntil) b = this.nextBacklog()
        else this.wakeAfterThrottle()
      }
      if (!b) break
      this.inFlight.set(b.batchId, b)
      fresh.push(b)
      toSend.push(b)
    }
    this.metrics.uplinkInFlight.set(this.inFlight.size)
    for (const b of toSend) if (!fresh.includes(b)) this.publish(conn.js, b)
    if (fresh.length > 0) this.recordThenPublish(fresh)
    if (more) this.schedule()
  }

  // A new batch goes out only once the writer has recorded it, so that a restart re-sends it with
  // its id. One whose rows were shed meanwhile is read again from its range and recorded anew.
  private recordThenPublish (batches: Batch[]): void {
    this.ledger.record(batches.map((b) => ({ batchId: b.batchId, lane: b.lane, firstId: b.firstId, lastId: b.lastId, gapFirst: b.gapFirst, gapLast: b.gapLast, events: b.events, shedSeen: b.shedSeen }))).then((recorded) => {
      if (this.released) return
      const again: Batch[] = []
      for (let i = 0; i < batches.length; i++) {
        const b = batches[i]
        if (!recorded[i]) {
          const rebuilt = this.batches.readAgain(b)
          this.inFlight.set(b.batchId, rebuilt)
          again.push(rebuilt)
          continue
        }
        b.recorded = true
        const conn = this.link.current()
        // Recorded, not sent: it goes first once the link is back (onLinkUp), or at the next start.
        if (!conn || this.isClosing) {
          this.inFlight.delete(b.batchId)
          this.retry.push(b)
          this.retry.sort((x, y) => order(x) - order(y) || x.firstId - y.firstId)
        } else {
          this.publish(conn.js, b)
        }
      }
      if (again.length > 0) this.recordThenPublish(again)
      this.metrics.uplinkInFlight.set(this.inFlight.size)
    }, (err: Error) => {
      // Never recorded, so never sent: the rows are still in the outbox. Asked again after a
      // backoff; when closing, the next run reads them again (everything unacknowledged is backlog).
      if (this.released || this.isClosing) {
        for (const b of batches) this.inFlight.delete(b.batchId)
        this.metrics.uplinkInFlight.set(this.inFlight.size)
        return
      }
      const wait = backoffMs(this.failures++, this.cfg.reconnectMinMs, this.cfg.reconnectMaxMs)
      this.log.error({ err, batches: batches.length, retryInMs: wait }, 'batches not recorded by the outbox; asking again')
      setTimeout(() => this.recordThenPublish(batches), wait)
    })
  }

  private publish (js: NonNullable<ReturnType<UplinkLink['current']>>['js'], b: Batch): void {
    const started = performance.now()
    const attempt = ++b.attempt
    const subject = b.lane === LANE_PRIORITY ? subjects.events(this.gatewayId) : subjects.telemetry(this.gatewayId)
    js.publish(subject, b.payload, { msgID: b.batchId, timeout: this.cfg.publishTimeoutMs }).then((ack) => {
      // Any attempt's ack proves JetStream has the batch, even one superseded by a re-send.
      if (b.done || this.released) return
      b.done = true
      this.inFlight.delete(b.batchId)
      const queued = this.retry.indexOf(b)
      if (queued >= 0) this.retry.splice(queued, 1)
      this.ledger.ack({ batchId: b.batchId, lane: b.lane, firstId: b.firstId, lastId: b.lastId, gapFirst: b.gapFirst, gapLast: b.gapLast, events: b.events, bytes: b.bytes }, b.devSeqs)
      const now = Date.now()
      this.lastAckTs = now
      this.failures = 0
      this.link.healthy()
      this.metrics.uplinkPublishSeconds.observe((performance.now() - started) / 1000)
      this.metrics.uplinkAcked.inc({ lane: b.kind }, b.events)
      this.metrics.uplinkBatches.inc({ duplicate: String(ack.duplicate) })
      this.metrics.uplinkLastAck.set(now / 1000)
      if (b.kind === 'live' && b.newestIngestTs > 0) this.metrics.uplinkFreshnessSeconds.observe((now - b.newestIngestTs) / 1000)
      this.metrics.uplinkInFlight.set(this.inFlight.size)
      this.schedule()
    }, (err: Error) => {
      if (b.done || attempt !== b.attempt || this.isClosing) return
      this.inFlight.delete(b.batchId)
      const kind = classify(err)
      this.link.refused(kind, err)
      // Keep the batch (same id, same rows) and try again after a backoff; nothing is dropped.
      this.retry.push(b)
      this.retry.sort((x, y) => order(x) - order(y) || x.firstId - y.firstId)
      if (!this.retryTimer && !this.isClosing) {
        const wait = backoffMs(this.failures++, this.cfg.reconnectMinMs, this.cfg.reconnectMaxMs)
        const level = kind === 'timeout' || kind === 'connection' ? 'warn' : 'error'
        this.log[level]({ err, kind, batchId: b.batchId, retryInMs: wait }, kind === 'no_stream' ? 'cloud has no stream for our subject; events keep buffering' : 'batch publish failed; will retry with the same id')
        this.retryTimer = setTimeout(() => { this.retryTimer = null; this.schedule() }, wait)
      }
    })
  }

  private nextPriority (): Batch | null {
    const rows = this.reader.readLane(LANE_PRIORITY, this.prioCursor, Number.MAX_SAFE_INTEGER, this.cfg.batchMaxEvents, this.cfg.batchMaxBytes)
    const gaps = this.reader.readGaps(this.gapCursor, Number.MAX_SAFE_INTEGER, 1000)
    if (rows.length === 0 && gaps.length === 0) return null
    const firstId = rows.length ? rows[0].id : this.prioCursor + 1
    const lastId = rows.length ? rows[rows.length - 1].id : this.prioCursor
    const gapFirst = gaps.length ? gaps[0].id : this.gapCursor + 1
    const gapLast = gaps.length ? gaps[gaps.length - 1].id : this.gapCursor
    this.prioCursor = lastId
    this.gapCursor = gapLast
    return this.batches.build('priority', LANE_PRIORITY, rows, firstId, lastId, gapFirst, gapLast)
  }

  private nextLive (): Batch | null {
    const wait = this.lastLiveAt + this.cfg.liveLingerMs - performance.now()
    if (wait > 0) {
      // Rows that arrive meanwhile join the next batch; a timer makes sure it goes.
      if (!this.lingerTimer && !this.isClosing) this.lingerTimer = setTimeout(() => { this.lingerTimer = null; this.schedule() }, Math.ceil(wait))
      return null
    }
    const rows = this.reader.readLane(LANE_TELEMETRY, this.liveCursor, Number.MAX_SAFE_INTEGER, this.cfg.batchMaxEvents, this.cfg.batchMaxBytes)
    if (rows.length === 0) return null
    if (!this.spend(rows, false)) return null
    this.liveCursor = rows[rows.length - 1].id
    this.lastLiveAt = performance.now()
    return this.batches.build('live', LANE_TELEMETRY, rows, rows[0].id, this.liveCursor, 1, 0)
  }

  private nextBacklog (): Batch | null {
    while (this.backlog.length > 0) {
      const r = this.backlog[0]
      const skip = this.skip.find((s) => s.lastId > r.after && s.firstId <= r.upto)
      const upto = skip ? Math.min(r.upto, skip.firstId - 1) : r.upto
      const rows = upto > r.after ? this.reader.readLane(LANE_TELEMETRY, r.after, upto, this.cfg.batchMaxEvents, this.cfg.batchMaxBytes) : []
      if (rows.length === 0) {
        if (skip && skip.firstId <= r.upto) {
          r.after = Math.max(r.after, skip.lastId)
          this.skip.splice(this.skip.indexOf(skip), 1)
        } else {
          this.backlog.shift()
        }
        continue
      }
      if (!this.spend(rows, true)) return null
      r.after = rows[rows.length - 1].id
      return this.batches.build('backlog', LANE_TELEMETRY, rows, rows[0].id, r.after, 1, 0)
    }
    return null
  }

  // Applies the drain (backlog only) and bandwidth caps: the batch goes now, and the backlog
  // waits until the debt is paid.
  private spend (rows: UplinkRow[], backlog: boolean): boolean {
    if (!this.drain && !this.bandwidth) return true
    const now = performance.now()
    if (backlog && now < this.throttledUntil) { this.wakeAfterThrottle(); return false }
    let bytes = 0
    for (const r of rows) bytes += r.body.length + (r.dev === null ? 0 : this.reader.deviceField(r.dev).length)
    let wait = this.bandwidth ? this.bandwidth.take(now, bytes) : 0
    if (backlog && this.drain) wait = Math.max(wait, this.drain.take(now, rows.length))
    if (wait > 0) {
      this.throttledUntil = now + wait
      this.wakeAfterThrottle()
    }
    return true
  }

  // Timers may fire a fraction of a millisecond early against performance.now(), so the pump
  // re-arms this whenever it finds the backlog still throttled.
  private wakeAfterThrottle (): void {
    if (this.throttleTimer || this.isClosing) return
    const wait = Math.max(1, Math.ceil(this.throttledUntil - performance.now()))
    this.throttleTimer = setTimeout(() => { this.throttleTimer = null; this.schedule() }, wait)
  }

  /** Batches awaiting an ack, and the time of the last ack. */
  stats (): ReplicatorStats {
    return {
      inFlight: this.inFlight.size,
      retry: this.retry.length,
      lastAckTs: this.lastAckTs,
      backlogRanges: this.backlog.length,
      liveCursor: this.liveCursor,
      throttledForMs: Math.max(0, Math.round(this.throttledUntil - performance.now())),
      retryPending: this.retryTimer !== null,
    }
  }

  /**
   * Stops sending; waits (bounded by uplink.publishTimeoutMs) for the batches in flight, recording their acks as
   * they come, so a clean shutdown leaves nothing to re-send. Idempotent.
   */
  protected async onClose (): Promise<void> {
    this.stopTimers()
    const deadline = Date.now() + this.cfg.publishTimeoutMs
    while (this.inFlight.size > 0 && Date.now() < deadline && this.link.current() && !this.released) await new Promise((resolve) => setTimeout(resolve, 10))
    this.released = true
  }

  /** Stops at once; acks that arrive later are ignored (the batches are re-sent by the next run). */
  protected onDestroy (): void {
    this.stopTimers()
    this.released = true
  }

  // After close() or destroy() (isClosing), no new batch starts; acks of those in flight are still
  // recorded until `released`.
  private stopTimers (): void {
    if (this.retryTimer) clearTimeout(this.retryTimer)
    if (this.throttleTimer) clearTimeout(this.throttleTimer)
    if (this.lingerTimer) clearTimeout(this.lingerTimer)
  }
}

/** What the replicator reports (the main thread adds ackedEvents, which it counts as it deletes). */
export interface ReplicatorStats { inFlight: number, retry: number, lastAckTs: number, backlogRanges: number, liveCursor: number, throttledForMs: number, retryPending: boolean }

