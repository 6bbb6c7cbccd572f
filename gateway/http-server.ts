// The gateway's operations endpoint: Prometheus metrics, liveness and readiness.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Lifecycle } from '../lib/lifecycle.ts'

export interface HealthSource {
  /** Ready = accepting and committing input. */
  ready: () => { ready: boolean, detail: Record<string, unknown> }
}

/** Serves /metrics, /healthz (process alive) and /readyz (503 until ready, and again while closing). */
export class OpsServer extends Lifecycle {
  private server: Server | null = null

  /** metrics: the Prometheus text of every registry (the gateway's and its uplink thread's). */
  constructor (private readonly metrics: () => Promise<string>, private readonly contentType: string, private readonly health: HealthSource) {
    super()
  }

  async start (host: string, port: number): Promise<number> {
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0]
      if (path === '/metrics') {
        this.metrics().then((text) => {
          res.writeHead(200, { 'content-type': this.contentType }).end(text)
        }, (err: Error) => res.writeHead(500).end(err.message))
      } else if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}')
      } else if (path === '/readyz') {
        const r = this.health.ready()
        res.writeHead(r.ready ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify({ status: r.ready ? 'ready' : 'not_ready', ...r.detail }))
      } else {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found","paths":["/metrics","/healthz","/readyz"]}')
      }
    })
    this.server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => { server.off('error', reject); resolve() })
    })
    return (server.address() as AddressInfo).port
  }

  protected async onClose (): Promise<void> {
    const s = this.server
    this.server = null
    if (!s) return
    s.closeAllConnections()
    await new Promise<void>((resolve) => s.close(() => resolve()))
  }

  protected onDestroy (): void {
    this.server?.closeAllConnections()
    this.server?.close()
    this.server = null
  }
}
