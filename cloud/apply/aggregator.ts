// The aggregator: one replica of the cloud's apply side. The work is partitioned by gateway
// (proto/partitions.ts): the replica holds leases on some partitions (cloud/partitions/), and for each
// one it holds runs a filtered durable pull consumer per stream (partition-consumer.ts: groups of at
// most maxBatchMessages, acked once applied). Heartbeats (core NATS, iot.*.status) reach every
// replica; each stores those of the gateways in the partitions it holds. This file wires those parts
// together and owns the lifecycle (start, close, destroy).
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
import { channel } from 'node:diagnostics_channel'
import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { CLOUD_BUCKETS, STREAMS, UNMAPPED_PARTITION, partitionFilter, partitionIds, partitionOf, type PartitionedLane } from '../../proto/index.ts'
import type { Logger } from '../log.ts'
import type { CloudMetrics } from '../metrics.ts'
import { LeaseTable } from '../partitions/lease-table.ts'
import { PartitionOwner, type HandoverCounts } from '../partitions/partition-owner.ts'
import type { ViewStore } from '../store/view-store.ts'
import { newStats, rejecter, type AggregatorStats, type ApplyContext } from './apply-context.ts'
import { GroupApplier } from './apply-group.ts'
import { DEFAULT_CONTROL_LIMITS, type ControlLimits } from './control/index.ts'
import type { GroupMsg } from './decode.ts'
import { DocWriter } from './doc-writer.ts'
import { HeartbeatApplier } from './heartbeat.ts'
import { PartitionConsumer } from './partition-consumer.ts'
import { DEFAULT_RETENTION, type TierRetention } from './tiers/tiers.ts'
import { Lifecycle } from '../../lib/lifecycle.ts'

export type { AggregatorStats } from './apply-context.ts'

/**
 * Published on every applied group (node:diagnostics_channel; nothing is built without a
 * subscriber): { replicaId, partition, stream, startMs, endMs } with wall-clock times
 * (performance.timeOrigin + now(), sub-millisecond), so that tests can check that no two replicas apply one partition at once.
 */
export const APPLY_WINDOW_CHANNEL = 'iot.cloud.aggregator.apply-window'
const applyWindows = channel(APPLY_WINDOW_CHANNEL)

export interface AggregatorOptions {
  /** Prefix of the durable consumer names (`<prefix>-<lane>-p<n>`) and of the lease keys; replicas of one cloud share it. */
  durablePrefix?: string
  /** Mapped partitions: must equal P of the servers' `{{partition(P,1)}}` mapping (proto/partitions.ts). */
  partitions?: number
  /** This replica's name in the lease table (default host-pid-random). A replica restarted under the same name takes its leases back at once. */
  replicaId?: string
  /** A partition whose owner stopped renewing for this long is taken over (ms). */
  leaseTtlMs?: number
  /** KV bucket of the leases (created when missing, with bucketReplicas copies). */
  leaseBucket?: string
  bucketReplicas?: number
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
  /** Which streams to consume (default both). */
  streams?: PartitionedLane[]
  /** Bounds of the control views (decisions, alerts, commands, per-device references). */
  controlLimits?: Partial<ControlLimits>
  /** Link-health samples kept per gateway (one per heartbeat: 720 = 1 h at the default 5 s). */
  healthSamples?: number
  /** Least time between two writes of a gateway's apply lag by this replica (ms). */
  lagWriteMs?: number
  /** Retention of each rollup tier (ms; default tiers/tiers.ts DEFAULT_RETENTION): older events are left out of the tier. */
  retention?: Partial<TierRetention>
  now?: () => number
}

const STREAM_OF = { telemetry: STREAMS.telemetry.name, events: STREAMS.events.name } as const

/** What a replica reports of its partitions (/readyz, the console). */
export interface PartitionReport { replicaId: string, partitions: number, owned: string[], liveReplicas: string[], lag: Record<string, number>, handovers: HandoverCounts }

export class Aggregator extends Lifecycle {
  private readonly opts: Required<Omit<AggregatorOptions, 'now' | 'controlLimits' | 'retention'>> & { now: () => number, controlLimits: ControlLimits, retention: TierRetention }
  private readonly counts: AggregatorStats = newStats()
  private readonly groups: GroupApplier
  private readonly heartbeats: HeartbeatApplier
  private readonly writer: DocWriter
  /** Per held partition, its consumer on each stream. */
  private readonly consumers = new Map<string, PartitionConsumer[]>()
  private owner: PartitionOwner | null = null
  private sub: Subscription | null = null
  private js: JetStreamClient | null = null
  private jsm: JetStreamManager | null = null
  // One apply at a time in this process: the consumer loops never race on a cached document.
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
      partitions: opts.partitions ?? 8,
      replicaId: opts.replicaId ?? `${hostname().replace(/[^A-Za-z0-9_-]/g, '_')}-${process.pid}-${randomBytes(3).toString('hex')}`,
      leaseTtlMs: opts.leaseTtlMs ?? 6000,
      leaseBucket: opts.leaseBucket ?? CLOUD_BUCKETS.leases,
      bucketReplicas: opts.bucketReplicas ?? 1,
      maxBatchMessages: opts.maxBatchMessages ?? 64,
      maxRanges: opts.maxRanges ?? 1000,
      cacheDocs: opts.cacheDocs ?? 20000,
      ackWaitMs: opts.ackWaitMs ?? 30000,
      casAttempts: opts.casAttempts ?? 20,
      streams: opts.streams ?? ['telemetry', 'events'],
      controlLimits: { ...DEFAULT_CONTROL_LIMITS, ...opts.controlLimits },
      healthSamples: opts.healthSamples ?? 720,
      lagWriteMs: opts.lagWriteMs ?? 1000,
      retention: { ...DEFAULT_RETENTION, ...opts.retention },
      now: opts.now ?? Date.now,
    }
    const o = this.opts
    this.writer = new DocWriter(store, { cacheDocs: o.cacheDocs, casAttempts: o.casAttempts, onConflict: () => { this.counts.conflicts++; metrics.storeConflicts.inc() } })
    const ctx: ApplyContext = { store, writer: this.writer, metrics, log, counts: this.counts, now: o.now, reject: rejecter(this.counts, metrics, log) }
    this.groups = new GroupApplier(ctx, { maxRanges: o.maxRanges, controlLimits: o.controlLimits, lagWriteMs: o.lagWriteMs, retention: o.retention })
    this.heartbeats = new HeartbeatApplier(ctx, { healthSamples: o.healthSamples })
  }

  get replicaId (): string { return this.opts.replicaId }

  /** Opens the lease table, subscribes to heartbeats, and takes a share of the partitions. */
  async start (): Promise<void> {
    if (this.phase !== 'new' || this.isClosing) throw new Error(`aggregator cannot start: ${this.isClosing ? this.lifecycleState : this.phase}`)
    this.phase = 'starting'
    this.jsm = await jetstreamManager(this.nc)
    this.js = jetstream(this.nc)
    const o = this.opts
    await this.ensureLeaseBucket()
    const table = await LeaseTable.open(this.nc, { bucket: o.leaseBucket, group: o.durablePrefix, ttlMs: o.leaseTtlMs, now: o.now })
    const ids = partitionIds(o.partitions).filter((id) => id !== UNMAPPED_PARTITION)
    this.owner = new PartitionOwner(this.nc, table, { acquire: (id) => this.acquire(id), release: (id) => this.release(id), lag: () => this.partitionLag() },
      this.log.child({ component: 'partitions' }), { replicaId: o.replicaId, ids, spare: [UNMAPPED_PARTITION], ttlMs: o.leaseTtlMs, now: o.now })
    this.sub = this.nc.subscribe('iot.*.status', {
      callback: (err, msg) => {
        // Every replica hears every heartbeat; the owner of the gateway's partition stores it.
        if (!err && this.owner?.holds(String(partitionOf(msg.subject.split('.')[1] ?? '', o.partitions)))) void this.heartbeats.apply(msg.subject, msg.data)
      },
    })
    this.metrics.setPartitionSource({ report: () => this.partitions(), lag: () => this.partitionLag() })
    await this.owner.start()
    if (!this.isClosing) this.phase = 'running'
    this.log.info({ streams: o.streams, durablePrefix: o.durablePrefix, replicaId: o.replicaId, partitions: o.partitions, owned: this.owner.owned() }, 'aggregator started')
  }

  /** True while running (a replica that holds no partition is ready: it is a standby). */
  ready (): boolean { return this.phase === 'running' && !this.isClosing }

  stats (): AggregatorStats { return { ...this.counts } }

  /** The partitions this replica holds, their lag, the live replicas it sees, handovers. */
  partitions (): PartitionReport {
    const o = this.owner
    return { replicaId: this.opts.replicaId, partitions: this.opts.partitions, owned: o?.owned() ?? [], liveReplicas: o?.liveMembers() ?? [], lag: o?.lag() ?? {}, handovers: o?.handovers() ?? { acquired: 0, released: 0, lost: 0 } }
  }

  /** Hands every partition over (each finishes and acks its group), then stops. Idempotent. */
  protected async onClose (): Promise<void> {
    this.metrics.setPartitionSource(null)
    this.sub?.unsubscribe()
    await this.owner?.close()
    await this.applying.catch(() => {})
    this.log.info(this.stats(), 'aggregator closed')
  }

  /** Stops at once: what is not acked is redelivered to the replica that takes the partitions over. */
  protected onDestroy (err?: Error): void {
    if (err) this.log.error({ err }, 'aggregator destroyed')
    this.metrics.setPartitionSource(null)
    this.sub?.unsubscribe()
    this.owner?.destroy()
    for (const cs of this.consumers.values()) for (const c of cs) c.destroy()
  }

  /** Consumer lag per stream and partition held: messages not yet applied. */
  async lag (): Promise<Array<{ stream: string, partition: string, lag: number }>> {
    const out: Array<{ stream: string, partition: string, lag: number }> = []
    await Promise.all([...this.consumers].flatMap(([partition, cs]) => cs.map(async (c, i) => {
      out.push({ stream: STREAM_OF[this.opts.streams[i]], partition, lag: await c.lag() })
    })))
    return out
  }

  private async partitionLag (): Promise<Record<string, number>> {
    const out: Record<string, number> = {}
    for (const l of await this.lag()) out[l.partition] = (out[l.partition] ?? 0) + l.lag
    return out
  }

  private async ensureLeaseBucket (): Promise<void> {
    try {
      await this.jsm!.streams.info(`KV_${this.opts.leaseBucket}`)
    } catch (err) {
      if (!/not found/i.test((err as Error).message)) throw err
      // History 1; entries nobody rewrites for an hour (replicas long gone) age out.
      await new Kvm(this.nc).create(this.opts.leaseBucket, { history: 1, replicas: this.opts.bucketReplicas, ttl: 3600_000, description: 'IoT cloud: aggregator replicas and partition leases' })
    }
  }

  private async acquire (id: string): Promise<void> {
    // Documents of this partition cached from an earlier hold may be stale: read them afresh.
    const P = this.opts.partitions
    this.writer.forget((key) => id === UNMAPPED_PARTITION || String(partitionOf(key.split('.')[1] ?? '', P)) === id)
    const cs = this.opts.streams.map((lane) => new PartitionConsumer({
      stream: STREAM_OF[lane],
      durable: `${this.opts.durablePrefix}-${lane}-p${id}`,
      filter: partitionFilter(lane, id),
      legacyDurable: id === UNMAPPED_PARTITION ? `${this.opts.durablePrefix}-${lane}` : undefined,
      maxBatchMessages: this.opts.maxBatchMessages,
      ackWaitMs: this.opts.ackWaitMs,
    }, { js: this.js!, jsm: this.jsm!, apply: (msgs) => this.applyPartition(id, STREAM_OF[lane], msgs), holds: () => this.owner?.holds(id) ?? false, metrics: this.metrics, log: this.log }))
    const started: PartitionConsumer[] = []
    try {
      for (const c of cs) { await c.start(); started.push(c) }
    } catch (err) {
      await Promise.all(started.map((c) => c.stop()))
      throw err
    }
    this.consumers.set(id, cs)
  }

  private async release (id: string): Promise<void> {
    const cs = this.consumers.get(id)
    this.consumers.delete(id)
    await Promise.all((cs ?? []).map((c) => c.stop()))
  }

  private applyPartition (partition: string, stream: string, msgs: JsMsg[]): Promise<void> {
    return this.serialized(async () => {
      if (!applyWindows.hasSubscribers) return this.applyGroup(stream, msgs)
      const startMs = performance.timeOrigin + performance.now()
      try {
        await this.applyGroup(stream, msgs)
      } finally {
        applyWindows.publish({ replicaId: this.opts.replicaId, partition, stream, startMs, endMs: performance.timeOrigin + performance.now() })
      }
    })
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
