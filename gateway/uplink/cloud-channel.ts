// Cloud-to-edge: rule sets pushed by the cloud (KV bucket RULES, key = gateway id) and commands
// queued for this gateway (stream COMMANDS, subject iot.<gatewayId>.commands, a durable consumer so
// that commands sent while the gateway was offline arrive once it reconnects, unless expired).
//
// The channel keeps itself attached: an attach that fails (a stream leader being elected, the
// bucket not provisioned yet) is retried with backoff while the link is up, and an attached channel
// is checked every verifyMs (the consumer still exists, the watch still runs, no run of missed
// heartbeats), so a NATS node failure that leaves the link up never leaves the channel dead.
import { AckPolicy, DeliverPolicy, jetstreamManager, type ConsumerMessages, type JetStreamManager } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { CLOUD_BUCKETS, STREAMS, subjects } from '../../proto/index.ts'
import { parseCloudCommand, type CloudCommand } from '../../proto/command.ts'
import type { Logger } from '../log.ts'
import type { UplinkMetrics } from './uplink-metrics.ts'
import { backoffMs, type UplinkLink } from './link.ts'
import { Lifecycle } from '../../lib/lifecycle.ts'

/** Where the channel hands on what the cloud sends (the main thread's rules and command tracker, through uplink-thread.ts). */
export interface CloudInbox {
  /** A rule set from the cloud's rules bucket (its KV revision); the rules log and count a refusal. */
  loadRules: (text: string, revision: number) => void
  /** A command from the cloud, already validated; an expired one is recorded as such, not sent. */
  command: (cmd: CloudCommand) => void
}

export type CloudChannelState = 'detached' | 'attaching' | 'attached'

export interface CloudChannelOptions {
  /** How often an attached channel is checked (ms). */
  verifyMs: number
  /** Backoff between attach attempts (ms). */
  retryMinMs: number
  retryMaxMs: number
}

type Cause = 'link_up' | 'retry' | 'lost'

// Missed idle heartbeats of the commands consumer in a row that count as a lost consumer.
const HEARTBEATS_MISSED_LOST = 3

export class CloudChannel extends Lifecycle {
  private stops: Array<() => void> = []
  private attaching: Promise<void> | null = null
  private stateValue: CloudChannelState = 'detached'
  /** Why the channel is not attached; cleared once it is. */
  lastError = ''
  private attempt = 0
  private retryTimer: NodeJS.Timeout | null = null
  private verifyTimer: NodeJS.Timeout | null = null
  /** Bumped by each attach: loops of an older attach no longer report. */
  private generation = 0
  private jsm: JetStreamManager | null = null

  constructor (
    private readonly link: UplinkLink,
    private readonly gatewayId: string,
    private readonly inbox: CloudInbox,
    private readonly opts: CloudChannelOptions,
    private readonly log: Logger,
    private readonly metrics: UplinkMetrics,
  ) {
    super()
  }

  get state (): CloudChannelState { return this.stateValue }

  start (): void {
    this.link.onState((s) => {
      if (s === 'up') this.ensureAttached('link_up')
      else this.detach(`uplink ${s}`)
    })
    if (this.link.state === 'up') this.ensureAttached('link_up')
  }

  private setState (s: CloudChannelState, why: string): void {
    this.stateValue = s
    this.lastError = s === 'attached' ? '' : why
    this.metrics.cloudChannelAttached.set(s === 'attached' ? 1 : 0)
  }

  private ensureAttached (cause: Cause): void {
    if (this.isClosing || this.attaching || this.stateValue === 'attached' || !this.link.current()) return
    if (this.retryTimer) { clearTimeout(this.retryTimer); this.retryTimer = null }
    this.setState('attaching', this.lastError)
    this.attaching = this.attach().then(() => {
      this.metrics.cloudChannelAttaches.inc({ result: 'ok', cause })
      this.attempt = 0
      this.setState('attached', '')
      this.scheduleVerify()
    }, (err: Error) => {
      this.metrics.cloudChannelAttaches.inc({ result: 'failed', cause })
      this.stopAll()
      this.setState('detached', err.message)
      const wait = backoffMs(this.attempt++, this.opts.retryMinMs, this.opts.retryMaxMs)
      this.log.warn({ err, retryInMs: wait }, 'cloud channel not attached (rules bucket or commands stream missing or moving?); retrying')
      this.scheduleRetry(wait)
    }).finally(() => { this.attaching = null })
  }

  private scheduleRetry (ms: number): void {
    if (this.isClosing || this.retryTimer) return
    this.retryTimer = setTimeout(() => { this.retryTimer = null; this.ensureAttached('retry') }, ms)
    this.retryTimer.unref()
  }

  /** The channel stopped working while the link stayed up: re-attach at once (with backoff if that fails). */
  private lost (why: string, generation: number): void {
    if (generation !== this.generation || this.isClosing || this.stateValue !== 'attached') return
    this.log.warn({ why }, 'cloud channel lost; re-attaching')
    this.stopAll()
    this.setState('detached', why)
    this.ensureAttached('lost')
  }

  private detach (why: string): void {
    this.stopAll()
    if (this.retryTimer) { clearTimeout(this.retryTimer); this.retryTimer = null }
    this.setState('detached', why)
  }

  private stopAll (): void {
    this.generation++
    if (this.verifyTimer) { clearTimeout(this.verifyTimer); this.verifyTimer = null }
    for (const stop of this.stops.splice(0)) stop()
  }

  private scheduleVerify (): void {
    const generation = this.generation
    this.verifyTimer = setTimeout(() => {
      this.verifyTimer = null
      void this.verify(generation)
    }, this.opts.verifyMs)
    this.verifyTimer.unref()
  }

  private async verify (generation: number): Promise<void> {
    try {
      await this.jsm!.consumers.info(STREAMS.commands.name, this.durable)
    } catch (err) {
      this.lost(`commands consumer unreachable: ${(err as Error).message}`, generation)
      return
    }
    if (generation === this.generation && !this.isClosing) this.scheduleVerify()
  }

  private get durable (): string { return `gw-${this.gatewayId}` }

  private async attach (): Promise<void> {
    this.stopAll()
    const generation = this.generation
    const conn = this.link.current()
    if (!conn) throw new Error('uplink down')
    // Rule sets: the watch delivers the current value first, then every update.
    const kv = await new Kvm(conn.nc).open(CLOUD_BUCKETS.rules)
    const watch = await kv.watch({ key: this.gatewayId })
    this.stops.push(() => watch.stop())
    void (async () => {
      for await (const e of watch) {
        if (e.operation !== 'PUT') continue
        this.inbox.loadRules(e.string(), e.revision)
      }
      this.lost('rules watch ended', generation)
    })().catch((err: Error) => this.lost(`rules watch failed: ${err.message}`, generation))
    // Commands: this gateway's durable consumer on the COMMANDS stream.
    const jsm = this.jsm = await jetstreamManager(conn.nc)
    const durable = this.durable
    try {
      await jsm.consumers.info(STREAMS.commands.name, durable)
    } catch {
      await jsm.consumers.add(STREAMS.commands.name, { durable_name: durable, filter_subject: subjects.commands(this.gatewayId), ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All, ack_wait: 30_000_000_000 })
    }
    const consumer = await conn.js.consumers.get(STREAMS.commands.name, durable)
    const messages: ConsumerMessages = await consumer.consume({ max_messages: 100, idle_heartbeat: Math.max(1000, Math.floor(this.opts.verifyMs / 2)) })
    this.stops.push(() => { void messages.close() })
    void (async () => {
      for await (const s of messages.status()) {
        if (s.type === 'consumer_deleted' || s.type === 'consumer_not_found' || (s.type === 'heartbeats_missed' && s.count >= HEARTBEATS_MISSED_LOST)) {
          this.lost(`commands consumer: ${s.type}`, generation)
          return
        }
      }
    })().catch(() => {})
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
      this.lost('commands consumer ended', generation)
    })().catch((err: Error) => this.lost(`commands consumer failed: ${err.message}`, generation))
    this.log.info({ durable }, 'cloud channel attached: rules and commands')
  }

  protected async onClose (): Promise<void> {
    this.detach('closed')
    await this.attaching
    this.stopAll()
  }

  protected onDestroy (): void {
    this.detach('destroyed')
  }
}
