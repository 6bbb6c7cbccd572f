// The read side of the fleet views: what the API (and tests) see. Everything is read from the
// ViewStore, so any console replica answers the same; online/offline is derived at read time from
// the last heartbeat and the offline timeout, so a silent gateway turns offline without a writer.
import { accountingOf, HOUR_MS, MINUTE_MS, type Agg, type DeviceAccounting, type DeviceDoc, type Latest, type RollupDoc } from './apply.ts'
import { viewKeys, type ViewStore } from './view-store.ts'

/** The heartbeat as stored: the gateway's status plus when the cloud last heard it. */
export interface GatewayDoc {
  v: 1
  gatewayId: string
  /** Cloud clock, ms: when the last heartbeat was received (not the gateway's clock). */
  lastSeenMs: number
  status: {
    tsMs: number
    version: string
    linkState: string
    backlogEvents: number
    backlogBytes: number
    oldestUnsentAgeMs: number
    ingestEventsPerSec: number
    uplinkEventsPerSec: number
    connectedDevices: number
    rejectedTotal: number
    shedEventsTotal: number
    startedTsMs: number
    lastAckTsMs: number
    lastError: string
  }
}

export interface GatewayView extends Omit<GatewayDoc['status'], 'tsMs'> {
  gatewayId: string
  online: boolean
  lastSeenMs: number
  /** Gateway clock of the last heartbeat. */
  heartbeatTsMs: number
}

export interface DeviceView { gatewayId: string, deviceId: string, latest: Latest | null, accounting: DeviceAccounting, updatedMs: number }

export interface AggView { count: number, min: number, max: number, sum: number, avg: number, last: number, lastTs: number }
export interface HistoryBucket { start: number, readings: Record<string, AggView> }
export type Resolution = '1m' | '1h'

/** Bounds of one history query (a request never reads more than this many hour documents). */
export const MAX_HISTORY_HOURS = 24 * 93

export class FleetViews {
  constructor (private readonly store: ViewStore, private readonly opts: { offlineTimeoutMs: number, now?: () => number }) {}

  private now (): number { return this.opts.now?.() ?? Date.now() }

  gatewayView (doc: GatewayDoc): GatewayView {
    const { tsMs, ...status } = doc.status
    return { gatewayId: doc.gatewayId, online: this.now() - doc.lastSeenMs <= this.opts.offlineTimeoutMs, lastSeenMs: doc.lastSeenMs, heartbeatTsMs: tsMs, ...status }
  }

  async gateways (): Promise<GatewayView[]> {
    const keys = await this.store.keys(['gw'])
    const docs = await Promise.all(keys.map((k) => this.store.get<GatewayDoc>(k)))
    return docs.filter((d) => d !== null).map((d) => this.gatewayView(d!.value))
  }

  async gateway (gatewayId: string): Promise<GatewayView | null> {
    const d = await this.store.get<GatewayDoc>(viewKeys.gateway(gatewayId))
    return d ? this.gatewayView(d.value) : null
  }

  async device (gatewayId: string, deviceId: string): Promise<DeviceView | null> {
    const d = await this.store.get<DeviceDoc>(viewKeys.device(gatewayId, deviceId))
    return d ? deviceView(d.value) : null
  }

  /** Every device (of one gateway, or of the fleet). */
  async devices (gatewayId?: string): Promise<DeviceView[]> {
    const keys = await this.store.keys(gatewayId ? ['dev', gatewayId] : ['dev'])
    const out: DeviceView[] = []
    // Bounded parallelism: a fleet can hold many thousands of devices.
    for (let i = 0; i < keys.length; i += 256) {
      const docs = await Promise.all(keys.slice(i, i + 256).map((k) => this.store.get<DeviceDoc>(k)))
      for (const d of docs) if (d) out.push(deviceView(d.value))
    }
    return out
  }

  /** Per-device accounting plus fleet totals. */
  async accounting (gatewayId?: string): Promise<{ totals: Omit<DeviceAccounting, 'highestSeq'> & { devices: number }, devices: Array<{ gatewayId: string, deviceId: string } & DeviceAccounting> }> {
    const devices = (await this.devices(gatewayId)).map((d) => ({ gatewayId: d.gatewayId, deviceId: d.deviceId, ...d.accounting }))
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
    return { totals, devices }
  }

  /** Rollup buckets by event time in [fromMs, toMs), oldest first; empty buckets are left out. */
  async history (gatewayId: string, deviceId: string, fromMs: number, toMs: number, res: Resolution): Promise<HistoryBucket[]> {
    const firstHour = Math.floor(fromMs / HOUR_MS) * HOUR_MS
    if ((toMs - firstHour) / HOUR_MS > MAX_HISTORY_HOURS) throw new RangeError(`range too long: at most ${MAX_HISTORY_HOURS} hours`)
    const hours: number[] = []
    for (let h = firstHour; h < toMs; h += HOUR_MS) hours.push(h)
    const docs: RollupDoc[] = []
    for (let i = 0; i < hours.length; i += 64) {
      const got = await Promise.all(hours.slice(i, i + 64).map((h) => this.store.get<RollupDoc>(viewKeys.rollup(gatewayId, deviceId, h))))
      for (const d of got) if (d) docs.push(d.value)
    }
    const out: HistoryBucket[] = []
    for (const doc of docs) {
      if (res === '1h') {
        if (doc.hourStartMs >= fromMs && doc.hourStartMs < toMs) out.push({ start: doc.hourStartMs, readings: aggViews(doc.hour) })
        continue
      }
      const minutes = Object.keys(doc.minutes).map(Number).sort((a, b) => a - b)
      for (const m of minutes) {
        const start = doc.hourStartMs + m * MINUTE_MS
        if (start >= fromMs && start < toMs) out.push({ start, readings: aggViews(doc.minutes[String(m)]) })
      }
    }
    return out
  }
}

export function deviceView (doc: DeviceDoc): DeviceView {
  return { gatewayId: doc.gatewayId, deviceId: doc.deviceId, latest: doc.latest, accounting: accountingOf(doc), updatedMs: doc.updatedMs }
}

function aggViews (aggs: Record<string, Agg>): Record<string, AggView> {
  const out: Record<string, AggView> = {}
  for (const [name, a] of Object.entries(aggs)) out[name] = { count: a.count, min: a.min, max: a.max, sum: a.sum, avg: a.sum / a.count, last: a.last, lastTs: a.lastTs }
  return out
}
