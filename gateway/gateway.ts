// The edge gateway: composes database, outbox, ingest, broker and the ops endpoint. Starts them in
// dependency order and closes them in reverse.
import { writeFileSync } from 'node:fs'
import { Broker, type BrokerPorts } from './broker.ts'
import type { GatewayConfig } from './config.ts'
import { openDb, type Db } from './db.ts'
import { DeviceRegistry } from './device-registry.ts'
import { Ingest } from './ingest.ts'
import type { Logger } from './log.ts'
import { createMetrics, type GatewayMetrics } from './metrics.ts'
import { OpsServer } from './http-server.ts'
import { Outbox } from './outbox.ts'

export interface GatewayPorts extends BrokerPorts { http: number | null }

export class Gateway {
  readonly metrics: GatewayMetrics
  db!: Db
  outbox!: Outbox
  registry!: DeviceRegistry
  ingest!: Ingest
  broker!: Broker
  private ops: OpsServer | null = null
  private state: 'new' | 'starting' | 'running' | 'closing' | 'closed' = 'new'
  private closing: Promise<void> | null = null
  ports: GatewayPorts | null = null

  constructor (readonly config: GatewayConfig, private readonly log: Logger, opts: { defaultMetrics?: boolean } = {}) {
    this.metrics = createMetrics({
      ...opts,
      oldestAgeSeconds: () => {
        const ts = this.state === 'running' ? this.outbox.oldestIngestTs() : null
        return ts === null ? 0 : (Date.now() - ts) / 1000
      },
    })
  }

  async start (): Promise<GatewayPorts> {
    if (this.state !== 'new') throw new Error(`gateway already ${this.state}`)
    this.state = 'starting'
    const cfg = this.config
    const t0 = performance.now()
    this.db = openDb(cfg.dataDir, cfg.outbox.durability)
    this.outbox = new Outbox(this.db, cfg.outbox, this.log.child({ component: 'outbox' }), this.metrics)
    this.outbox.start()
    this.registry = new DeviceRegistry(this.db)
    this.ingest = new Ingest(this.outbox, this.metrics, cfg.mqtt.maxPayloadBytes)
    this.broker = new Broker(cfg.mqtt, this.registry, this.ingest, this.log.child({ component: 'broker' }), this.metrics)
    const brokerPorts = await this.broker.start()
    let http: number | null = null
    if (cfg.http.port !== null) {
      this.ops = new OpsServer(this.metrics.registry, { ready: () => this.readiness() })
      http = await this.ops.start(cfg.http.host, cfg.http.port)
    }
    this.ports = { ...brokerPorts, http }
    this.state = 'running'
    const stats = this.outbox.stats()
    this.log.info({ ports: this.ports, outboxEvents: stats.events, outboxBytes: stats.bytes, durability: cfg.outbox.durability, durationMs: Math.round(performance.now() - t0) }, 'gateway started')
    if (cfg.portsFile) writeFileSync(cfg.portsFile, JSON.stringify(this.ports))
    return this.ports
  }

  private readiness (): { ready: boolean, detail: Record<string, unknown> } {
    const s = this.outbox.stats()
    return { ready: this.state === 'running', detail: { state: this.state, outboxEvents: s.events, outboxBytes: s.bytes, pending: s.pending } }
  }

  /** Graceful: stop accepting, commit what is queued, close the database. Idempotent. */
  close (): Promise<void> {
    if (this.closing) return this.closing
    this.closing = (async () => {
      this.state = 'closing'
      await this.broker?.close()
      this.outbox?.close()
      await this.ops?.close()
      this.db?.close()
      this.state = 'closed'
      this.log.info('gateway closed')
    })()
    return this.closing
  }

  /** Immediate: refuse what is queued (nothing unacknowledged is lost: devices resend) and close. */
  destroy (err?: Error): void {
    this.state = 'closed'
    this.outbox?.destroy(err)
    void this.broker?.close()
    void this.ops?.close()
    if (this.db?.open) this.db.close()
  }
}
