// One simulated device: connects with its credentials, publishes its sensors' readings as JSON at
// QoS 1, and obeys commands on its command topic (acknowledging each on commands/ack).
import mqtt, { type MqttClient } from 'mqtt'
import { Signal, prng, type SensorKind } from './signals.ts'
import { commandAckTopic, commandTopic, telemetryTopic } from '../proto/topics.ts'

export interface DeviceOptions {
  url: string
  deviceId: string
  secret?: string
  sensors: SensorKind[]
  intervalMs: number
  seed?: number
  /**
   * A room with a cooler: the temperature climbs warmPerSec (°C/s) while the cooler is off and falls
   * coolPerSec while it is on, so a thermostat rule fires again and again. Without it a cooler
   * command only shifts the temperature by -3 °C.
   */
  thermal?: { warmPerSec: number, coolPerSec: number }
  /** Keep the event time of every acknowledged reading (ackedTs), for an accounting by identity. */
  recordAcks?: boolean
}

export interface DeviceCounters { sent: number, acked: number, refused: number, commands: number }

export class SimulatedDevice {
  private client: MqttClient | null = null
  private timer: NodeJS.Timeout | null = null
  private readonly signals: Signal[]
  readonly counters: DeviceCounters = { sent: 0, acked: 0, refused: 0, commands: 0 }
  /** Event times (ms) of the acknowledged readings, when recordAcks is set. */
  readonly ackedTs: number[] = []
  private coolerOn = false
  private lastSampleMs: number | null = null

  constructor (private readonly opts: DeviceOptions) {
    const random = prng(opts.seed ?? hash(opts.deviceId))
    this.signals = opts.sensors.map((k) => new Signal(k, random))
  }

  get deviceId (): string { return this.opts.deviceId }

  async start (): Promise<void> {
    const o = this.opts
    this.client = mqtt.connect(o.url, { clientId: o.deviceId, username: o.secret ? o.deviceId : undefined, password: o.secret, reconnectPeriod: 1000, connectTimeout: 5000 })
    this.client.on('message', (_topic, payload) => this.onCommand(payload))
    await new Promise<void>((resolve, reject) => {
      this.client!.once('connect', () => resolve())
      this.client!.once('error', reject)
    })
    await this.client.subscribeAsync(commandTopic(o.deviceId), { qos: 1 })
    // Spread devices over the interval so a fleet does not publish in lockstep.
    const jitter = Math.floor(Math.random() * o.intervalMs)
    this.timer = setTimeout(() => {
      this.timer = setInterval(() => this.publish(), o.intervalMs)
      this.publish()
    }, jitter)
  }

  private publish (): void {
    const c = this.client
    if (!c?.connected) return
    const now = Date.now()
    const doc: Record<string, number> = { ts: now }
    this.heatOrCool(now)
    for (const s of this.signals) doc[s.kind] = s.sample(now)
    this.counters.sent++
    c.publish(telemetryTopic(this.opts.deviceId), JSON.stringify(doc), { qos: 1 }, (err) => {
      if (err) this.counters.refused++
      else {
        this.counters.acked++
        if (this.opts.recordAcks) this.ackedTs.push(now)
      }
    })
  }

  // A command {id, name, args} changes the simulated physics and is acknowledged.
  private onCommand (payload: Buffer): void {
    this.counters.commands++
    let cmd: { id?: string, name?: string, args?: Record<string, unknown> } = {}
    try { cmd = JSON.parse(payload.toString('utf8')) } catch { return }
    const temp = this.signals.find((s) => s.kind === 'temperature')
    if (temp && cmd.name === 'cooler') {
      this.coolerOn = Boolean(cmd.args?.on)
      if (!this.opts.thermal) temp.offset = this.coolerOn ? -3 : 0
    }
    this.client?.publish(commandAckTopic(this.opts.deviceId), JSON.stringify({ id: cmd.id, status: 'ok', ts: Date.now() }), { qos: 1 })
  }

  private heatOrCool (now: number): void {
    const t = this.opts.thermal
    const temp = this.signals.find((s) => s.kind === 'temperature')
    if (t && temp && this.lastSampleMs !== null) temp.offset += (this.coolerOn ? -t.coolPerSec : t.warmPerSec) * (now - this.lastSampleMs) / 1000
    this.lastSampleMs = now
  }

  async close (): Promise<void> {
    if (this.timer) { clearTimeout(this.timer); clearInterval(this.timer) }
    this.timer = null
    await this.client?.endAsync()
    this.client = null
  }
}

/** A stable seed from a name (FNV-1a). */
export function hash (s: string): number {
  let h = 2166136261
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619)
  return h >>> 0
}
