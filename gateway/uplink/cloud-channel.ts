// Cloud-to-edge: rule sets pushed by the cloud (KV bucket RULES, key = gateway id) and commands
// queued for this gateway (stream COMMANDS, subject iot.<gatewayId>.commands, a durable consumer so
// that commands sent while the gateway was offline arrive once it reconnects, unless expired).
import { AckPolicy, DeliverPolicy, jetstreamManager, type ConsumerMessages } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { CLOUD_BUCKETS, STREAMS, subjects } from '../../proto/index.ts'
import { parseCloudCommand, type CloudCommand } from '../../proto/command.ts'
import type { Logger } from '../log.ts'
import type { UplinkLink } from './link.ts'
import { Lifecycle } from '../../lib/lifecycle.ts'

/** Where the channel hands on what the cloud sends (gateway.ts wires it to the rules and the command tracker). */
export interface CloudInbox {
  /** A rule set from the cloud's rules bucket; returns why it was refused, or null once it runs. */
  loadRules: (text: string) => Error | null
  /** A command from the cloud, already validated; an expired one is recorded as such, not sent. */
  command: (cmd: CloudCommand) => void
}

export class CloudChannel extends Lifecycle {
  private stops: Array<() => void> = []
  private attaching: Promise<void> | null = null

  constructor (
    private readonly link: UplinkLink,
    private readonly gatewayId: string,
    private readonly inbox: CloudInbox,
    private readonly log: Logger,
  ) {
    super()
  }

  start (): void {
    this.link.onState((s) => {
      if (s === 'up' && !this.attaching && !this.isClosing) {
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
        const err = this.inbox.loadRules(e.string())
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
        const parsed = parseCloudCommand(m.string())
        if (!parsed.ok) {
          this.log.error({ seq: m.seq, reason: parsed.reason }, 'malformed command from the cloud dropped')
          m.term()
          continue
        }
        this.inbox.command(parsed.command)
        m.ack()
      }
    })()
    this.log.info({ durable }, 'cloud channel attached: rules and commands')
  }

  protected async onClose (): Promise<void> {
    for (const stop of this.stops.splice(0)) stop()
    await this.attaching
  }

  protected onDestroy (): void {
    for (const stop of this.stops.splice(0)) stop()
  }
}
