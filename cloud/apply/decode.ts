// Decoding and grouping of replication batches, before anything is applied: every batch is decoded
// and checked (its gateway must be its subject's; a batch that fails is terminated, never retried),
// every event, control event and gap record is validated (what fails is counted and skipped), and
// what is left is grouped by the document it changes: per device, per device, tier and span of event
// time (rollup tiers: tiers/tiers.ts), per gateway (control events). All the events of a group that
// fall in one document are applied to it together: one read and one write per document per group.
import type { JsMsg } from '@nats-io/jetstream'
import { CONTROL_DEVICE_ID, v1, type ControlEventProps, type ReplicationBatch } from '../../proto/index.ts'
import { DEVICE_ID, GATEWAY_ID } from '../../proto/ids.ts'
import { viewKeys } from '../store/view-store.ts'
import type { ApplyEvent, ApplyGap } from './apply.ts'
import { spanStart, TIER_NAMES, tierKey, type TierName } from './tiers/tiers.ts'
import type { Reject } from './apply-context.ts'
import { parseDetail, type ControlEv } from './control/index.ts'

/** What applyGroup needs of a JetStream message (a benchmark or test can hand in plain objects). */
export type GroupMsg = Pick<JsMsg, 'subject' | 'data' | 'ack' | 'term'>

export interface DeviceGroup {
  gatewayId: string
  deviceId: string
  events: ApplyEvent[]
  gaps: ApplyGap[]
  /** Events of the group too old for a tier (set by the tier step, counted by the device step). */
  tooOld?: Array<{ tier: TierName, ev: ApplyEvent }>
  /** Per tier (TIER_NAMES order), the tier group of the device's last event: most events share it (no key built). */
  lastTier?: Array<TierGroup | undefined>
}
export interface TierGroup { tier: TierName, startMs: number, device: DeviceGroup, events: ApplyEvent[] }
export interface ControlGroup { gatewayId: string, events: ControlEv[], gaps: ApplyGap[] }

/** A delivery group, decoded and grouped by document. */
export interface DecodedGroup<M extends GroupMsg = GroupMsg> {
  /** The messages whose batch was accepted (acked once applied); the others are terminated. */
  accepted: M[]
  /** By device document key. */
  devices: Map<string, DeviceGroup>
  /** By tier document key. */
  tiers: Map<string, TierGroup>
  /** By gateway id. */
  controls: Map<string, ControlGroup>
  /** Per accepted batch with events, the newest ingest time in it (for the latency histogram). */
  newest: number[]
  /** Per gateway, the newest ingest time of the group (for the apply lag). */
  newestByGateway: Map<string, number>
}

/** Decodes and validates a delivery group; rejected parts are counted through `reject`. */
export function decodeGroup<M extends GroupMsg> (msgs: M[], reject: Reject): DecodedGroup<M> {
  const g: DecodedGroup<M> = { accepted: [], devices: new Map(), tiers: new Map(), controls: new Map(), newest: [], newestByGateway: new Map() }
  for (const m of msgs) {
    const batch = decodeBatch(m, reject)
    if (!batch) continue
    g.accepted.push(m)
    const maxIngest = Math.max(addEvents(g, batch, reject), addControl(g, batch, reject))
    addGaps(g, batch, reject)
    if (maxIngest > 0) {
      g.newest.push(maxIngest)
      if (maxIngest > (g.newestByGateway.get(batch.gatewayId) ?? 0)) g.newestByGateway.set(batch.gatewayId, maxIngest)
    }
  }
  return g
}

/** Decodes a batch and checks it belongs to the gateway of its subject; terminates it otherwise. */
export function decodeBatch (m: Pick<JsMsg, 'subject' | 'data' | 'term'>, reject: Reject): ReplicationBatch | null {
  const gatewayId = m.subject.split('.')[1] ?? ''
  let batch: ReplicationBatch
  try {
    batch = v1.ReplicationBatch.decode(m.data)
  } catch (err) {
    reject('malformed_batch', { subject: m.subject, err })
    m.term('malformed batch')
    return null
  }
  // NATS permissions confine a gateway to its subjects; the batch must not claim another identity.
  if (batch.gatewayId !== gatewayId || !GATEWAY_ID.test(gatewayId)) {
    reject('gateway_mismatch', { subject: m.subject, batchGatewayId: batch.gatewayId })
    m.term('gateway id does not match the subject')
    return null
  }
  return batch
}

/** Adds a batch's telemetry events to their device and tier groups; returns the newest ingest time. */
function addEvents (g: DecodedGroup, batch: ReplicationBatch, reject: Reject): number {
  let maxIngest = 0
  for (const ev of batch.events) {
    const deviceId = ev.deviceId ?? ''
    const seq = Number(ev.seq)
    const eventTsMs = Number(ev.eventTsMs)
    if (!DEVICE_ID.test(deviceId) || !Number.isSafeInteger(seq) || seq < 1 || !Number.isFinite(eventTsMs)) {
      reject(DEVICE_ID.test(deviceId) ? 'bad_event' : 'bad_device_id', { gatewayId: batch.gatewayId, deviceId, seq })
      continue
    }
    const e: ApplyEvent = {
      deviceId,
      seq,
      eventTsMs,
      ingestTsMs: Number(ev.ingestTsMs),
      readings: (ev.readings ?? []).map((r: { name?: string | null, value?: number | null }) => ({ name: r.name ?? '', value: r.value ?? 0 })),
      labels: ev.labels && Object.keys(ev.labels).length > 0 ? { ...ev.labels } : undefined,
      userProperties: ev.userProperties && Object.keys(ev.userProperties).length > 0 ? { ...ev.userProperties } : undefined,
      eventTsFromGateway: ev.eventTsFromGateway === true,
    }
    if (e.ingestTsMs > maxIngest) maxIngest = e.ingestTsMs
    const dg = deviceGroup(g, batch.gatewayId, deviceId)
    dg.events.push(e)
    const last = dg.lastTier ??= []
    for (let i = 0; i < TIER_NAMES.length; i++) {
      const tier = TIER_NAMES[i]
      const startMs = spanStart(tier, eventTsMs)
      let tg = last[i]
      if (tg?.startMs !== startMs) {
        const key = tierKey(tier, batch.gatewayId, deviceId, startMs)
        tg = g.tiers.get(key)
        if (!tg) g.tiers.set(key, tg = { tier, startMs, device: dg, events: [] })
        last[i] = tg
      }
      tg.events.push(e)
    }
  }
  return maxIngest
}

/** Adds a batch's control events to its gateway's control group; returns the newest ingest time. */
function addControl (g: DecodedGroup, batch: ReplicationBatch, reject: Reject): number {
  let maxIngest = 0
  for (const c of batch.control) {
    const ev = controlEvent(batch.gatewayId, c, reject)
    if (!ev) continue
    controlGroup(g, batch.gatewayId).events.push(ev)
    if (ev.ingestTsMs > maxIngest) maxIngest = ev.ingestTsMs
  }
  return maxIngest
}

/** Adds a batch's gap records to the device (or control) group they explain. */
function addGaps (g: DecodedGroup, batch: ReplicationBatch, reject: Reject): void {
  for (const r of batch.gaps) {
    const deviceId = r.deviceId ?? ''
    const fromSeq = Number(r.fromSeq)
    const toSeq = Number(r.toSeq)
    const control = deviceId === CONTROL_DEVICE_ID
    if ((!control && !DEVICE_ID.test(deviceId)) || !(fromSeq >= 1) || !(toSeq >= fromSeq)) {
      reject('bad_gap', { gatewayId: batch.gatewayId, deviceId, fromSeq, toSeq })
      continue
    }
    // Shed control events (the gateway sheds its priority lane last) are explained in the control accounting.
    const gap = { deviceId, fromSeq, toSeq, reason: r.reason ?? '' }
    if (control) controlGroup(g, batch.gatewayId).gaps.push(gap)
    else deviceGroup(g, batch.gatewayId, deviceId).gaps.push(gap)
  }
}

/** Decodes one control event; null (counted) when it cannot be applied. */
function controlEvent (gatewayId: string, c: ControlEventProps, reject: Reject): ControlEv | null {
  const seq = Number(c.seq)
  if (c.deviceId !== CONTROL_DEVICE_ID || !Number.isSafeInteger(seq) || seq < 1) {
    reject('bad_control_event', { gatewayId, deviceId: c.deviceId, seq })
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

function deviceGroup (g: DecodedGroup, gatewayId: string, deviceId: string): DeviceGroup {
  const key = viewKeys.device(gatewayId, deviceId)
  let d = g.devices.get(key)
  if (!d) g.devices.set(key, d = { gatewayId, deviceId, events: [], gaps: [] })
  return d
}

function controlGroup (g: DecodedGroup, gatewayId: string): ControlGroup {
  let c = g.controls.get(gatewayId)
  if (!c) g.controls.set(gatewayId, c = { gatewayId, events: [], gaps: [] })
  return c
}
