// The aggregator: durable pull consumers on TELEMETRY and EVENTS, heartbeats on iot.*.status, and an
// idempotent apply into the view store. This file is the consumer side: the durable consumers, the
// loop that takes what they deliver as groups of at most maxBatchMessages, acks a group once applied
// and naks it (with a backoff) when the apply fails, and the lifecycle (start, close, destroy).
//
// The apply is elsewhere: decode.ts (decoding, validation, grouping by document), apply-group.ts (the
// steps of a group's apply), doc-writer.ts (cache and compare-and-set retries), heartbeat.ts
// (gateway documents and link health), and the pure document logic in apply.ts (telemetry),
// control/ (decisions, alerts, commands, device references) and gateway-docs.ts.
// Documents only grow (seq sets are monotone), which is why a locally cached copy can decide
// "already applied" without a read, and why a redelivery changes nothing but the duplicate count.
//
// Control events (batch field 6: decisions, alerts, command outcomes; device "$control", the
// gateway's control seq) go the same way: the per-gateway decision, alert and command documents and
// the per-device references are each idempotent by seq (control/), applied beside the rollups; the
// dedupe state and accounting of (gateway, "$control", seq) is a device document, applied with the
// devices.
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type Consumer, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { STREAMS } from '../../proto/index.ts'
import type { Logger } from '../log.ts'
import type { CloudMetrics } from '../metrics.ts'
import type { ViewStore } from '../store/view-store.ts'
import { newStats, rejecter, type AggregatorStats, type ApplyContext } from './apply-context.ts'
import { GroupApplier } from './apply-group.ts'
import { DEFAULT_CONTROL_LIMITS, type ControlLimits } from './control/index.ts'
import type { GroupMsg } from './decode.ts'
import { DocWriter } from './doc-writer.ts'
import { HeartbeatApplier } from './heartbeat.ts'
import { Lifecycle } from '../../lib/lifecycle.ts'

export type { AggregatorStats } from './apply-context.ts'

export interface AggregatorOptions {
  /** Prefix of the durable consumer names (`<prefix>-telemetry`, `<prefix>-events`); replicas share them. */
  durablePrefix?: string
  /** Most replication batches applied (and acked) together. Bounds memory: each is at most ~512 KiB. */
  maxBatchMessages?: number
  /** Bound of the out-of-order state per device (ranges of seqs); see apply.ts. */
  maxRanges?: number
  /** View documents cached in memory (LRU); a stale copy only costs a compare-and-set retry. */
  cacheDocs?: number
  /** JetStream redelivers a batch not acknowledged within this time. */
  ackWaitMs?: number
  /** Compare-and-set attempts per document before the group is given up (and redelivered). */
  casAttempts?: number
  /** Queue group of the heartbeat subscription: one replica stores each heartbeat. */
  statusQueue?: string
  /** Which streams to consume (default both). */
  streams?: Array<'telemetry' | 'events'>
  /** Bounds of the control views (decisions, alerts, commands, per-device references). */
  controlLimits?: Partial<ControlLimits>
  /** Link-health samples kept per gateway (one per heartbeat: 720 = 1 h at the default 5 s). */
  healthSamples?: number
  /** Least time between two writes of a gateway's apply lag by this replica (ms). */
  lagWriteMs?: number
  now?: () => number
}

const STREAM_OF = { telemetry: STREAMS.telemetry.name, events: STREAMS.events.name } as const

export class Aggregator extends Lifecycle {
  private readonly opts: Required<Omit<AggregatorOptions, 'now' | 'controlLimits'>> & { now: () => number, controlLimits: ControlLimits }
  private readonly counts: AggregatorStats = newStats()
  private readonly groups: GroupApplier
  private readonly heartbeats: HeartbeatApplier
  private readonly iters: ConsumerMessages[] = []
  private readonly loops: Promise<void>[] = []
  private sub: Subscription | null = null
  private js: JetStreamClient | null = null
  private jsm: JetStreamManager | null = null
  // One apply at a time in this process: the two consumer loops never race on a cached document.
  private applying: Promise<unknown> = Promise.resolve()
  /** How far start() has got; closing and closed are the lifecycle's (lib/lifecycle.ts). */
  private phase: 'new' | 'starting' | 'running' = 'new'

  constructor (
    private readonly nc: NatsConnection,
    store: ViewStore,
    private readonly metrics: CloudMetrics,
    private readonly log: Logger,
    opts: AggregatorOptions = {},
  ) {
    super()
    this.opts = {
      durablePrefix: opts.durablePrefix ?? 'aggregator',
      maxBatchMessages: opts.maxBatchMessages ?? 64,
      maxRanges: opts.maxRanges ?? 1000,
      cacheDocs: opts.cacheDocs ?? 20000,
      ackWaitMs: opts.ackWaitMs ?? 30000,
      casAttempts: opts.casAttempts ?? 20,
      statusQueue: opts.statusQueue ?? 'cloud-aggregator',
      streams: opts.streams ?? ['telemetry', 'events'],
      controlLimits: { ...DEFAULT_CONTROL_LIMITS, ...opts.controlLimits },
      healthSamples: opts.healthSamples ?? 720,
      lagWriteMs: opts.lagWriteMs ?? 1000,
      now: opts.now ?? Date.now,
    }
    const o = this.opts
    const writer = new DocWriter(store, { cacheDocs: o.cacheDocs, casAttempts: o.casAttempts, onConflict: () => { this.counts.conflicts++; metrics.storeConflicts.inc() } })
    const ctx: ApplyContext = { store, writer, metrics, log, counts: this.counts, now: o.now, reject: rejecter(this.counts, metrics, log) }
    this.groups = new GroupApplier(ctx, { maxRanges: o.maxRanges, controlLimits: o.controlLimits, lagWriteMs: o.lagWriteMs })
    this.heartbeats = new HeartbeatApplier(ctx, { healthSamples: o.healthSamples })
  }

  /** Creates (or updates) the durable consumers, subscribes to heartbeats and starts consuming. */
  async start (): Promise<void> {
    if (this.phase !== 'new' || this.isClosing) throw new Error(`aggregator cannot start: ${this.isClosing ? this.lifecycleState : this.phase}`)
    this.phase = 'starting'
    this.jsm = await jetstreamManager(this.nc)
    this.js = jetstream(this.nc)
    for (const s of this.opts.streams) await this.ensureConsumer(STREAM_OF[s], this.durable(s))
    this.sub = this.nc.subscribe('iot.*.status', { queue: this.opts.statusQueue, callback: (err, msg) => { if (!err) void this.heartbeats.apply(msg.subject, msg.data) } })
    for (const s of this.opts.streams) {
      const consumer = await this.js.consumers.get(STREAM_OF[s], this.durable(s))
      this.loops.push(this.run(s, consumer).catch((err) => this.log.error({ err, stream: STREAM_OF[s] }, 'consumer stopped')))
    }
    this.metrics.setLagSource(() => this.lag())
    if (!this.isClosing) this.phase = 'running'
    this.log.info({ streams: this.opts.streams, durablePrefix: this.opts.durablePrefix }, 'aggregator started')
  }

  /** True while consuming. */
  ready (): boolean { return this.phase === 'running' && !this.isClosing }

  stats (): AggregatorStats { return { ...this.counts } }

  /** Stops pulling, finishes (and acks) the group being applied, then stops. Idempotent. */
  protected async onClose (): Promise<void> {
    this.metrics.setLagSource(null)
    this.sub?.unsubscribe()
    await Promise.all(this.iters.map((it) => it.close().catch(() => {})))
    await Promise.allSettled(this.loops)
    await this.applying.catch(() => {})
    this.log.info(this.stats(), 'aggregator closed')
  }

  /** Stops at once: what is not acked yet is redelivered by JetStream after ackWaitMs. */
  protected onDestroy (err?: Error): void {
    if (err) this.log.error({ err }, 'aggregator destroyed')
    this.metrics.setLagSource(null)
    this.sub?.unsubscribe()
    for (const it of this.iters) it.stop()
  }

  /** Consumer lag per stream: stream last seq minus ack floor. */
  async lag (): Promise<Array<{ stream: string, lag: number, pending: number }>> {
    const jsm = this.jsm
    if (!jsm) return []
    return Promise.all(this.opts.streams.map(async (s) => {
      const [si, ci] = await Promise.all([jsm.streams.info(STREAM_OF[s]), jsm.consumers.info(STREAM_OF[s], this.durable(s))])
      return { stream: STREAM_OF[s], lag: Math.max(0, si.state.last_seq - ci.ack_floor.stream_seq), pending: ci.num_pending + ci.num_ack_pending }
    }))
  }

  private durable (s: 'telemetry' | 'events'): string { return `${this.opts.durablePrefix}-${s}` }

  private async ensureConsumer (stream: string, durable: string): Promise<void> {
    const jsm = this.jsm!
    const cfg = {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: this.opts.ackWaitMs * 1_000_000,
      max_ack_pending: this.opts.maxBatchMessages * 2,
      max_deliver: -1,
    }
    try {
      await jsm.consumers.info(stream, durable)
      await jsm.consumers.update(stream, durable, { ack_wait: cfg.ack_wait, max_ack_pending: cfg.max_ack_pending })
    } catch (err) {
      if (!/not found/i.test((err as Error).message)) throw err
      await jsm.consumers.add(stream, cfg)
    }
  }

  /**
   * Drains what the consumer delivered: everything ready is applied as one group (at most
   * maxBatchMessages), then acked. The buffer is bounded by the consumer's max_ack_pending: the
   * server sends no more while that many are unacknowledged.
   */
  private async run (s: 'telemetry' | 'events', consumer: Consumer): Promise<void> {
    const stream = STREAM_OF[s]
    const buffer: JsMsg[] = []
    let wake: (() => void) | null = null
    const iter = await consumer.consume({
      max_messages: this.opts.maxBatchMessages,
      // Short pull expiry: a pull left on a cluster node that died is renewed within seconds,
      // not after the client's default 30 s.
      expires: 5000,
      callback: (m) => { buffer.push(m); wake?.() },
    })
    this.iters.push(iter)
    let ended = false
    void iter.closed().then(() => { ended = true; wake?.() })
    let failures = 0
    while (!ended && !this.isClosing) {
      if (buffer.length === 0) {
        await new Promise<void>((resolve) => { wake = resolve })
        wake = null
        continue
      }
      const msgs = buffer.splice(0, this.opts.maxBatchMessages)
      try {
        await this.serialized(() => this.applyGroup(stream, msgs))
        failures = 0
      } catch (err) {
        failures++
        this.metrics.storeErrors.inc()
        const delayMs = Math.min(10000, 100 * 2 ** Math.min(failures, 7))
        this.log.error({ err, stream, batches: msgs.length, delayMs }, 'apply failed: batches will be redelivered')
        for (const m of msgs) m.nak(delayMs)
        await new Promise((resolve) => setTimeout(resolve, delayMs))
      }
    }
    // Taken from the server but not applied: hand them back at once (another replica may take them).
    for (const m of buffer.splice(0)) m.nak()
  }

  private serialized<T> (fn: () => Promise<T>): Promise<T> {
    const p = this.applying.then(fn, fn)
    this.applying = p.catch(() => {})
    return p
  }

  /** Applies a group of replication batches to the views, then acks them. Exposed for benchmarks. */
  applyGroup (stream: string, msgs: GroupMsg[]): Promise<void> {
    return this.groups.applyGroup(stream, msgs)
  }
}
