// The gateway's link to the cloud's NATS: connects with the configured credentials and TLS,
// reconnects forever with jittered capped backoff (also when the server refuses us), and reports
// its state. Never throws into the ingest path: callers ask `current()` and get a client or null.
import { readFileSync } from 'node:fs'
import { connect, credsAuthenticator, nkeyAuthenticator, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node'
import { jetstream, type JetStreamClient } from '@nats-io/jetstream'
import type { GatewayConfig } from '../config.ts'
import type { Logger } from '../log.ts'
import type { UplinkMetrics } from './uplink-metrics.ts'
import { Lifecycle } from '../../lib/lifecycle.ts'

export type LinkState = 'down' | 'up' | 'refused'

/** Jittered exponential backoff: attempt 0 → ~min, doubling up to max; full jitter in [50%, 100%]. */
export function backoffMs (attempt: number, minMs: number, maxMs: number, random = Math.random): number {
  const cap = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30))
  return Math.round(cap * (0.5 + random() / 2))
}

export class UplinkLink extends Lifecycle {
  private nc: NatsConnection | null = null
  private js: JetStreamClient | null = null
  private attempt = 0
  private stateValue: LinkState = 'down'
  private loop: Promise<void> | null = null
  private wake: (() => void) | null = null
  lastError = ''
  private readonly listeners: Array<(state: LinkState) => void> = []

  constructor (
    private readonly cfg: GatewayConfig['uplink'],
    private readonly gatewayId: string,
    private readonly log: Logger,
    private readonly metrics: UplinkMetrics,
  ) {
    super()
  }

  get state (): LinkState { return this.stateValue }

  onState (listener: (state: LinkState) => void): void { this.listeners.push(listener) }

  /** The connected client, or null while the link is down. */
  current (): { nc: NatsConnection, js: JetStreamClient } | null {
    return this.nc && this.js && this.stateValue === 'up' ? { nc: this.nc, js: this.js } : null
  }

  /** Starts connecting in the background; never waits for the cloud. */
  start (): void {
    if (this.loop || this.cfg.servers.length === 0) return
    this.loop = this.run()
  }

  private setState (s: LinkState, why?: string): void {
    if (why !== undefined) this.lastError = why
    if (s === this.stateValue) return
    this.stateValue = s
    this.metrics.uplinkUp.set(s === 'up' ? 1 : 0)
    for (const l of this.listeners) l(s)
  }

  /** A publish went through: a refusal reported earlier no longer holds, so its lastError clears. */
  healthy (): void {
    if (this.lastError !== '' && this.stateValue === 'up') this.lastError = ''
  }

  /**
   * Drops the current connection, which looks alive but gets nothing through (the stall watchdog):
   * the loop connects anew, with a fresh JetStream client. `why` becomes lastError.
   */
  restart (why: string): void {
    const nc = this.nc
    if (!nc) return
    this.lastError = why
    this.log.warn({ why }, 'uplink connection dropped to reconnect')
    void nc.close().catch(() => {})
  }

  /** Reports a refusal seen while publishing (permissions, missing stream): counted, logged, link stays. */
  refused (kind: string, err: unknown): void {
    this.metrics.uplinkErrors.inc({ kind })
    this.lastError = `${kind}: ${(err as Error)?.message ?? String(err)}`
  }

  private async run (): Promise<void> {
    while (!this.isClosing) {
      let nc: NatsConnection
      try {
        nc = await connect(this.options())
      } catch (err) {
        const kind = classify(err)
        this.metrics.uplinkErrors.inc({ kind })
        this.setState(kind === 'auth' ? 'refused' : 'down', `${kind}: ${(err as Error).message}`)
        const wait = backoffMs(this.attempt++, this.cfg.reconnectMinMs, this.cfg.reconnectMaxMs)
        const log = kind === 'auth' ? this.log.error.bind(this.log) : this.log.warn.bind(this.log)
        log({ err, kind, retryInMs: wait, servers: this.cfg.servers }, kind === 'auth' ? 'cloud refused our credentials; events keep buffering' : 'cannot reach the cloud; events keep buffering')
        await this.sleep(wait)
        continue
      }
      if (this.isClosing) { await nc.close(); break }
      this.attempt = 0
      this.nc = nc
      this.js = jetstream(nc, { timeout: this.cfg.publishTimeoutMs })
      this.metrics.uplinkConnects.inc()
      this.log.info({ server: nc.getServer() }, 'uplink connected')
      this.setState('up', '')
      void this.watch(nc)
      // The client reconnects by itself; it closes for good only on repeated auth errors or close().
      const err = await nc.closed()
      this.nc = null
      this.js = null
      if (this.isClosing) break
      this.setState(err && classify(err) === 'auth' ? 'refused' : 'down', err ? (err as Error).message : this.lastError.startsWith('stalled') ? this.lastError : 'closed')
      this.log.warn({ err }, 'uplink closed; reconnecting')
      await this.sleep(backoffMs(this.attempt++, this.cfg.reconnectMinMs, this.cfg.reconnectMaxMs))
    }
  }

  private async watch (nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      switch (s.type) {
        case 'disconnect':
          this.metrics.uplinkErrors.inc({ kind: 'disconnect' })
          this.setState('down', 'disconnected')
          this.log.warn({ server: s.server }, 'uplink disconnected; events keep buffering')
          break
        case 'reconnect':
          this.metrics.uplinkConnects.inc()
          this.setState('up', '')
          this.log.info({ server: s.server }, 'uplink reconnected')
          break
        case 'error': {
          const kind = classify(s.error)
          this.metrics.uplinkErrors.inc({ kind })
          this.lastError = `${kind}: ${s.error.message}`
          this.log.error({ err: s.error, kind }, 'uplink error from the cloud')
          break
        }
        case 'staleConnection':
          this.log.warn('uplink stale (missed pings); reconnecting')
          break
        default:
          break
      }
    }
  }

  private options (): NodeConnectionOptions {
    const c = this.cfg
    const opts: NodeConnectionOptions = {
      servers: c.servers,
      name: `gateway-${this.gatewayId}`,
      // Replies (publish acks, pulls, KV watches) come on this gateway's own inboxes, so NATS
      // permissions need not let it subscribe to anyone else's (deploy/nats/accounts.conf).
      inboxPrefix: `_INBOX_${this.gatewayId}`,
      user: c.user,
      pass: c.pass,
      token: c.token,
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectDelayHandler: () => backoffMs(this.attempt++, c.reconnectMinMs, c.reconnectMaxMs),
      pingInterval: c.pingIntervalMs,
      maxPingOut: c.maxPingOut,
      timeout: c.publishTimeoutMs,
      ignoreClusterUpdates: false,
    }
    if (c.credsFile) opts.authenticator = credsAuthenticator(readFileSync(c.credsFile))
    else if (c.nkeySeedFile) opts.authenticator = nkeyAuthenticator(new TextEncoder().encode(readFileSync(c.nkeySeedFile, 'utf8').trim()))
    if (c.tls) {
      opts.tls = {
        caFile: c.tls.caFile,
        certFile: c.tls.certFile,
        keyFile: c.tls.keyFile,
      }
    }
    return opts
  }

  private sleep (ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.wake = null; resolve() }, ms)
      this.wake = () => { clearTimeout(t); this.wake = null; resolve() }
    })
  }

  /** Drains the connection (flushing what is in flight) and stops reconnecting. Idempotent. */
  protected async onClose (): Promise<void> {
    this.wake?.()
    const nc = this.nc
    if (nc && !nc.isClosed()) {
      // Drain flushes what is in flight, but only a live link can drain; never wait long for it.
      if (this.stateValue === 'up') {
        const deadline = new Promise<void>((resolve) => setTimeout(resolve, 2000).unref())
        await Promise.race([nc.drain().catch(() => {}), deadline])
      }
      if (!nc.isClosed()) await nc.close().catch(() => {})
    }
    await this.loop
    this.setState('down')
  }

  protected onDestroy (): void {
    this.wake?.()
    const nc = this.nc
    if (nc && !nc.isClosed()) void nc.close().catch(() => {})
  }
}

/** Sorts an error from the NATS client into a small set of kinds for logs and metrics. */
export function classify (err: unknown): 'auth' | 'permission' | 'no_stream' | 'timeout' | 'connection' {
  const e = err as { name?: string, message?: string, code?: string }
  const text = `${e?.name ?? ''} ${e?.code ?? ''} ${e?.message ?? ''}`.toLowerCase()
  if (text.includes('authorization') || text.includes('authentication') || text.includes('auth')) return 'auth'
  if (text.includes('permission')) return 'permission'
  if (text.includes('no responders') || text.includes('no stream') || text.includes('503')) return 'no_stream'
  if (text.includes('timeout')) return 'timeout'
  return 'connection'
}
