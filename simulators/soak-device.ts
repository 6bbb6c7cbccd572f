// The soak's devices. A SoakDevice publishes QoS 1 JSON readings that carry their own identity: a
// per-device counter `n` (and a device ts that never repeats), and remembers which of them got a
// PUBACK: the readings the gateway accepted, to be found exactly once in the stream and the views.
// A BadClient sends only payloads the gateway must quarantine.
import mqtt, { type MqttClient } from 'mqtt'
import { telemetryTopic } from '../proto/topics.ts'

export interface SoakDeviceCounters {
  sent: number
  acked: number
  /** Publishes the client gave up on (an error or closed before the PUBACK). */
  failed: number
  /** Ticks skipped while disconnected (nothing sent). */
  skipped: number
  connects: number
}

const RECONNECT_MS = 250

/** One MQTT client, reconnecting by itself; its in-flight publishes are resent after a reconnect. */
abstract class Client {
  protected client: MqttClient | null = null
  readonly counters: SoakDeviceCounters = { sent: 0, acked: 0, failed: 0, skipped: 0, connects: 0 }

  constructor (readonly url: string, readonly deviceId: string) {}

  get connected (): boolean { return this.client?.connected ?? false }
  get inFlight (): number { return this.counters.sent - this.counters.acked - this.counters.failed }

  /** Connects; resolves at the first CONNACK (the client keeps reconnecting after that by itself). */
  async connect (): Promise<void> {
    const client = mqtt.connect(this.url, { clientId: this.deviceId, reconnectPeriod: RECONNECT_MS, connectTimeout: 5000, keepalive: 10 })
    this.client = client
    client.on('connect', () => { this.counters.connects++ })
    client.on('error', () => { /* reconnects by itself */ })
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${this.deviceId}: no CONNACK within 15 s`)), 15000)
      client.once('connect', () => { clearTimeout(t); resolve() })
    })
  }

  /** Publishes at QoS 1; `acked` runs on the PUBACK. Skipped (and counted) while disconnected. */
  protected send (payload: string, acked: () => void): boolean {
    const c = this.client
    if (!c?.connected) { this.counters.skipped++; return false }
    this.counters.sent++
    c.publish(telemetryTopic(this.deviceId), payload, { qos: 1 }, (err) => {
      if (err) { this.counters.failed++; return }
      this.counters.acked++
      acked()
    })
    return true
  }

  /** Drops the TCP connection without DISCONNECT; the client reconnects `afterMs` later by itself. */
  drop (afterMs: number): void {
    const c = this.client
    if (!c) return
    c.options.reconnectPeriod = Math.max(1, afterMs)
    c.stream.destroy()
    setTimeout(() => { if (this.client) this.client.options.reconnectPeriod = RECONNECT_MS }, afterMs + 50).unref()
  }

  /** Waits (up to timeoutMs) for every in-flight publish to be acknowledged or to fail. */
  async settle (timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (this.inFlight > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
  }

  async close (): Promise<void> {
    const c = this.client
    this.client = null
    if (c) await c.endAsync(true).catch(() => {})
  }
}

/** A sensor: a reading `{ts, n, temperature}` every intervalMs. */
export class SoakDevice extends Client {
  private timer: NodeJS.Timeout | null = null
  private n = 0
  private lastTs = 0
  /** n -> device ts of every reading sent (its identity, both ways). */
  readonly sentTs = new Map<number, number>()
  /** n of every acknowledged reading. */
  readonly ackedN: number[] = []

  constructor (url: string, deviceId: string, private readonly intervalMs: number, private readonly phaseMs: number) { super(url, deviceId) }

  start (): void {
    this.timer = setTimeout(() => {
      this.timer = setInterval(() => this.tick(), this.intervalMs)
      this.tick()
    }, this.phaseMs)
  }

  stop (): void {
    if (this.timer) { clearTimeout(this.timer); clearInterval(this.timer) }
    this.timer = null
  }

  private tick (): void {
    // A device clock that never repeats a ms, so that (device, ts) names one reading too.
    const ts = Math.max(Date.now(), this.lastTs + 1)
    const n = this.n + 1
    const payload = JSON.stringify({ ts, n, temperature: 20 + (n % 50) / 10 })
    if (!this.send(payload, () => this.ackedN.push(n))) return
    this.n = n
    this.lastTs = ts
    this.sentTs.set(n, ts)
  }

  override async close (): Promise<void> {
    this.stop()
    await super.close()
  }
}

const BAD_KINDS = ['malformed_json', 'non_finite', 'unknown_field', 'oversized', 'not_an_object'] as const

/** A device that sends only bad payloads: each must be quarantined, never stored as a reading. */
export class BadClient extends Client {
  private i = 0

  /** Sends `count` bad payloads (cycling through the kinds); returns how many were sent. */
  sendBad (count: number): number {
    let sent = 0
    for (let k = 0; k < count; k++) {
      const kind = BAD_KINDS[this.i++ % BAD_KINDS.length]
      if (this.send(badPayload(kind), () => {})) sent++
    }
    return sent
  }
}

function badPayload (kind: typeof BAD_KINDS[number]): string {
  switch (kind) {
    case 'malformed_json': return `{"ts": ${Date.now()}, "temperature": 4.2,`
    case 'non_finite': return `{"ts": ${Date.now()}, "temperature": 1e999}`
    case 'unknown_field': return JSON.stringify({ ts: Date.now(), temperature: 4.2, firmware: { version: '1.2.3' } })
    // Over the gateway's 16 KiB payload limit, under its packet limit: quarantined.
    case 'oversized': return JSON.stringify({ ts: Date.now(), temperature: 4.2, blob: 'x'.repeat(20 * 1024) })
    case 'not_an_object': return '[1, 2, 3]'
  }
}
