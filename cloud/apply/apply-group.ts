// The apply of one delivery group (the messages a consumer has ready, up to maxBatchMessages), as a
// list of named steps run in series:
//   1. decodeGroup: decode and validate every batch (the batch's gateway must be the subject's),
//   2. applyTiersAndControl: the rollup tier documents (per device, tier and span of event time: one
//      read and one write per document per group, whatever the number of its events; events too old
//      for a tier's retention are left out of it) and the control views (decisions, alerts, commands,
//      per-device references), compare-and-set,
//   3. applyDevices: the device documents (latest, dedupe state, accounting) and each gateway's
//      "$control" dedupe document, compare-and-set; events too old for a tier are counted here, once
//      each: only those new to the device document (a redelivery finds them applied),
//   4. ack every accepted message of the group,
//   5. count: stats and metrics,
//   6. writeLag: the ingest -> applied lag of gateways that had something new applied.
// Each document is idempotent on its own (it keeps the seqs it has absorbed), so a crash between any
// two steps, a redelivery, a replay long after JetStream's de-duplication window, or two replicas
// racing on one device changes nothing but the duplicate count.
import { CONTROL_DEVICE_ID } from '../../proto/index.ts'
import { viewKeys } from '../store/view-store.ts'
import { applyToDevice, newDeviceDoc, type DeviceApplyStats, type DeviceDoc } from './apply.ts'
import { contains } from './ranges.ts'
import { applyToTier, newTierDoc, tooOld, type TierDoc, type TierName, type TierRetention } from './tiers/tiers.ts'
import type { ApplyContext } from './apply-context.ts'
import { applyAlerts, applyCommands, applyDeadLetters, applyDecisions, applyDeviceControl, dedupeEvent, newAlertsDoc, newCommandsDoc, newDeadLettersDoc, newDecisionsDoc, newDeviceControlDoc, type ControlEv, type ControlLimits } from './control/index.ts'
import { decodeGroup, type ControlGroup, type DecodedGroup, type DeviceGroup, type GroupMsg } from './decode.ts'
import type { LagDoc } from './gateway-docs.ts'

export interface GroupApplyOptions {
  /** Bound of the out-of-order state per device (ranges of seqs); see apply.ts. */
  maxRanges: number
  controlLimits: ControlLimits
  /** Least time between two writes of a gateway's apply lag by this replica (ms). */
  lagWriteMs: number
  /** Retention of each rollup tier (the max_age of its bucket). */
  retention: TierRetention
}

/** What step 3 found: per device document key, and per gateway for its control events; too-old events new to their device, per tier. */
interface DeviceResults { devices: Map<string, DeviceApplyStats>, control: Map<string, DeviceApplyStats>, tooOld: Map<string, Partial<Record<TierName, number>>> }

export class GroupApplier {
  /** Per gateway: when this replica last wrote its apply lag (bounded by the number of gateways). */
  private readonly lagWritten = new Map<string, number>()

  constructor (private readonly ctx: ApplyContext, private readonly opts: GroupApplyOptions) {}

  /** Applies a group of replication batches to the views, then acks them. */
  async applyGroup (stream: string, msgs: GroupMsg[]): Promise<void> {
    const t0 = performance.now()
    const group = decodeGroup(msgs, this.ctx.reject)
    await this.applyTiersAndControl(group)
    const results = await this.applyDevices(group)
    for (const m of group.accepted) m.ack()
    const appliedMs = this.ctx.now()
    this.count(stream, msgs.length, group, results, t0, appliedMs)
    await this.writeLag(freshLag(group, results), appliedMs)
  }

  // Tiers first, then devices: each is idempotent on its own, so the order only decides what a
  // crash in between leaves behind (rollups ahead of the device view, fixed by the redelivery).
  // Control views (decisions, alerts, commands, per-device references) beside the rollups.
  private async applyTiersAndControl (g: DecodedGroup): Promise<void> {
    const { writer } = this.ctx
    const now = this.ctx.now()
    const writes: Promise<void>[] = []
    for (const [key, t] of g.tiers) {
      if (tooOld(t.tier, t.startMs, now, this.opts.retention)) {
        // Never written: the document may have aged out already, and a write would bring it back.
        const list = t.device.tooOld ??= []
        for (const ev of t.events) list.push({ tier: t.tier, ev })
        continue
      }
      writes.push(writer.update<TierDoc>(key, () => newTierDoc(t.tier, t.device.gatewayId, t.device.deviceId, t.startMs), (doc) => applyToTier(doc, t.events) > 0))
    }
    await Promise.all([...writes, ...[...g.controls.values()].flatMap((c) => this.controlViewUpdates(c))])
  }

  private async applyDevices (g: DecodedGroup): Promise<DeviceResults> {
    const { writer } = this.ctx
    const now = this.ctx.now()
    const results: DeviceResults = { devices: new Map(), control: new Map(), tooOld: new Map() }
    await Promise.all([
      ...[...g.devices].map(([key, d]) => writer.update<DeviceDoc>(key,
        () => newDeviceDoc(d.gatewayId, d.deviceId),
        (doc) => {
          if (d.tooOld) results.tooOld.set(key, newToDevice(doc, d))
          const s = applyToDevice(doc, d.events, d.gaps, now, this.opts.maxRanges)
          results.devices.set(key, s)
          return s.applied > 0 || s.duplicates > 0 || d.gaps.length > 0
        })),
      ...[...g.controls.values()].map((c) => writer.update<DeviceDoc>(viewKeys.control(c.gatewayId),
        () => newDeviceDoc(c.gatewayId, CONTROL_DEVICE_ID),
        (doc) => {
          const s = applyToDevice(doc, c.events.map(dedupeEvent), c.gaps, now, this.opts.maxRanges)
          results.control.set(c.gatewayId, s)
          return s.applied > 0 || s.duplicates > 0 || c.gaps.length > 0
        })),
    ])
    return results
  }

  /** The updates of a gateway's control views for one group (documents it does not touch are not read). */
  private controlViewUpdates (g: ControlGroup): Promise<void>[] {
    const { writer } = this.ctx
    const gw = g.gatewayId
    const lim = this.opts.controlLimits
    const has = (...kinds: string[]): boolean => g.events.some((e) => kinds.includes(e.kind))
    const out: Promise<void>[] = []
    if (has('decision')) out.push(writer.update(viewKeys.decisions(gw), () => newDecisionsDoc(gw), (doc) => applyDecisions(doc, g.events, lim.decisions) > 0))
    if (has('alert_raised', 'alert_cleared')) out.push(writer.update(viewKeys.alerts(gw), () => newAlertsDoc(gw), (doc) => applyAlerts(doc, g.events, lim)))
    if (has('command_result')) out.push(writer.update(viewKeys.commands(gw), () => newCommandsDoc(gw), (doc) => applyCommands(doc, g.events, lim)))
    if (has('dead_letter')) out.push(writer.update(viewKeys.deadLetters(gw), () => newDeadLettersDoc(gw), (doc) => applyDeadLetters(doc, g.events, lim.deadLetters) > 0))
    const byDevice = new Map<string, ControlEv[]>()
    for (const e of g.events) {
      if (e.deviceId === '') continue
      const list = byDevice.get(e.deviceId)
      if (list) list.push(e)
      else byDevice.set(e.deviceId, [e])
    }
    for (const [deviceId, events] of byDevice) {
      out.push(writer.update(viewKeys.deviceControl(gw, deviceId), () => newDeviceControlDoc(gw, deviceId), (doc) => applyDeviceControl(doc, events, lim.deviceRefs)))
    }
    return out
  }

  /** Stats and metrics of an applied group. */
  private count (stream: string, delivered: number, g: DecodedGroup, r: DeviceResults, t0: number, appliedMs: number): void {
    const { counts, metrics, log } = this.ctx
    let nApplied = 0
    let nDup = 0
    let explained = 0
    let filled = 0
    for (const s of r.devices.values()) { nApplied += s.applied; nDup += s.duplicates; explained += s.explained; filled += s.lateFilled }
    counts.applied += nApplied
    counts.duplicates += nDup
    // Control events count in the metrics (stream label) but have their own totals in stats().
    for (const s of r.control.values()) {
      counts.controlApplied += s.applied
      counts.controlDuplicates += s.duplicates
      nApplied += s.applied; nDup += s.duplicates; explained += s.explained; filled += s.lateFilled
    }
    counts.batches += g.accepted.length
    counts.flushes++
    metrics.applied.inc({ stream }, nApplied)
    if (nDup > 0) {
      metrics.duplicates.inc({ stream }, nDup)
      log.debug({ stream, duplicates: nDup }, 'duplicate events dropped')
    }
    if (explained > 0) metrics.gapSeqs.inc({ kind: 'explained' }, explained)
    if (filled > 0) metrics.gapSeqs.inc({ kind: 'filled' }, filled)
    for (const byTier of r.tooOld.values()) {
      for (const [tier, n] of Object.entries(byTier)) {
        counts.rollupTooOld += n
        metrics.rollupTooOld.inc({ tier }, n)
      }
    }
    metrics.batches.inc({ stream }, g.accepted.length)
    metrics.flushBatches.observe(delivered)
    metrics.flushSeconds.observe((performance.now() - t0) / 1000)
    for (const ts of g.newest) metrics.latencySeconds.observe(Math.max(0, appliedMs - ts) / 1000)
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
        await this.ctx.store.put(viewKeys.lag(gatewayId), doc)
      } catch (err) {
        // A statistic: a lost write is retried by the next group.
        this.lagWritten.delete(gatewayId)
        this.ctx.log.debug({ err, gatewayId }, 'apply lag not stored')
      }
    }
  }
}

/** Per tier, the too-old events of a device group that the device document has not absorbed yet (each seq once). */
function newToDevice (doc: DeviceDoc, d: DeviceGroup): Partial<Record<TierName, number>> {
  const out: Partial<Record<TierName, number>> = {}
  const seen = new Set<string>()
  for (const { tier, ev } of d.tooOld!) {
    if (ev.seq <= doc.hwm || contains(doc.recv, ev.seq) || seen.has(`${tier}:${ev.seq}`)) continue
    seen.add(`${tier}:${ev.seq}`)
    out[tier] = (out[tier] ?? 0) + 1
  }
  return out
}

/** Lag only where something new was applied: a replay of old batches says nothing about the link. */
function freshLag (g: DecodedGroup, r: DeviceResults): Map<string, number> {
  const fresh = new Set<string>()
  for (const [key, st] of r.devices) if (st.applied > 0) fresh.add(g.devices.get(key)!.gatewayId)
  for (const [gw, st] of r.control) if (st.applied > 0) fresh.add(gw)
  const out = new Map(g.newestByGateway)
  for (const gw of out.keys()) if (!fresh.has(gw)) out.delete(gw)
  return out
}
