// The ingest path of one telemetry publish, as a list of steps run in series (the way aedes lists
// publishActions in lib/handlers/publish.js): decode and validate; quarantine what cannot be used;
// append to the outbox, which recognises a resend; evaluate the rules on a new reading. The
// callback runs after the commit, which is what lets the broker send PUBACK only for durable input.
import type { PublishPacket } from 'aedes'
import type { GatewayError } from '../errors.ts'
import type { GatewayMetrics } from '../metrics.ts'
import { LANE_TELEMETRY, type IncomingEvent, type Outbox } from '../store/outbox.ts'
import { decodePayload, eventTime, type DecodeResult } from './payload.ts'

/** The rules (rules/control.ts): they see every new reading before its commit, so a decision never waits for the disk. */
export interface RulesStep {
  /** t0: when the publish arrived (performance.now()), for the decision latency. */
  onEvent: (ev: IncomingEvent, t0: number) => void
}

/** A publish's answer: an error when nothing could be stored; quarantined: the reason, when its payload was kept as a dead letter. */
type Done = (err?: GatewayError | null, quarantined?: string) => void

/** What the steps work with. */
interface IngestParts { outbox: Outbox, rules: RulesStep, metrics: GatewayMetrics, maxPayloadBytes: number }

/** One publish on its way through the steps. */
interface Publish {
  readonly deviceId: string
  readonly packet: PublishPacket
  readonly cb: Done
  /** MQTT 5 user properties, already bounded (gateway/mqtt/user-properties.ts). */
  readonly userProperties: Record<string, string> | undefined
  /** When it arrived (performance.now()). */
  readonly t0: number
  decoded: DecodeResult | null
  event: IncomingEvent | null
}

/** A step of the ingest path; false once the publish is answered (its callback ran or will run) and no later step may run. */
type Step = (ingest: IngestParts, p: Publish) => boolean

const decode: Step = (ingest, p) => {
  p.decoded = decodePayload(p.packet.payload as Buffer, ingest.maxPayloadBytes)
  return true
}

// The quarantined copy is durable before the device gets its PUBACK, so it will not resend it.
const quarantine: Step = (ingest, p) => {
  const d = p.decoded!
  if (d.ok) return true
  ingest.metrics.rejected.inc({ reason: d.reason })
  ingest.metrics.quarantined.inc({ reason: d.reason })
  ingest.outbox.quarantine({ deviceId: p.deviceId, topic: p.packet.topic, reason: d.reason, detail: d.detail, payload: p.packet.payload as Buffer }, (err) => p.cb(err, d.reason))
  return false
}

// A reading the device stamped with its own ts has an identity: the outbox recognises a resend of it
// (its PUBACK was lost) and acknowledges it once the first copy is durable; it is neither stored
// nor evaluated again. Only a ts in the valid range (payload.ts eventTime) identifies a reading: a
// device with a bad clock (ts 0, or far ahead) stamps distinct readings alike, and they would be
// dropped as resends. Appending only queues: the commit comes a turn later, after the rules.
const append: Step = (ingest, p) => {
  const value = (p.decoded as Extract<DecodeResult, { ok: true }>).value
  const ingestTsMs = Date.now()
  const t = eventTime(value.tsMs, ingestTsMs)
  const ev: IncomingEvent = {
    deviceId: p.deviceId,
    lane: LANE_TELEMETRY,
    eventTsMs: t.eventTsMs,
    ingestTsMs,
    eventTsFromGateway: t.fromGateway,
    readings: value.readings,
    labels: value.labels,
    userProperties: p.userProperties,
  }
  p.event = ev
  const identity = value.tsMs === null || t.fromGateway ? null : { deviceTsMs: value.tsMs, payload: p.packet.payload as Buffer }
  return ingest.outbox.append(ev, identity, (err) => p.cb(err))
}

const evaluateRules: Step = (ingest, p) => {
  ingest.rules.onEvent(p.event!, p.t0)
  return true
}

/** The steps of a telemetry publish, in order. */
const TELEMETRY_STEPS: readonly Step[] = [decode, quarantine, append, evaluateRules]

export class Ingest {
  private readonly parts: IngestParts

  constructor (outbox: Outbox, rules: RulesStep, metrics: GatewayMetrics, maxPayloadBytes: number) {
    this.parts = { outbox, rules, metrics, maxPayloadBytes }
  }

  /** Ingests one telemetry publish of `deviceId`; cb(err) only when nothing could be stored, cb(null, reason) when it was quarantined. */
  telemetry (deviceId: string, packet: PublishPacket, cb: Done, userProperties?: Record<string, string>): void {
    const p: Publish = { deviceId, packet, cb, userProperties, t0: performance.now(), decoded: null, event: null }
    for (const step of TELEMETRY_STEPS) if (!step(this.parts, p)) return
  }
}
