// The apply of a gateway heartbeat (iot.<gw>.status, core NATS, one replica per heartbeat through a
// queue group): decoded and checked against its subject, stored as the gateway document (last writer
// wins, stamped with the cloud's receive time, with the drain's progress carried over from the
// document before), then one link-health sample appended. A heartbeat
// that is not stored is not retried: the next one, seconds later, says more.
import { v1, type DeviceDelivery, type GatewayStatus } from '../../proto/index.ts'
import { GATEWAY_ID } from '../../proto/ids.ts'
import { viewKeys } from '../store/view-store.ts'
import type { ApplyContext } from './apply-context.ts'
import { applyDeliveryMarks } from './delivery-docs.ts'
import { appendHealth, drainProgress, newHealthDoc, replicationLag, type GatewayDoc, type HealthDoc, type LagDoc } from './gateway-docs.ts'

export class HeartbeatApplier {
  /** `healthSamples`: link-health samples kept per gateway. */
  constructor (private readonly ctx: ApplyContext, private readonly opts: { healthSamples: number }) {}

  async apply (subject: string, data: Uint8Array): Promise<void> {
    const { store, counts, metrics, log } = this.ctx
    const decoded = this.decode(subject, data)
    if (!decoded) return
    const { doc, delivery } = decoded
    try {
      const prev = await store.get<GatewayDoc>(viewKeys.gateway(doc.gatewayId))
      doc.drain = drainProgress(prev?.value.drain, doc.status, doc.lastSeenMs)
      await store.put(viewKeys.gateway(doc.gatewayId), doc)
      counts.heartbeats++
      metrics.heartbeats.inc()
    } catch (err) {
      metrics.storeErrors.inc()
      log.warn({ err, gatewayId: doc.gatewayId }, 'heartbeat not stored')
      return
    }
    if (delivery.length > 0) {
      try {
        metrics.deliveryMarks.inc(await applyDeliveryMarks(this.ctx, doc.gatewayId, delivery, doc.lastSeenMs))
      } catch (err) {
        metrics.storeErrors.inc()
        log.warn({ err, gatewayId: doc.gatewayId }, 'delivery marks not stored (the gateway reports them again in turn)')
      }
    }
    try {
      await this.recordHealth(doc)
    } catch (err) {
      metrics.storeErrors.inc()
      log.warn({ err, gatewayId: doc.gatewayId }, 'link-health sample not stored')
    }
  }

  /** The gateway document of a heartbeat and its delivery marks; null (counted) when malformed or not the subject's gateway. */
  private decode (subject: string, data: Uint8Array): { doc: GatewayDoc, delivery: DeviceDelivery[] } | null {
    const gatewayId = subject.split('.')[1] ?? ''
    let s: GatewayStatus
    try {
      s = v1.GatewayStatus.decode(data)
    } catch {
      this.ctx.reject('malformed_status', { subject })
      return null
    }
    if (s.gatewayId !== gatewayId || !GATEWAY_ID.test(gatewayId)) {
      this.ctx.reject('gateway_mismatch', { subject, statusGatewayId: s.gatewayId })
      return null
    }
    const doc: GatewayDoc = {
      v: 1,
      gatewayId,
      lastSeenMs: this.ctx.now(),
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
        quarantinedByReason: Object.fromEntries(Object.entries(s.quarantinedByReason ?? {}).slice(0, 64).map(([k, v]) => [k.slice(0, 64), Number(v)])),
        cloudChannelState: s.cloudChannelState ?? '',
        cloudChannelError: s.cloudChannelError ?? '',
        uplinkStalled: s.uplinkStalled === true,
        uplinkStallsTotal: Number(s.uplinkStallsTotal ?? 0),
      },
    }
    return { doc, delivery: s.delivery ?? [] }
  }

  /** One link-health sample per heartbeat (cloud receive time), for the gateway page's charts. */
  private async recordHealth (doc: GatewayDoc): Promise<void> {
    const lag = await this.ctx.store.get<LagDoc>(viewKeys.lag(doc.gatewayId))
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
    await this.ctx.writer.update<HealthDoc>(viewKeys.health(doc.gatewayId), () => newHealthDoc(doc.gatewayId), (h) => appendHealth(h, sample, this.opts.healthSamples))
  }
}
