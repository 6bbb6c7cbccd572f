// A device for scenarios: like SimulatedDevice (real credentials, JSON telemetry at QoS 1) but it
// records every PUBACK latency, can change its interval (bursts), can drop its connection on
// command (reconnect storms), and can send only bad payloads (a raw client that exercises quarantine).
import mqtt, { type MqttClient } from 'mqtt'
import { Signal, prng, type SensorKind } from './signals.ts'
import type { BadKind } from './scenario.ts'
import { telemetryTopic } from '../proto/topics.ts'

export interface ScenarioDeviceOptions {
  url: string
  deviceId: string
  secret: string
  sensors: SensorKind[]
  intervalMs: number
  /** Send only bad payloads, cycling through these kinds. */
  bad?: BadKind[]
  seed?: number
}

export interface ScenarioDeviceCounters {
  /** Publishes handed to the client while connected. */
  sent: number
  /** PUBACKs received. */
  acked: number
  /** Publishes that failed (client error or closed before its PUBACK). */
  failed: number
  /** Ticks skipped because the device was disconnected (not sent at all). */
  skipped: number
  /** Publishes still waiting for their PUBACK when a connection closed under them: the client
   * resends them after reconnecting. Those the gateway had committed it drops as resends. */
  unackedAtCut: number
  connects: number
}

export class ScenarioDevice {
  private client: MqttClient | null = null
  private timer: NodeJS.Timeout | null = null
  private readonly signals: Signal[]
  private readonly random: () => number
  private badIndex = 0
  private intervalMs: number
  /** Connected since the last close. */
  private session = false
  readonly counters: ScenarioDeviceCounters = { sent: 0, acked: 0, failed: 0, skipped: 0, unackedAtCut: 0, connects: 0 }
  /** PUBACK latencies in ms. */
  readonly latencies: number[] = []
  /** The device ts of every acknowledged good reading: its identity, checked against the stream at the end. */
  readonly ackedTs: number[] = []
  private lastTs = 0

  constructor (private readonly opts: ScenarioDeviceOptions) {
    this.random = prng(opts.seed ?? hash(opts.deviceId))
    this.signals = opts.sensors.map((k) => new Signal(k, this.random))
    this.intervalMs = opts.intervalMs
  }

  get id (): string { return this.opts.deviceId }
  get isBad (): boolean { return this.opts.bad !== undefined }
  get inFlight (): number { return this.counters.sent - this.counters.acked - this.counters.failed }
  get connected (): boolean { return this.client?.connected ?? false }

  async start (): Promise<void> {
    const o = this.opts
    const client = mqtt.connect(o.url, { clientId: o.deviceId, username: o.deviceId, password: o.secret, reconnectPeriod: 250, connectTimeout: 5000 })
    this.client = client
    client.on('connect', () => { this.counters.connects++; this.session = true })
    // Counted when it happens (not when a fault is announced): publishes sent up to the last moment
    // of a connection can be resent too. Failed reconnect attempts close without a session.
    client.on('close', () => {
      if (this.session) this.counters.unackedAtCut += this.inFlight
      this.session = false
    })
    client.on('error', () => { /* reconnects by itself; a refused CONNACK shows as no progress */ })
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${o.deviceId}: no CONNACK within 10 s`)), 10000)
      client.once('connect', () => { clearTimeout(t); resolve() })
    })
    // Spread devices over the interval so that a fleet does not publish in lockstep.
    this.schedule(Math.floor(this.random() * this.intervalMs))
  }

  /** Changes the publish interval from now on (a burst, and back). */
  setInterval (ms: number): void {
    this.intervalMs = ms
    if (this.timer) this.schedule(Math.floor(this.random() * Math.min(ms, 50)))
  }

  private schedule (firstDelay: number): void {
    if (this.timer) { clearTimeout(this.timer); clearInterval(this.timer) }
    this.timer = setTimeout(() => {
      this.timer = setInterval(() => this.publish(), this.intervalMs)
      this.publish()
    }, firstDelay)
  }

  private publish (): void {
    const c = this.client
    if (!c?.connected) { this.counters.skipped++; return }
    // A device clock that never repeats a ms, so that (device, ts) names one reading.
    const ts = this.lastTs = Math.max(Date.now(), this.lastTs + 1)
    const payload = this.opts.bad ? this.badPayload() : this.goodPayload(ts)
    this.counters.sent++
    const t0 = performance.now()
    c.publish(telemetryTopic(this.opts.deviceId), payload, { qos: 1 }, (err) => {
      if (err) { this.counters.failed++; return }
      this.counters.acked++
      if (!this.opts.bad) this.ackedTs.push(ts)
      this.latencies.push(performance.now() - t0)
    })
  }

  private goodPayload (now: number): string {
    const doc: Record<string, number> = { ts: now }
    for (const s of this.signals) doc[s.kind] = s.sample(now)
    return JSON.stringify(doc)
  }

  private badPayload (): string {
    const kinds = this.opts.bad!
    const kind = kinds[this.badIndex++ % kinds.length]
    switch (kind) {
      case 'malformed_json': return `{"ts": ${Date.now()}, "temperature": 4.2,`
      case 'non_finite': return `{"ts": ${Date.now()}, "temperature": 1e999}`
      case 'unknown_field': return JSON.stringify({ ts: Date.now(), temperature: 4.2, firmware: { version: '1.2.3' } })
      // Over the gateway's 16 KiB payload limit, under its 64 KiB packet limit: quarantined and acknowledged.
      case 'oversized': return JSON.stringify({ ts: Date.now(), temperature: 4.2, blob: 'x'.repeat(20 * 1024) })
    }
  }

  /** Drops the TCP connection without DISCONNECT; the client reconnects `afterMs` later by itself. */
  drop (afterMs: number): void {
    const c = this.client
    if (!c) return
    c.options.reconnectPeriod = Math.max(1, afterMs)
    c.stream.destroy()
    setTimeout(() => { if (this.client) this.client.options.reconnectPeriod = 250 }, afterMs + 50).unref()
  }

  /** Stops publishing and waits (up to timeoutMs) for the in-flight PUBACKs, then disconnects. */
  async stopPublishing (timeoutMs: number): Promise<void> {
    if (this.timer) { clearTimeout(this.timer); clearInterval(this.timer) }
    this.timer = null
    const deadline = Date.now() + timeoutMs
    while (this.inFlight > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
  }

  async close (): Promise<void> {
    if (this.timer) { clearTimeout(this.timer); clearInterval(this.timer) }
    this.timer = null
    const c = this.client
    this.client = null
    this.session = false
    if (c) await c.endAsync(true).catch(() => {})
  }
}

function hash (s: string): number {
  let h = 2166136261
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619)
  return h >>> 0
}
