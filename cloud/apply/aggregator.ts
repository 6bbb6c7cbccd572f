// The aggregator: durable pull consumers on TELEMETRY and EVENTS, heartbeats on iot.*.status, and an
// idempotent apply into the view store.
//
// Per delivery group (the messages the consumer has ready, up to maxBatchMessages):
//   1. decode and validate every batch (the batch's gateway must be the subject's),
//   2. apply to the rollup documents (one per device and hour of event time), compare-and-set,
//   3. apply to the device documents (latest, dedupe state, accounting), compare-and-set,
//   4. ack every message of the group.
// Each document is idempotent on its own (it keeps the seqs it has absorbed), so a crash between any
// two steps, a redelivery, a replay long after JetStream's de-duplication window, or two replicas
// racing on one device changes nothing but the duplicate count. Documents only grow (seq sets are
// monotone), which is why a locally cached copy can decide "already applied" without a read.
//
// Control events (batch field 6: decisions, alerts, command outcomes; device "$control", the
// gateway's control seq) go the same way: the per-gateway decision, alert and command documents and
// the per-device references are each idempotent by seq (control/), applied in step 2; the
// dedupe state and accounting of (gateway, "$control", seq) is a device document, applied in step 3.
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type Consumer, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { CONTROL_DEVICE_ID, STREAMS, v1, type ControlEventProps, type GatewayStatus, type ReplicationBatch } from '../../proto/index.ts'
import { applyToDevice, applyToRollup, hourOf, newDeviceDoc, newRollupDoc, type ApplyEvent, type ApplyGap, type DeviceApplyStats, type DeviceDoc, type RollupDoc } from './apply.ts'
import { applyAlerts, applyCommands, applyDecisions, applyDeviceControl, dedupeEvent, DEFAULT_CONTROL_LIMITS, newAlertsDoc, newCommandsDoc, newDecisionsDoc, newDeviceControlDoc, parseDetail, type ControlEv, type ControlLimits } from './control/index.ts'
import { appendHealth, newHealthDoc, replicationLag, type GatewayDoc, type HealthDoc, type LagDoc } from './gateway-docs.ts'
import { CloudError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { CloudMetrics } from '../metrics.ts'
import { DEVICE_ID, GATEWAY_ID, viewKeys, type ViewStore } from '../store/view-store.ts'

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

export interface AggregatorStats { batches: number, applied: number, duplicates: number, rejected: number, flushes: number, heartbeats: number, conflicts: number, controlApplied: number, controlDuplicates: number }

interface Group { gatewayId: string, deviceId: string, events: ApplyEvent[], gaps: ApplyGap[] }
interface ControlGroup { gatewayId: string, events: ControlEv[], gaps: ApplyGap[] }
interface Cached { value: unknown, rev: number }

const STREAM_OF = { telemetry: STREAMS.telemetry.name, events: STREAMS.events.name } as const

export class Aggregator {
  private readonly opts: Required<Omit<AggregatorOptions, 'now' | 'controlLimits'>> & { now: () => number, controlLimits: ControlLimits }
  private readonly cache = new Map<string, Cached>()
  private readonly iters: ConsumerMessages[] = []
  private readonly loops: Promise<void>[] = []
  private sub: Subscription | null = null
  private js: JetStreamClient | null = null
  private jsm: JetStreamManager | null = null
  // One apply at a time in this process: the two consumer loops never race on a cached document.
  private applying: Promise<unknown> = Promise.resolve()
  private state: 'new' | 'starting' | 'running' | 'closing' | 'closed' = 'new'
  private closing: Promise<void> | null = null
  private readonly counts: AggregatorStats = { batches: 0, applied: 0, duplicates: 0, rejected: 0, flushes: 0, heartbeats: 0, conflicts: 0, controlApplied: 0, controlDuplicates: 0 }
  /** Per gateway: when this replica last wrote its apply lag (bounded by the number of gateways). */
  private readonly lagWritten = new Map<string, number>()

  constructor (
    private readonly nc: NatsConnection,
    private readonly store: ViewStore,
    private readonly metrics: CloudMetrics,
    private readonly log: Logger,
    opts: AggregatorOptions = {},
  ) {
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
  }

  /** Creates (or updates) the durable consumers, subscribes to heartbeats and starts consuming. */
  async start (): Promise<void> {
    if (this.state !== 'new') throw new Error(`aggregator cannot start: ${this.state}`)
    this.state = 'starting'
    this.jsm = await jetstreamManager(this.nc)
    this.js = jetstream(this.nc)
    for (const s of this.opts.streams) await this.ensureConsumer(STREAM_OF[s], this.durable(s))
    this.sub = this.nc.subscribe('iot.*.status', { queue: this.opts.statusQueue, callback: (err, msg) => { if (!err) void this.onHeartbeat(msg.subject, msg.data) } })
    for (const s of this.opts.streams) {
      const consumer = await this.js.consumers.get(STREAM_OF[s], this.durable(s))
      this.loops.push(this.run(s, consumer).catch((err) => this.log.error({ err, stream: STREAM_OF[s] }, 'consumer stopped')))
    }
    this.metrics.setLagSource(() => this.lag())
    if ((this.state as string) === 'starting') this.state = 'running'
    this.log.info({ streams: this.opts.streams, durablePrefix: this.opts.durablePrefix }, 'aggregator started')
  }

  /** True while consuming. */
  ready (): boolean { return this.state === 'running' }

  stats (): AggregatorStats { return { ...this.counts } }

  /** Stops pulling, finishes (and acks) the group being applied, then stops. Idempotent. */
  close (): Promise<void> {
    this.closing ??= (async () => {
      this.state = 'closing'
      this.metrics.setLagSource(null)
      this.sub?.unsubscribe()
      await Promise.all(this.iters.map((it) => it.close().catch(() => {})))
      await Promise.allSettled(this.loops)
      await this.applying.catch(() => {})
      this.state = 'closed'
      this.log.info(this.stats(), 'aggregator closed')
    })()
    return this.closing
  }

  /** Stops at once: what is not acked yet is redelivered by JetStream after ackWaitMs. */
  destroy (err?: Error): void {
    if (err) this.log.error({ err }, 'aggregator destroyed')
    this.state = 'closed'
    this.closing ??= Promise.resolve()
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
    while (!ended && this.state !== 'closing' && this.state !== 'closed') {
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
  async applyGroup (stream: string, msgs: Array<Pick<JsMsg, 'subject' | 'data' | 'ack' | 'term'>>): Promise<void> {
    const t0 = performance.now()
    const devices = new Map<string, Group>()
    const rollups = new Map<string, Group & { hour: number }>()
    const controls = new Map<string, ControlGroup>()
    const newest: number[] = []
    const newestByGateway = new Map<string, number>()
    const accepted: typeof msgs = []
    for (const m of msgs) {
      const batch = this.decode(m)
      if (!batch) continue
      accepted.push(m)
      let maxIngest = 0
      for (const ev of batch.events) {
        const deviceId = ev.deviceId ?? ''
        const seq = Number(ev.seq)
        const eventTsMs = Number(ev.eventTsMs)
        if (!DEVICE_ID.test(deviceId) || !Number.isSafeInteger(seq) || seq < 1 || !Number.isFinite(eventTsMs)) {
          this.reject(DEVICE_ID.test(deviceId) ? 'bad_event' : 'bad_device_id', { gatewayId: batch.gatewayId, deviceId, seq })
          continue
        }
        const e: ApplyEvent = {
          deviceId,
          seq,
          eventTsMs,
          ingestTsMs: Number(ev.ingestTsMs),
          readings: (ev.readings ?? []).map((r: { name?: string | null, value?: number | null }) => ({ name: r.name ?? '', value: r.value ?? 0 })),
          labels: ev.labels && Object.keys(ev.labels).length > 0 ? { ...ev.labels } : undefined,
          eventTsFromGateway: ev.eventTsFromGateway === true,
        }
        if (e.ingestTsMs > maxIngest) maxIngest = e.ingestTsMs
        this.group(devices, viewKeys.device(batch.gatewayId, deviceId), batch.gatewayId, deviceId).events.push(e)
        const hour = hourOf(eventTsMs)
        const rk = viewKeys.rollup(batch.gatewayId, deviceId, hour)
        const rg = rollups.get(rk)
        if (rg) rg.events.push(e)
        else rollups.set(rk, { gatewayId: batch.gatewayId, deviceId, hour, events: [e], gaps: [] })
      }
      for (const c of batch.control) {
        const ev = this.controlEvent(batch.gatewayId, c)
        if (!ev) continue
        this.controlGroup(controls, batch.gatewayId).events.push(ev)
        if (ev.ingestTsMs > maxIngest) maxIngest = ev.ingestTsMs
      }
      for (const g of batch.gaps) {
        const deviceId = g.deviceId ?? ''
        const fromSeq = Number(g.fromSeq)
        const toSeq = Number(g.toSeq)
        const control = deviceId === CONTROL_DEVICE_ID
        if ((!control && !DEVICE_ID.test(deviceId)) || !(fromSeq >= 1) || !(toSeq >= fromSeq)) {
          this.reject('bad_gap', { gatewayId: batch.gatewayId, deviceId, fromSeq, toSeq })
          continue
        }
        // Shed control events (the gateway sheds its priority lane last) are explained in the control accounting.
        const gap = { deviceId, fromSeq, toSeq, reason: g.reason ?? '' }
        if (control) this.controlGroup(controls, batch.gatewayId).gaps.push(gap)
        else this.group(devices, viewKeys.device(batch.gatewayId, deviceId), batch.gatewayId, deviceId).gaps.push(gap)
      }
      if (maxIngest > 0) {
        newest.push(maxIngest)
        if (maxIngest > (newestByGateway.get(batch.gatewayId) ?? 0)) newestByGateway.set(batch.gatewayId, maxIngest)
      }
    }

    // Rollups first, then devices: each is idempotent on its own, so the order only decides what a
    // crash in between leaves behind (rollups ahead of the device view, fixed by the redelivery).
    // Control views (decisions, alerts, commands, per-device references) beside the rollups.
    await Promise.all([
      ...[...rollups].map(([key, g]) => this.update<RollupDoc>(key,
        () => newRollupDoc(g.gatewayId, g.deviceId, g.hour),
        (doc) => applyToRollup(doc, g.events) > 0)),
      ...[...controls.values()].flatMap((g) => this.controlViewUpdates(g)),
    ])
    const now = this.opts.now()
    const results = new Map<string, DeviceApplyStats>()
    const controlResults = new Map<string, DeviceApplyStats>()
    await Promise.all([
      ...[...devices].map(([key, g]) => this.update<DeviceDoc>(key,
        () => newDeviceDoc(g.gatewayId, g.deviceId),
        (doc) => {
          const s = applyToDevice(doc, g.events, g.gaps, now, this.opts.maxRanges)
          results.set(key, s)
          return s.applied > 0 || s.duplicates > 0 || g.gaps.length > 0
        })),
      ...[...controls.values()].map((g) => this.update<DeviceDoc>(viewKeys.control(g.gatewayId),
        () => newDeviceDoc(g.gatewayId, CONTROL_DEVICE_ID),
        (doc) => {
          const s = applyToDevice(doc, g.events.map(dedupeEvent), g.gaps, now, this.opts.maxRanges)
          controlResults.set(g.gatewayId, s)
          return s.applied > 0 || s.duplicates > 0 || g.gaps.length > 0
        })),
    ])

    for (const m of accepted) m.ack()
    const applied = this.opts.now()
    let nApplied = 0
    let nDup = 0
    let explained = 0
    let filled = 0
    for (const s of results.values()) { nApplied += s.applied; nDup += s.duplicates; explained += s.explained; filled += s.lateFilled }
    this.counts.applied += nApplied
    this.counts.duplicates += nDup
    // Control events count in the metrics (stream label) but have their own totals in stats().
    for (const s of controlResults.values()) {
      this.counts.controlApplied += s.applied
      this.counts.controlDuplicates += s.duplicates
      nApplied += s.applied; nDup += s.duplicates; explained += s.explained; filled += s.lateFilled
    }
    this.counts.batches += accepted.length
    this.counts.flushes++
    this.metrics.applied.inc({ stream }, nApplied)
    if (nDup > 0) {
      this.metrics.duplicates.inc({ stream }, nDup)
      this.log.debug({ stream, duplicates: nDup }, 'duplicate events dropped')
    }
    if (explained > 0) this.metrics.gapSeqs.inc({ kind: 'explained' }, explained)
    if (filled > 0) this.metrics.gapSeqs.inc({ kind: 'filled' }, filled)
    this.metrics.batches.inc({ stream }, accepted.length)
    this.metrics.flushBatches.observe(msgs.length)
    this.metrics.flushSeconds.observe((performance.now() - t0) / 1000)
    for (const ts of newest) this.metrics.latencySeconds.observe(Math.max(0, applied - ts) / 1000)
    // Lag only where something new was applied: a replay of old batches says nothing about the link.
    const fresh = new Set<string>()
    for (const [key, st] of results) if (st.applied > 0) fresh.add(devices.get(key)!.gatewayId)
    for (const [gw, st] of controlResults) if (st.applied > 0) fresh.add(gw)
    for (const gw of newestByGateway.keys()) if (!fresh.has(gw)) newestByGateway.delete(gw)
    await this.writeLag(newestByGateway, applied)
  }

  /** Decodes one control event; null (counted) when it cannot be applied. */
  private controlEvent (gatewayId: string, c: ControlEventProps): ControlEv | null {
    const seq = Number(c.seq)
    if (c.deviceId !== CONTROL_DEVICE_ID || !Number.isSafeInteger(seq) || seq < 1) {
      this.reject('bad_control_event', { gatewayId, deviceId: c.deviceId, seq })
      return null
    }
    return {
      seq,
      kind: c.kind ?? '',
      eventTsMs: Number(c.eventTsMs ?? 0),
      ingestTsMs: Number(c.ingestTsMs ?? 0),
      // A subject that is not a valid device id gets no per-device references (and is not shown as one).
      deviceId: DEVICE_ID.test(c.subjectDeviceId ?? '') ? c.subjectDeviceId! : '',
      ruleId: c.ruleId ?? '',
      ruleSetVersion: c.ruleSetVersion ?? '',
      alertId: (c.alertId ?? '').slice(0, 128),
      severity: c.severity ?? '',
      message: (c.message ?? '').slice(0, 500),
      commandId: (c.commandId ?? '').slice(0, 128),
      commandName: c.commandName ?? '',
      commandStatus: c.commandStatus ?? '',
      durationMs: Number.isFinite(c.durationMs) ? Number(c.durationMs) : 0,
      detail: parseDetail(c.detailJson),
    }
  }

  private controlGroup (map: Map<string, ControlGroup>, gatewayId: string): ControlGroup {
    let g = map.get(gatewayId)
    if (!g) map.set(gatewayId, g = { gatewayId, events: [], gaps: [] })
    return g
  }

  /** The updates of a gateway's control views for one group (documents it does not touch are not read). */
  private controlViewUpdates (g: ControlGroup): Promise<void>[] {
    const gw = g.gatewayId
    const lim = this.opts.controlLimits
    const has = (...kinds: string[]): boolean => g.events.some((e) => kinds.includes(e.kind))
    const out: Promise<void>[] = []
    if (has('decision')) out.push(this.update(viewKeys.decisions(gw), () => newDecisionsDoc(gw), (doc) => applyDecisions(doc, g.events, lim.decisions) > 0))
    if (has('alert_raised', 'alert_cleared')) out.push(this.update(viewKeys.alerts(gw), () => newAlertsDoc(gw), (doc) => applyAlerts(doc, g.events, lim)))
    if (has('command_result')) out.push(this.update(viewKeys.commands(gw), () => newCommandsDoc(gw), (doc) => applyCommands(doc, g.events, lim)))
    const byDevice = new Map<string, ControlEv[]>()
    for (const e of g.events) {
      if (e.deviceId === '') continue
      const list = byDevice.get(e.deviceId)
      if (list) list.push(e)
      else byDevice.set(e.deviceId, [e])
    }
    for (const [deviceId, events] of byDevice) {
      out.push(this.update(viewKeys.deviceControl(gw, deviceId), () => newDeviceControlDoc(gw, deviceId), (doc) => applyDeviceControl(doc, events, lim.deviceRefs)))
    }
    return out
  }

  /**
   * Records, per gateway, the ingest -> applied lag of the newest events just applied (gateway clock
   * to cloud clock). Last writer wins; each replica writes a gateway at most once per lagWriteMs.
   */
  private async writeLag (newestByGateway: Map<string, number>, appliedMs: number): Promise<void> {
    for (const [gatewayId, ingestTs] of newestByGateway) {
      const last = this.lagWritten.get(gatewayId) ?? 0
      if (appliedMs - last < this.opts.lagWriteMs) continue
      this.lagWritten.delete(gatewayId)
      this.lagWritten.set(gatewayId, appliedMs)
      if (this.lagWritten.size > 100_000) this.lagWritten.delete(this.lagWritten.keys().next().value!)
      const doc: LagDoc = { v: 1, gatewayId, applyLagMs: Math.max(0, appliedMs - ingestTs), atMs: appliedMs }
      try {
        await this.store.put(viewKeys.lag(gatewayId), doc)
      } catch (err) {
        // A statistic: a lost write is retried by the next group.
        this.lagWritten.delete(gatewayId)
        this.log.debug({ err, gatewayId }, 'apply lag not stored')
      }
    }
  }

  private group (map: Map<string, Group>, key: string, gatewayId: string, deviceId: string): Group {
    let g = map.get(key)
    if (!g) map.set(key, g = { gatewayId, deviceId, events: [], gaps: [] })
    return g
  }

  /** Decodes a batch and checks it belongs to the gateway of its subject; terminates it otherwise. */
  private decode (m: Pick<JsMsg, 'subject' | 'data' | 'term'>): ReplicationBatch | null {
    const gatewayId = m.subject.split('.')[1] ?? ''
    let batch: ReplicationBatch
    try {
      batch = v1.ReplicationBatch.decode(m.data)
    } catch (err) {
      this.reject('malformed_batch', { subject: m.subject, err: (err as Error).message })
      m.term('malformed batch')
      return null
    }
    // NATS permissions confine a gateway to its subjects; the batch must not claim another identity.
    if (batch.gatewayId !== gatewayId || !GATEWAY_ID.test(gatewayId)) {
      this.reject('gateway_mismatch', { subject: m.subject, batchGatewayId: batch.gatewayId })
      m.term('gateway id does not match the subject')
      return null
    }
    return batch
  }

  private reject (reason: string, detail: Record<string, unknown>): void {
    this.counts.rejected++
    this.metrics.rejected.inc({ reason })
    this.log.warn({ reason, ...detail }, 'rejected replicated data')
  }

  /**
   * Read-modify-write of one document with compare-and-set. `fn` changes the document in place and
   * says whether it changed; on a conflict the copy is dropped, re-read and `fn` runs again.
   */
  private async update<T> (key: string, create: () => T, fn: (doc: T) => boolean): Promise<void> {
    for (let attempt = 0; attempt < this.opts.casAttempts; attempt++) {
      let cur = this.cache.get(key) as { value: T, rev: number } | undefined
      if (cur) this.cache.delete(key)
      else cur = (await this.store.get<T>(key)) ?? { value: create(), rev: 0 }
      if (!fn(cur.value)) {
        this.remember(key, cur)
        return
      }
      // A failed write leaves the copy changed but unwritten: it is not cached again.
      const rev = await this.store.cas(key, cur.value, cur.rev)
      if (rev !== null) {
        this.remember(key, { value: cur.value, rev })
        return
      }
      this.counts.conflicts++
      this.metrics.storeConflicts.inc()
    }
    throw new CloudError('CLOUD_ERR_VIEW_CONFLICT', `view document ${key}: ${this.opts.casAttempts} compare-and-set conflicts in a row`)
  }

  private remember (key: string, entry: Cached): void {
    this.cache.set(key, entry)
    if (this.cache.size > this.opts.cacheDocs) this.cache.delete(this.cache.keys().next().value!)
  }

  private async onHeartbeat (subject: string, data: Uint8Array): Promise<void> {
    const gatewayId = subject.split('.')[1] ?? ''
    let s: GatewayStatus
    try {
      s = v1.GatewayStatus.decode(data)
    } catch {
      this.reject('malformed_status', { subject })
      return
    }
    if (s.gatewayId !== gatewayId || !GATEWAY_ID.test(gatewayId)) {
      this.reject('gateway_mismatch', { subject, statusGatewayId: s.gatewayId })
      return
    }
    const doc: GatewayDoc = {
      v: 1,
      gatewayId,
      lastSeenMs: this.opts.now(),
      status: {
        tsMs: Number(s.tsMs),
        version: s.version,
        linkState: s.linkState,
        backlogEvents: Number(s.backlogEvents),
        backlogBytes: Number(s.backlogBytes),
        oldestUnsentAgeMs: Number(s.oldestUnsentAgeMs),
        ingestEventsPerSec: s.ingestEventsPerSec,
        uplinkEventsPerSec: s.uplinkEventsPerSec,
        connectedDevices: s.connectedDevices,
        rejectedTotal: Number(s.rejectedTotal),
        shedEventsTotal: Number(s.shedEventsTotal),
        startedTsMs: Number(s.startedTsMs),
        lastAckTsMs: Number(s.lastAckTsMs),
        lastError: s.lastError,
        ruleSetVersion: s.ruleSetVersion,
        decisionP99Ms: Number.isFinite(s.decisionP99Ms) ? s.decisionP99Ms : 0,
        quarantinedTotal: Number(s.quarantinedTotal),
      },
    }
    try {
      await this.store.put(viewKeys.gateway(gatewayId), doc)
      this.counts.heartbeats++
      this.metrics.heartbeats.inc()
    } catch (err) {
      this.metrics.storeErrors.inc()
      this.log.warn({ err, gatewayId }, 'heartbeat not stored')
      return
    }
    try {
      await this.recordHealth(doc)
    } catch (err) {
      this.metrics.storeErrors.inc()
      this.log.warn({ err, gatewayId }, 'link-health sample not stored')
    }
  }

  /** One link-health sample per heartbeat (cloud receive time), for the gateway page's charts. */
  private async recordHealth (doc: GatewayDoc): Promise<void> {
    const lag = await this.store.get<LagDoc>(viewKeys.lag(doc.gatewayId))
    const s = doc.status
    const sample = {
      t: doc.lastSeenMs,
      backlogEvents: s.backlogEvents,
      oldestUnsentAgeMs: s.oldestUnsentAgeMs,
      replicationLagMs: replicationLag(doc, lag?.value ?? null, doc.lastSeenMs),
      ingestEventsPerSec: s.ingestEventsPerSec,
      uplinkEventsPerSec: s.uplinkEventsPerSec,
      linkUp: s.linkState === 'up' ? 1 : 0,
    }
    await this.update<HealthDoc>(viewKeys.health(doc.gatewayId), () => newHealthDoc(doc.gatewayId), (h) => appendHealth(h, sample, this.opts.healthSamples))
  }
}
