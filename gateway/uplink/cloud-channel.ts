// Cloud-to-edge: rule sets pushed by the cloud (KV bucket RULES, key = gateway id) and commands
// queued for this gateway (stream COMMANDS, subject iot.<gatewayId>.commands, a durable consumer so
// that commands sent while the gateway was offline arrive once it reconnects, unless expired).
import { AckPolicy, DeliverPolicy, jetstreamManager, type ConsumerMessages } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { CLOUD_BUCKETS, STREAMS, subjects } from '../../proto/index.ts'
import type { CommandTracker } from '../rules/command-tracker.ts'
import type { Control } from '../rules/control.ts'
import type { Logger } from '../log.ts'
import type { UplinkLink } from './link.ts'

/** A command from the cloud, as JSON on iot.<gatewayId>.commands. */
export interface CloudCommand { id: string, deviceId: string, name: string, args?: Record<string, unknown>, expiresAtMs?: number }

export class CloudChannel {
  private stops: Array<() => void> = []
  private closed = false
  private attaching: Promise<void> | null = null

  constructor (
    private readonly link: UplinkLink,
    private readonly gatewayId: string,
    private readonly control: Control,
    private readonly commands: CommandTracker,
    private readonly log: Logger,
  ) {}

  start (): void {
    this.link.onState((s) => {
      if (s === 'up' && !this.attaching && !this.closed) {
        this.attaching = this.attach().catch((err: Error) => {
          this.log.warn({ err }, 'cloud channel not attached (rules bucket or commands stream missing?); will retry on reconnect')
        }).finally(() => { this.attaching = null })
      }
    })
  }

  private async attach (): Promise<void> {
    for (const stop of this.stops.splice(0)) stop()
    const conn = this.link.current()
    if (!conn) return
    // Rule sets: the watch delivers the current value first, then every update.
    const kv = await new Kvm(conn.nc).open(CLOUD_BUCKETS.rules)
    const watch = await kv.watch({ key: this.gatewayId })
    this.stops.push(() => watch.stop())
    void (async () => {
      for await (const e of watch) {
        if (e.operation !== 'PUT') continue
        const err = this.control.load(e.string(), 'cloud')
        if (err) this.log.error({ err, revision: e.revision }, 'rule set from the cloud refused')
      }
    })()
    // Commands: this gateway's durable consumer on the COMMANDS stream.
    const jsm = await jetstreamManager(conn.nc)
    const durable = `gw-${this.gatewayId}`
    try {
      await jsm.consumers.info(STREAMS.commands.name, durable)
    } catch {
      await jsm.consumers.add(STREAMS.commands.name, { durable_name: durable, filter_subject: subjects.commands(this.gatewayId), ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All, ack_wait: 30_000_000_000 })
    }
    const consumer = await conn.js.consumers.get(STREAMS.commands.name, durable)
    const messages: ConsumerMessages = await consumer.consume({ max_messages: 100 })
    this.stops.push(() => { void messages.close() })
    void (async () => {
      for await (const m of messages) {
        let cmd: CloudCommand
        try {
          cmd = m.json<CloudCommand>()
        } catch {
          this.log.error({ seq: m.seq }, 'malformed command from the cloud dropped')
          m.term()
          continue
        }
        const ttlMs = cmd.expiresAtMs ? cmd.expiresAtMs - Date.now() : undefined
        // An expired command is not sent: the tracker records it as expired at once.
        this.commands.send({ id: cmd.id, deviceId: cmd.deviceId, name: cmd.name, args: cmd.args, ttlMs: ttlMs !== undefined ? Math.max(0, ttlMs) : undefined, origin: { source: 'cloud' } })
        m.ack()
      }
    })()
    this.log.info({ durable }, 'cloud channel attached: rules and commands')
  }

  async close (): Promise<void> {
    this.closed = true
    for (const stop of this.stops.splice(0)) stop()
    await this.attaching
  }
}
