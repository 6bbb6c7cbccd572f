// The stall watchdog: a link that says "up" while nothing it publishes is acknowledged. Across edge
// products the most reported uplink failure is this one (a connection that looks alive, a backlog
// that stopped draining until someone restarts it). While the link is up and there is something to
// replicate, acknowledgements must make progress: with none for `stallAfterTimeouts` times
// `publishTimeoutMs`, the uplink is declared stalled (logged, counted, flagged in /readyz and the
// heartbeat) and recovered: the connection is dropped and the link connects anew, with a fresh
// JetStream publisher. Again after another window if that does not help.
import type { GatewayConfig } from '../config.ts'
import type { Logger } from '../log.ts'
import type { UplinkMetrics } from './uplink-metrics.ts'
import type { UplinkLink } from './link.ts'
import { Lifecycle } from '../../lib/lifecycle.ts'

/** What the watchdog reads: the time of the last ack, and whether anything waits to be replicated. */
export interface UplinkProgress { lastAckTs: number, waiting: boolean }

export class StallWatchdog extends Lifecycle {
  /** Stalled now: declared, and no ack since. */
  stalled = false
  /** Stalls declared since start. */
  stalls = 0
  private timer: NodeJS.Timeout | null = null
  private windowStart = performance.now()
  private lastAckTs = 0

  constructor (
    private readonly cfg: Pick<GatewayConfig['uplink'], 'publishTimeoutMs' | 'stallAfterTimeouts'>,
    private readonly link: UplinkLink,
    private readonly progress: () => UplinkProgress,
    private readonly log: Logger,
    private readonly metrics: UplinkMetrics,
  ) {
    super()
  }

  get limitMs (): number { return this.cfg.stallAfterTimeouts * this.cfg.publishTimeoutMs }

  start (): void {
    if (this.timer || this.cfg.stallAfterTimeouts === 0) return
    // A new connection starts a new window.
    this.link.onState(() => { this.windowStart = performance.now() })
    this.timer = setInterval(() => this.check(), Math.max(50, Math.min(1000, this.cfg.publishTimeoutMs / 2)))
    this.timer.unref()
  }

  /** One look (the timer's; public for tests that drive it). */
  check (): void {
    const now = performance.now()
    const p = this.progress()
    if (p.lastAckTs !== this.lastAckTs) {
      this.lastAckTs = p.lastAckTs
      this.windowStart = now
      if (this.stalled) {
        this.stalled = false
        this.metrics.uplinkStalled.set(0)
        this.log.info('uplink acknowledgements resumed after a stall')
      }
      return
    }
    // Down or refused is an outage the link reports by itself; nothing to replicate is no stall.
    if (this.link.state !== 'up' || !p.waiting) {
      this.windowStart = now
      return
    }
    if (now - this.windowStart < this.limitMs) return
    this.windowStart = now
    this.stalled = true
    this.stalls++
    this.metrics.uplinkStalled.set(1)
    this.metrics.uplinkStalls.inc()
    const idleMs = p.lastAckTs > 0 ? Date.now() - p.lastAckTs : null
    this.log.error({ limitMs: this.limitMs, msSinceLastAck: idleMs }, 'uplink stalled: connected, but nothing acknowledged; reconnecting')
    this.link.restart(`stalled: no acknowledgement for ${this.limitMs} ms while connected`)
  }

  protected onClose (): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
  }

  protected onDestroy (): void {
    this.onClose()
  }
}
