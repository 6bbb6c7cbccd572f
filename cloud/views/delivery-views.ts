// The per-device delivery ledger, read side ("where is my data" in one answer): per device, the
// highest seq accepted at the gateway and the highest replicated (from its heartbeats'
// delivery marks, apply/delivery-docs.ts), the highest applied in the cloud and the ranges shed at
// the gateway (from the aggregator's own accounting, the device document), and the age of the oldest
// unsent event; per gateway, the same summed. A mark is as old as the heartbeat that carried it:
// each answer says when (reportedMs), and a mark older than STALE_MS (a lost heartbeat the rotation
// has not repaired yet, a gateway gone) is flagged stale rather than shown as current.
import type { DeviceDoc } from '../apply/apply.ts'
import { DELIVERY_SHARDS, deliveryShard, type DeliveryDoc, type DeliveryMark } from '../apply/delivery-docs.ts'
import type { Range } from '../apply/ranges.ts'
import { viewKeys, type ViewStore } from '../store/view-store.ts'

/**
 * A mark not refreshed for this long is stale. A gateway sends every device again within
 * ceil(devices / (uplink.deliveryReportDevices / 2)) heartbeats: 10,000 devices at the defaults
 * (500, 5 s) take 200 s.
 */
export const STALE_MS = 300_000

export interface DeviceDeliveryView {
  gatewayId: string
  deviceId: string
  /** Gateway side (null: never reported): highest seq accepted, highest replicated (acknowledged by JetStream). */
  acceptedSeq: number | null
  replicatedSeq: number | null
  /** Cloud side: highest seq applied (or settled, below which nothing is awaited), null when nothing arrived. */
  appliedSeq: number | null
  /** Age of the oldest event not yet replicated (ms, as of now, counted from the report), 0 = none, null = never reported. */
  oldestUnsentAgeMs: number | null
  /** The age is a bound (at most): the event lies beyond what the gateway reads of its outbox per heartbeat. */
  oldestUnsentAgeBound: boolean
  /** Seq ranges shed at the gateway (gap records) above the settled mark, and the shed seqs settled below it. */
  shed: Range[]
  shedSettled: number
  /** Cloud clock (ms): when the gateway's marks were received; null = never. */
  reportedMs: number | null
  stale: boolean
}

export interface GatewayDeliveryView {
  gatewayId: string
  /** Devices known (reported by the gateway or applied in the cloud), and those whose marks are stale. */
  devices: number
  staleDevices: number
  /** Sums over devices of the highest seqs: accepted, replicated, applied. */
  acceptedSeqSum: number
  replicatedSeqSum: number
  appliedSeqSum: number
  /** Devices with seqs accepted and not replicated, or replicated and not applied. */
  devicesBehind: number
  /** The oldest unsent event of any device (ms), 0 = none. */
  oldestUnsentAgeMs: number
  /** Seqs shed at the gateway, over devices. */
  shedSeqs: number
  nowMs: number
}

export class DeliveryViews {
  constructor (private readonly store: ViewStore, private readonly now: () => number) {}

  /** One device's ledger: its shard and its device document (two reads). */
  async device (gatewayId: string, deviceId: string): Promise<DeviceDeliveryView | null> {
    const [shard, dev] = await Promise.all([
      this.store.get<DeliveryDoc>(viewKeys.delivery(gatewayId, deliveryShard(deviceId))),
      this.store.get<DeviceDoc>(viewKeys.device(gatewayId, deviceId)),
    ])
    const mark = shard?.value.devices[deviceId] ?? null
    if (!mark && !dev) return null
    return this.view(gatewayId, deviceId, mark, dev?.value ?? null)
  }

  /** The marks of every device of a gateway (its DELIVERY_SHARDS documents). */
  async marks (gatewayId: string): Promise<Map<string, DeliveryMark>> {
    const docs = await Promise.all(Array.from({ length: DELIVERY_SHARDS }, (_, i) => this.store.get<DeliveryDoc>(viewKeys.delivery(gatewayId, i))))
    const out = new Map<string, DeliveryMark>()
    for (const d of docs) if (d) for (const [id, m] of Object.entries(d.value.devices)) out.set(id, m)
    return out
  }

  /**
   * Every device's ledger and their sum, from the gateway's device documents (read by the caller,
   * which may need them for more: a gateway page reads them once) and its delivery shards.
   */
  async gateway (gatewayId: string, deviceDocs: DeviceDoc[]): Promise<{ summary: GatewayDeliveryView, devices: DeviceDeliveryView[] }> {
    const marks = await this.marks(gatewayId)
    const docs = new Map(deviceDocs.map((d) => [d.deviceId, d]))
    const ids = [...new Set([...marks.keys(), ...docs.keys()])].sort()
    const devices = ids.map((id) => this.view(gatewayId, id, marks.get(id) ?? null, docs.get(id) ?? null))
    const summary: GatewayDeliveryView = { gatewayId, devices: devices.length, staleDevices: 0, acceptedSeqSum: 0, replicatedSeqSum: 0, appliedSeqSum: 0, devicesBehind: 0, oldestUnsentAgeMs: 0, shedSeqs: 0, nowMs: this.now() }
    for (const d of devices) {
      if (d.stale) summary.staleDevices++
      summary.acceptedSeqSum += d.acceptedSeq ?? 0
      summary.replicatedSeqSum += d.replicatedSeq ?? 0
      summary.appliedSeqSum += d.appliedSeq ?? 0
      if ((d.acceptedSeq ?? 0) > (d.replicatedSeq ?? 0) || (d.replicatedSeq ?? 0) > (d.appliedSeq ?? 0) || (d.oldestUnsentAgeMs ?? 0) > 0) summary.devicesBehind++
      summary.oldestUnsentAgeMs = Math.max(summary.oldestUnsentAgeMs, d.oldestUnsentAgeMs ?? 0)
      summary.shedSeqs += d.shedSettled + d.shed.reduce((s, [a, b]) => s + b - a + 1, 0)
    }
    return { summary, devices }
  }

  private view (gatewayId: string, deviceId: string, mark: DeliveryMark | null, dev: DeviceDoc | null): DeviceDeliveryView {
    const now = this.now()
    return {
      gatewayId,
      deviceId,
      acceptedSeq: mark?.accepted ?? null,
      replicatedSeq: mark?.replicated ?? null,
      appliedSeq: dev ? appliedSeq(dev) : null,
      oldestUnsentAgeMs: mark ? (mark.oldestUnsentAgeMs > 0 ? mark.oldestUnsentAgeMs + Math.max(0, now - mark.reportedMs) : 0) : null,
      oldestUnsentAgeBound: mark?.oldestUnsentAgeBound ?? false,
      shed: dev?.shed.map((r) => [r[0], r[1]] as Range) ?? [],
      shedSettled: dev?.acct.settledShed ?? 0,
      reportedMs: mark?.reportedMs ?? null,
      stale: mark !== null && now - mark.reportedMs > STALE_MS,
    }
  }
}

/** The highest seq the aggregator applied (or settled: every seq up to hwm is received or accounted for). */
function appliedSeq (doc: DeviceDoc): number {
  return doc.recv.length > 0 ? Math.max(doc.hwm, doc.recv[doc.recv.length - 1][1]) : doc.hwm
}
