// Publishes the gateway's status on iot.<gatewayId>.status every heartbeatMs while the link is up,
// so the cloud can show link health (and declare the gateway offline when heartbeats stop).
import { subjects, v1, type GatewayStatusProps } from '../../proto/index.ts'
import type { Logger } from '../log.ts'
import type { UplinkLink } from './link.ts'
import { Lifecycle } from '../../lib/lifecycle.ts'

/** The status to send now, or null while there is none yet. */
export type StatusSource = () => GatewayStatusProps | null

export class Heartbeat extends Lifecycle {
  private timer: NodeJS.Timeout | null = null

  constructor (
    private readonly link: UplinkLink,
    private readonly gatewayId: string,
    private readonly intervalMs: number,
    private readonly status: StatusSource,
    private readonly log: Logger,
  ) {
    super()
  }

  start (): void {
    if (this.timer) return
    this.link.onState((s) => { if (s === 'up') this.beat() })
    this.timer = setInterval(() => this.beat(), this.intervalMs)
    this.timer.unref()
  }

  /** Sends one heartbeat now if the link is up (core NATS: fire and forget). */
  beat (): void {
    // The status is built only when it can go: building it marks the delivery ledger's part as sent.
    const conn = this.link.current()
    if (!conn) return
    const status = this.status()
    if (!status) return
    try {
      conn.nc.publish(subjects.status(this.gatewayId), v1.GatewayStatus.encode(status).finish())
    } catch (err) {
      this.log.debug({ err }, 'heartbeat not sent')
    }
  }

  protected onClose (): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
  }

  protected onDestroy (): void {
    this.onClose()
  }
}
