// The ingest path of one telemetry publish: decode and validate, recognise a resend, then commit to
// the outbox (an event, or a quarantined payload with its reason). The callback runs after the
// commit, which is what lets the broker send PUBACK only for durable input.
import type { PublishPacket } from 'aedes'
import type { GatewayError } from '../errors.ts'
import type { GatewayMetrics } from '../metrics.ts'
import { LANE_TELEMETRY, type IncomingEvent, type Outbox } from '../store/outbox.ts'
import { decodePayload, eventTime } from './payload.ts'
import { payloadHash } from '../store/resend-window.ts'

/** The rules (rules/control.ts): they see every new reading before its commit, so a decision never waits for the disk. */
export interface RulesStep {
  /** t0: when the publish arrived (performance.now()), for the decision latency. */
  onEvent: (ev: IncomingEvent, t0: number) => void
}

export class Ingest {
  constructor (
    private readonly outbox: Outbox,
    private readonly rules: RulesStep,
    private readonly metrics: GatewayMetrics,
    private readonly maxPayloadBytes: number,
  ) {}

  /** Ingests one telemetry publish of `deviceId`; cb(err) only when nothing could be stored. */
  telemetry (deviceId: string, packet: PublishPacket, cb: (err?: GatewayError | null) => void): void {
    const t0 = performance.now()
    const payload = packet.payload as Buffer
    const decoded = decodePayload(payload, this.maxPayloadBytes)
    if (!decoded.ok) {
      this.metrics.rejected.inc({ reason: decoded.reason })
      this.metrics.quarantined.inc({ reason: decoded.reason })
      // The quarantined copy is durable before the device gets its PUBACK, so it will not resend it.
      this.outbox.appendDeadLetter({ deviceId, topic: packet.topic, reason: decoded.reason, detail: decoded.detail, payload }, (err) => cb(err))
      return
    }
    // A reading the device stamped with its own ts has an identity: a resend of it (its PUBACK was
    // lost) is acknowledged once the first copy is durable, and neither stored nor evaluated again.
    const deviceTs = this.outbox.recognisesResends ? decoded.value.tsMs : null
    const hash = deviceTs === null ? 0 : payloadHash(payload)
    if (deviceTs !== null && this.outbox.acceptResend(deviceId, deviceTs, hash, cb)) return
    const ingestTsMs = Date.now()
    const t = eventTime(decoded.value.tsMs, ingestTsMs)
    const ev: IncomingEvent = {
      deviceId,
      lane: LANE_TELEMETRY,
      eventTsMs: t.eventTsMs,
      ingestTsMs,
      eventTsFromGateway: t.fromGateway,
      readings: decoded.value.readings,
      labels: decoded.value.labels,
    }
    this.rules.onEvent(ev, t0)
    this.outbox.appendEvent(ev, (err) => cb(err), deviceTs, hash)
  }
}
