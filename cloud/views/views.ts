// The read side of the fleet views: what the API (and tests) see. Everything is read from the
// ViewStore, so any console replica answers the same; online/offline is derived at read time from
// the last heartbeat and the offline timeout, so a silent gateway turns offline without a writer.
import { accountingOf, type DeviceAccounting, type DeviceDoc, type Latest } from '../apply/apply.ts'
import { tierHistory, type HistoryBucket, type Resolution } from './history.ts'
import { replicationLag, type GatewayDoc, type LagDoc } from '../apply/gateway-docs.ts'
import { ControlViews } from './control-views.ts'
import { DeliveryViews } from './delivery-views.ts'
import { viewKeys, type ViewStore } from '../store/view-store.ts'

const DEFAULT_DRAIN_STUCK_MS = 120_000

export interface GatewayView extends Omit<GatewayDoc['status'], 'tsMs' | 'ruleSetVersion' | 'decisionP99Ms' | 'quarantinedTotal' | 'quarantinedByReason' | 'cloudChannelState' | 'cloudChannelError'> {
  gatewayId: string
  online: boolean
  lastSeenMs: number
  /** Gateway clock of the last heartbeat. */
  heartbeatTsMs: number
  ruleSetVersion: string
  decisionP99Ms: number
  quarantinedTotal: number
  quarantinedByReason: Record<string, number>
  /** Online, link up, backlog above its low for at least drainStuckMs: since when (cloud clock), else null. */
  notDrainingSinceMs: number | null
  /** The cloud-to-edge channel (rules, commands): 'attached', 'attaching', 'detached', or '' when the gateway does not say. */
  cloudChannelState: string
  cloudChannelError: string
  /** Heartbeat time minus the last JetStream ack of a batch (both gateway clock); null = never acked. */
  sinceLastAckMs: number | null
  /** Ingest at the edge -> applied in the views, of the newest events applied (null = none measured). */
  applyLagMs: number | null
  applyLagAtMs: number | null
  /** How far the views are behind the gateway: see replicationLag(). */
  replicationLagMs: number
}

export interface DeviceView { gatewayId: string, deviceId: string, latest: Latest | null, accounting: DeviceAccounting, updatedMs: number }

export type { AggView, HistoryBucket, Resolution } from './history.ts'

export class FleetViews {
  /** Decisions, alerts, commands, per-device control references and link health. */
  readonly control: ControlViews
  /** The per-device delivery ledger. */
  readonly delivery: DeliveryViews

  /** drainStuckMs: see cloud config (default 2 min). */
  constructor (readonly store: ViewStore, private readonly opts: { offlineTimeoutMs: number, drainStuckMs?: number, now?: () => number }) {
    this.control = new ControlViews(store, { now: () => this.now() })
    this.delivery = new DeliveryViews(store, () => this.now())
  }

  private now (): number { return this.opts.now?.() ?? Date.now() }

  /** A gateway without a heartbeat for longer than this is offline. */
  get offlineTimeoutMs (): number { return this.opts.offlineTimeoutMs }

  gatewayView (doc: GatewayDoc, lag: LagDoc | null = null): GatewayView {
    const { tsMs, ruleSetVersion, decisionP99Ms, quarantinedTotal, quarantinedByReason, cloudChannelState, cloudChannelError, ...status } = doc.status
    const online = this.now() - doc.lastSeenMs <= this.opts.offlineTimeoutMs
    const stuck = online && doc.drain !== undefined && doc.status.backlogEvents > 0 && doc.status.linkState === 'up' && this.now() - doc.drain.sinceMs >= (this.opts.drainStuckMs ?? DEFAULT_DRAIN_STUCK_MS)
    return {
      gatewayId: doc.gatewayId,
      online,
      notDrainingSinceMs: stuck ? doc.drain!.sinceMs : null,
      lastSeenMs: doc.lastSeenMs,
      heartbeatTsMs: tsMs,
      ...status,
      ruleSetVersion: ruleSetVersion ?? '',
      decisionP99Ms: decisionP99Ms ?? 0,
      quarantinedTotal: quarantinedTotal ?? 0,
      quarantinedByReason: quarantinedByReason ?? {},
      cloudChannelState: cloudChannelState ?? '',
      cloudChannelError: cloudChannelError ?? '',
      sinceLastAckMs: status.lastAckTsMs > 0 ? Math.max(0, tsMs - status.lastAckTsMs) : null,
      applyLagMs: lag?.applyLagMs ?? null,
      applyLagAtMs: lag?.atMs ?? null,
      replicationLagMs: replicationLag(doc, lag, this.now()),
    }
  }

  async gateways (): Promise<GatewayView[]> {
    const keys = await this.store.keys(['gw'])
    const views = await Promise.all(keys.map((k) => this.gateway(k.slice('gw.'.length))))
    return views.filter((v) => v !== null)
  }

  async gateway (gatewayId: string): Promise<GatewayView | null> {
    const [d, lag] = await Promise.all([this.store.get<GatewayDoc>(viewKeys.gateway(gatewayId)), this.store.get<LagDoc>(viewKeys.lag(gatewayId))])
    return d ? this.gatewayView(d.value, lag?.value ?? null) : null
  }

  async device (gatewayId: string, deviceId: string): Promise<DeviceView | null> {
    const d = await this.store.get<DeviceDoc>(viewKeys.device(gatewayId, deviceId))
    return d ? deviceView(d.value) : null
  }

  /** Every device (of one gateway, or of the fleet). */
  async devices (gatewayId?: string): Promise<DeviceView[]> {
    return (await this.deviceDocs(gatewayId)).map(deviceView)
  }

  /** Every device document (of one gateway, or of the fleet): for callers that derive more than one view from them. */
  async deviceDocs (gatewayId?: string): Promise<DeviceDoc[]> {
    const keys = await this.store.keys(gatewayId ? ['dev', gatewayId] : ['dev'])
    const out: DeviceDoc[] = []
    // Bounded parallelism: a fleet can hold many thousands of devices.
    for (let i = 0; i < keys.length; i += 256) {
      const docs = await Promise.all(keys.slice(i, i + 256).map((k) => this.store.get<DeviceDoc>(k)))
      for (const d of docs) if (d) out.push(d.value)
    }
    return out
  }

  /**
   * Per-device accounting plus fleet totals; `control` is the same accounting per gateway for its
   * control events (decisions, alerts, command outcomes: device "$control"), not in the totals.
   */
  async accounting (gatewayId?: string): Promise<{ totals: Omit<DeviceAccounting, 'highestSeq'> & { devices: number }, devices: Array<{ gatewayId: string, deviceId: string } & DeviceAccounting>, control: Array<{ gatewayId: string } & DeviceAccounting> }> {
    const devices = (await this.devices(gatewayId)).map((d) => ({ gatewayId: d.gatewayId, deviceId: d.deviceId, ...d.accounting }))
    const controlKeys = gatewayId ? [viewKeys.control(gatewayId)] : await this.store.keys(['ctl'])
    const controlDocs = await Promise.all(controlKeys.map((k) => this.store.get<DeviceDoc>(k)))
    const control = controlDocs.filter((d) => d !== null).map((d) => ({ gatewayId: d!.value.gatewayId, ...accountingOf(d!.value) }))
    const totals = { devices: devices.length, received: 0, duplicates: 0, gapsOpen: 0, gapRangesOpen: 0, gapsExplained: 0, gapsClosed: 0, gapsAbandoned: 0, gapRecords: 0, gapRecordDuplicates: 0 }
    for (const d of devices) {
      totals.received += d.received
      totals.duplicates += d.duplicates
      totals.gapsOpen += d.gapsOpen
      totals.gapRangesOpen += d.gapRangesOpen
      totals.gapsExplained += d.gapsExplained
      totals.gapsClosed += d.gapsClosed
      totals.gapsAbandoned += d.gapsAbandoned
      totals.gapRecords += d.gapRecords
      totals.gapRecordDuplicates += d.gapRecordDuplicates
    }
    return { totals, devices, control }
  }

  /** Rollup buckets of one tier by event time in [fromMs, toMs), oldest first; empty buckets are left out. */
  history (gatewayId: string, deviceId: string, fromMs: number, toMs: number, res: Resolution): Promise<HistoryBucket[]> {
    return tierHistory(this.store, gatewayId, deviceId, fromMs, toMs, res)
  }
}

export function deviceView (doc: DeviceDoc): DeviceView {
  return { gatewayId: doc.gatewayId, deviceId: doc.deviceId, latest: doc.latest, accounting: accountingOf(doc), updatedMs: doc.updatedMs }
}
