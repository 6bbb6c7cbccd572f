// The cloud's HTTP JSON API over the fleet views (shape documented in cloud/API.md), plus the
// operations endpoints: /healthz, /readyz, /metrics. Stateless: every answer is read from the
// view store, so any number of API replicas answer the same.
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { AddressInfo } from 'node:net'
import type { NatsConnection } from '@nats-io/transport-node'
import type { Registry } from 'prom-client'
import { registerConsole, type ConsoleAuth } from '../console/index.ts'
import { registerControlRoutes } from './control-api.ts'
import type { Logger } from '../log.ts'
import { DEVICE_ID, GATEWAY_ID } from '../store/view-store.ts'
import type { FleetViews, Resolution } from '../views/views.ts'

export interface ApiOptions {
  views: FleetViews
  registry: Registry
  /** Ready = consuming and the store answers; 503 otherwise (and while closing). */
  ready: () => { ready: boolean, detail?: Record<string, unknown> }
  log: Logger
  /** The console login and web UI (cloud/console/); without it the API is open, as in unit tests. */
  console?: ConsoleAuth
  /** For commands, rule sets and live events (control-api.ts); default: the connection of the views' KV bucket. */
  nats?: NatsConnection
}

const badRequest = (message: string): { statusCode: number, body: { error: string, message: string } } =>
  ({ statusCode: 400, body: { error: 'bad_request', message } })

/** Parses a time given as ms since the epoch or an ISO 8601 string. */
function parseTime (v: unknown, fallback: number): number | null {
  if (v === undefined || v === '') return fallback
  const s = String(v)
  const n = /^-?\d+$/.test(s) ? Number(s) : Date.parse(s)
  return Number.isFinite(n) ? n : null
}

export class ApiServer {
  private readonly app: FastifyInstance
  private closing: Promise<void> | null = null

  constructor (private readonly opts: ApiOptions) {
    // Fastify logs through our pino logger (a child); per-request logs are off (errors are still logged).
    this.app = Fastify({ loggerInstance: opts.log.child({ component: 'api' }) as unknown as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }) })
    if (opts.console) registerConsole(this.app, { auth: opts.console })
    this.routes()
  }

  private routes (): void {
    const { views } = this.opts
    const app = this.app
    app.get('/healthz', async () => ({ status: 'ok' }))
    app.get('/readyz', async (_req, reply) => {
      const r = this.opts.ready()
      return reply.code(r.ready && !this.closing ? 200 : 503).send({ status: r.ready && !this.closing ? 'ready' : 'not_ready', ...r.detail })
    })
    app.get('/metrics', async (_req, reply) => {
      const text = await this.opts.registry.metrics()
      return reply.type(this.opts.registry.contentType).send(text)
    })

    app.get('/api/fleet', async () => {
      const gateways = await views.gateways()
      return { gateways, online: gateways.filter((g) => g.online).length, total: gateways.length }
    })

    app.get<{ Params: { id: string } }>('/api/gateways/:id', async (req, reply) => {
      const id = req.params.id
      if (!GATEWAY_ID.test(id)) return reply.code(400).send(badRequest('bad gateway id').body)
      const [gateway, devices] = await Promise.all([views.gateway(id), views.devices(id)])
      if (!gateway && devices.length === 0) return reply.code(404).send({ error: 'not_found', message: `no gateway ${id}` })
      return {
        gatewayId: id,
        status: gateway,
        devices: devices.map((d) => ({ deviceId: d.deviceId, lastEventTsMs: d.latest?.eventTsMs ?? null, received: d.accounting.received, duplicates: d.accounting.duplicates, gapsOpen: d.accounting.gapsOpen })),
      }
    })

    app.get<{ Params: { gw: string, device: string } }>('/api/devices/:gw/:device', async (req, reply) => {
      const { gw, device } = req.params
      if (!GATEWAY_ID.test(gw) || !DEVICE_ID.test(device)) return reply.code(400).send(badRequest('bad gateway or device id').body)
      const d = await views.device(gw, device)
      if (!d) return reply.code(404).send({ error: 'not_found', message: `no device ${gw}/${device}` })
      return d
    })

    app.get<{ Params: { gw: string, device: string }, Querystring: { from?: string, to?: string, res?: string } }>('/api/devices/:gw/:device/history', async (req, reply) => {
      const { gw, device } = req.params
      if (!GATEWAY_ID.test(gw) || !DEVICE_ID.test(device)) return reply.code(400).send(badRequest('bad gateway or device id').body)
      const res = (req.query.res ?? '1m') as Resolution
      if (res !== '1m' && res !== '1h') return reply.code(400).send(badRequest('res must be 1m or 1h').body)
      const now = Date.now()
      const to = parseTime(req.query.to, now)
      const from = parseTime(req.query.from, (to ?? now) - (res === '1m' ? 3600_000 : 24 * 3600_000))
      if (from === null || to === null || from >= to) return reply.code(400).send(badRequest('from and to must be times (ms or ISO 8601) with from < to').body)
      try {
        return { gatewayId: gw, deviceId: device, res, from, to, buckets: await views.history(gw, device, from, to, res) }
      } catch (err) {
        if (err instanceof RangeError) return reply.code(400).send(badRequest(err.message).body)
        throw err
      }
    })

    app.get<{ Querystring: { gateway?: string } }>('/api/accounting', async (req, reply) => {
      const gw = req.query.gateway
      if (gw !== undefined && !GATEWAY_ID.test(gw)) return reply.code(400).send(badRequest('bad gateway id').body)
      return views.accounting(gw)
    })

    // Alerts, decisions, commands, rule sets, link health, live events.
    registerControlRoutes(app, { views, nats: this.opts.nats, log: this.opts.log })
  }

  /** Listens; resolves with the bound port (0 = ephemeral). */
  async start (host: string, port: number): Promise<number> {
    await this.app.listen({ host, port })
    return (this.app.server.address() as AddressInfo).port
  }

  /** Stops accepting, lets in-flight requests finish. Idempotent. */
  close (): Promise<void> {
    this.closing ??= this.app.close()
    return this.closing
  }

  /** Closes every connection at once. */
  destroy (): void {
    this.app.server.closeAllConnections()
    void this.close()
  }
}
