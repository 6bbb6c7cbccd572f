// The cloud's HTTP JSON API over the fleet views (shape documented in cloud/API.md), plus the
// operations endpoints: /healthz, /readyz, /metrics. Stateless: every answer is read from the
// view store, so any number of API replicas answer the same. This file owns the fastify instance
// and its lifecycle; the routes are registered by concern (routes-fleet.ts, routes-history.ts, routes-control.ts,
// routes-rules.ts, routes-live.ts, routes-replicas.ts, session.ts), and one error handler answers every route
// (error-handler.ts). The NATS-backed pieces (JetStream client, rules bucket, live events) are made
// by the composition (cloud.ts) and handed in.
import type { JetStreamClient } from '@nats-io/jetstream'
import type { KV } from '@nats-io/kv'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { AddressInfo } from 'node:net'
import type { Registry } from 'prom-client'
import { CONSOLE_OPEN_PATHS, registerConsole } from '../console/index.ts'
import type { Logger } from '../log.ts'
import type { FleetViews } from '../views/views.ts'
import type { ConsoleAuth } from './auth.ts'
import { registerErrorHandler } from './error-handler.ts'
import { allowedHostNames, registerHostGuard } from './host-guard.ts'
import type { LiveEvents } from './live-events.ts'
import { registerControlRoutes } from './routes-control.ts'
import { registerDeliveryRoutes } from './routes-delivery.ts'
import { registerFleetRoutes } from './routes-fleet.ts'
import { registerHistoryRoutes } from './routes-history.ts'
import type { RawEvents } from '../views/raw-events.ts'
import { registerLiveRoutes } from './routes-live.ts'
import { registerReplicaRoutes } from './routes-replicas.ts'
import { registerRuleRoutes } from './routes-rules.ts'
import type { ReplicasView } from '../partitions/replicas-view.ts'
import { registerSession } from './session.ts'
import { Lifecycle } from '../../lib/lifecycle.ts'

export interface ApiOptions {
  views: FleetViews
  registry: Registry
  /** Ready = consuming and the store answers; 503 otherwise (and while closing). */
  ready: () => { ready: boolean, detail?: Record<string, unknown> }
  log: Logger
  /**
   * The console login (session guard, login routes) and web UI. 'off' (no login, no UI) exists for
   * in-process unit tests of the routes only: it is set in code, never from config or environment
   * (the composition, cloud.ts, always passes a ConsoleAuth).
   */
  auth: ConsoleAuth | 'off'
  /** Names from allowedHostNames() that the Host header may carry (default: the loopback names). */
  allowedHosts?: ReadonlySet<string>
  /** Publishes commands; without it POST /api/commands answers 503. */
  js?: JetStreamClient
  /** The RULES bucket (opened with `js`); without it the rule-set routes answer 503. */
  rules?: KV
  /** Live updates (GET /api/events); without it that route answers 503. Closed by its owner before close(). */
  live?: LiveEvents
  /** Raw events from the TELEMETRY stream (GET /api/devices/:gw/:device/events, history?res=raw); without it those answer 503. */
  raw?: RawEvents
  /** The aggregator replicas and partition leases (GET /api/replicas); without it that route answers 503. */
  replicas?: () => Promise<ReplicasView>
}

export class ApiServer extends Lifecycle {
  private readonly app: FastifyInstance

  constructor (private readonly opts: ApiOptions) {
    super()
    // Fastify logs through our pino logger (a child); per-request logs are off (errors are still logged).
    const log = opts.log.child({ component: 'api' })
    this.app = Fastify({ loggerInstance: log as unknown as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }) })
    registerErrorHandler(this.app, log)
    registerHostGuard(this.app, opts.allowedHosts ?? allowedHostNames('localhost'))
    if (opts.auth !== 'off') {
      registerSession(this.app, { auth: opts.auth, openPaths: CONSOLE_OPEN_PATHS })
      registerConsole(this.app, { user: opts.auth.user })
    }
    this.routes()
  }

  private routes (): void {
    const { views, log } = this.opts
    const app = this.app
    app.get('/healthz', async () => ({ status: 'ok' }))
    // A probe's answer, not an error: 503 with what is not ready.
    app.get('/readyz', async (_req, reply) => {
      const r = this.opts.ready()
      return reply.code(r.ready && !this.isClosing ? 200 : 503).send({ status: r.ready && !this.isClosing ? 'ready' : 'not_ready', ...r.detail })
    })
    app.get('/metrics', async (_req, reply) => {
      const text = await this.opts.registry.metrics()
      return reply.type(this.opts.registry.contentType).send(text)
    })
    registerFleetRoutes(app, views)
    registerHistoryRoutes(app, { views, raw: this.opts.raw ?? null })
    registerDeliveryRoutes(app, views)
    registerControlRoutes(app, { views, js: this.opts.js ?? null, log })
    const { js, rules } = this.opts
    registerRuleRoutes(app, { views, rules: js && rules ? { js, kv: rules } : null, log })
    registerLiveRoutes(app, this.opts.live ?? null)
    registerReplicaRoutes(app, this.opts.replicas ?? null)
  }

  /** Listens; resolves with the bound port (0 = ephemeral). */
  async start (host: string, port: number): Promise<number> {
    await this.app.listen({ host, port })
    return (this.app.server.address() as AddressInfo).port
  }

  /** Stops accepting, lets in-flight requests finish. */
  protected async onClose (): Promise<void> {
    await this.app.close()
  }

  /** Closes every connection at once. */
  protected onDestroy (): void {
    this.app.server.closeAllConnections()
    void this.app.close()
  }
}
