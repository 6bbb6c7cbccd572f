// Commands to actuators: sent as QoS 1 on devices/{id}/commands, tracked until the device's
// acknowledgement on devices/{id}/commands/ack, re-sent (same id) on timeout a bounded number of
// times, and every step recorded in the outbox's priority lane so the cloud sees it.
import { randomBytes } from 'node:crypto'
import type { GatewayConfig } from '../config.ts'
import type { Logger } from '../log.ts'
import type { GatewayMetrics } from '../metrics.ts'
import type { IncomingControl } from '../store/outbox-types.ts'
import type { CloudCommand } from '../../proto/command.ts'
import { Lifecycle } from '../../lib/lifecycle.ts'

export type CommandStatus = 'sent' | 'delivered' | 'acknowledged' | 'rejected' | 'timed_out' | 'expired'

export interface CommandRequest {
  deviceId: string
  name: string
  args?: Record<string, unknown>
  /** Lifetime from now; default commands.defaultTtlMs. */
  ttlMs?: number
  /** An id chosen by the sender (the cloud); generated when absent. */
  id?: string
  /** What asked for it: a rule id, or "cloud". */
  origin: { ruleId?: string, ruleSetVersion?: string, source: 'rule' | 'cloud' }
}

interface Pending { req: CommandRequest, id: string, expiresAtMs: number, attempts: number, firstSentMs: number, timer: NodeJS.Timeout | null, delivered: boolean }

/** What the tracker needs from the rest of the gateway. */
export interface CommandSink {
  /** Publishes a command message to a device's command topic (QoS 1); `command` lets MQTT 5 carry its id and expiry as properties. */
  publish: (deviceId: string, payload: Buffer, command: { id: string, expiresAtMs: number }) => Promise<void>
  record: (ev: IncomingControl) => void
}

export class CommandTracker extends Lifecycle {
  private readonly pending = new Map<string, Pending>()
  private readonly prefix = randomBytes(4).toString('hex')
  private counter = 0

  constructor (
    private readonly cfg: GatewayConfig['commands'],
    private readonly sink: CommandSink,
    private readonly log: Logger,
    private readonly metrics: GatewayMetrics,
  ) {
    super()
  }

  /** Sends a command now (never waits for anything); returns its id. */
  send (req: CommandRequest): string {
    const id = req.id ?? `${this.prefix}-${++this.counter}`
    const now = Date.now()
    const p: Pending = { req, id, expiresAtMs: now + (req.ttlMs ?? this.cfg.defaultTtlMs), attempts: 0, firstSentMs: now, timer: null, delivered: false }
    if (this.pending.has(id)) return id // the same command again (e.g. redelivered by the cloud): already on its way,
    // so neither refused at the cap nor finished under the id of the one in flight
    if (this.isClosing || this.pending.size >= this.cfg.maxPending) {
      this.finish(p, 'rejected', this.isClosing ? 'gateway closing' : `more than ${this.cfg.maxPending} commands pending`)
      return id
    }
    if (p.expiresAtMs <= now) {
      this.finish(p, 'expired', 'expired before it could be sent')
      return id
    }
    this.pending.set(id, p)
    this.metrics.commandsPending.set(this.pending.size)
    this.transmit(p)
    return id
  }

  /** Sends a command queued by the cloud, with the cloud's id; what is left of its lifetime becomes its ttl. */
  fromCloud (cmd: CloudCommand): string {
    const ttlMs = cmd.expiresAtMs ? cmd.expiresAtMs - Date.now() : undefined
    // An expired command is not sent: send() records it as expired at once.
    return this.send({ id: cmd.id, deviceId: cmd.deviceId, name: cmd.name, args: cmd.args, ttlMs: ttlMs !== undefined ? Math.max(0, ttlMs) : undefined, origin: { source: 'cloud' } })
  }

  private transmit (p: Pending): void {
    p.attempts++
    const payload = Buffer.from(JSON.stringify({ id: p.id, name: p.req.name, args: p.req.args ?? {}, expiresAtMs: p.expiresAtMs }))
    this.sink.publish(p.req.deviceId, payload, { id: p.id, expiresAtMs: p.expiresAtMs }).catch((err: Error) => this.log.warn({ err, deviceId: p.req.deviceId, commandId: p.id }, 'command publish failed'))
    if (p.attempts === 1) this.record(p, 'sent')
    const wait = Math.min(this.cfg.ackTimeoutMs, Math.max(0, p.expiresAtMs - Date.now()))
    p.timer = setTimeout(() => this.onTimeout(p), wait)
    p.timer.unref()
  }

  private onTimeout (p: Pending): void {
    p.timer = null
    if (!this.pending.has(p.id)) return
    if (Date.now() >= p.expiresAtMs) return this.finish(p, 'expired', `no acknowledgement before expiry after ${p.attempts} attempt(s)`)
    if (p.attempts >= this.cfg.maxAttempts) return this.finish(p, 'timed_out', `no acknowledgement after ${p.attempts} attempts`)
    this.log.debug({ deviceId: p.req.deviceId, commandId: p.id, attempt: p.attempts + 1 }, 'command not acknowledged: re-sending')
    this.transmit(p)
  }

  /** The device's broker-level PUBACK of the command message (aedes 'ack'). */
  delivered (deviceId: string, payload: Buffer): void {
    const p = this.match(deviceId, payload)
    if (!p || p.delivered) return
    p.delivered = true
    this.record(p, 'delivered')
  }

  /**
   * The device's acknowledgement: {"id": "...", "status": "ok" | "rejected", "detail"?: "..."}. An
   * MQTT 5 device may name the command by the Correlation Data it came with instead of the id, and
   * then send no payload at all (status ok).
   */
  acknowledged (deviceId: string, payload: Buffer, correlationData?: Buffer): void {
    let doc: { id?: unknown, status?: unknown, detail?: unknown }
    try { doc = payload.length === 0 ? {} : JSON.parse(payload.toString('utf8')) } catch { doc = {} }
    if (typeof doc !== 'object' || doc === null) doc = {}
    const id = correlationData && correlationData.length > 0 ? correlationData.toString('utf8') : doc.id
    const p = typeof id === 'string' ? this.pending.get(id) : undefined
    if (!p || p.req.deviceId !== deviceId) {
      this.metrics.rejected.inc({ reason: 'unknown_command_ack' })
      this.log.info({ deviceId, commandId: typeof id === 'string' ? id.slice(0, 128) : undefined }, 'acknowledgement for an unknown or finished command')
      return
    }
    const ok = doc.status === undefined || doc.status === 'ok'
    this.finish(p, ok ? 'acknowledged' : 'rejected', typeof doc.detail === 'string' ? doc.detail.slice(0, 200) : undefined)
  }

  private match (deviceId: string, payload: Buffer): Pending | undefined {
    try {
      const id = (JSON.parse(payload.toString('utf8')) as { id?: string }).id
      const p = id ? this.pending.get(id) : undefined
      return p && p.req.deviceId === deviceId ? p : undefined
    } catch {
      return undefined
    }
  }

  private finish (p: Pending, status: CommandStatus, detail?: string): void {
    if (p.timer) clearTimeout(p.timer)
    this.pending.delete(p.id)
    this.metrics.commandsPending.set(this.pending.size)
    this.record(p, status, detail)
    if (status !== 'acknowledged') this.log.warn({ deviceId: p.req.deviceId, commandId: p.id, command: p.req.name, status, detail }, 'command did not succeed')
  }

  private record (p: Pending, status: CommandStatus, detail?: string): void {
    this.metrics.commands.inc({ status })
    const now = Date.now()
    this.sink.record({
      kind: 'command_result',
      eventTsMs: now,
      ingestTsMs: now,
      subjectDeviceId: p.req.deviceId,
      ruleId: p.req.origin.ruleId ?? '',
      ruleSetVersion: p.req.origin.ruleSetVersion ?? '',
      commandId: p.id,
      commandName: p.req.name,
      commandStatus: status,
      durationMs: now - p.firstSentMs,
      detailJson: JSON.stringify({ args: p.req.args ?? {}, attempts: p.attempts, source: p.req.origin.source, expiresAtMs: p.expiresAtMs, detail }),
    })
  }

  /** Commands awaiting an acknowledgement. */
  size (): number { return this.pending.size }

  /** Stops timers; commands still pending are recorded as rejected (the gateway is going away). */
  protected onClose (): void {
    for (const p of [...this.pending.values()]) this.finish(p, 'rejected', 'gateway closing')
  }

  protected onDestroy (): void {
    this.onClose()
  }
}
