// The cloud process as one component (the composition): NATS connection, provisioning, view store,
// aggregator, and the API with the NATS-backed pieces it is handed (JetStream client for commands,
// the RULES bucket, live events over the VIEWS bucket). Starts in dependency order and closes in
// reverse. Nothing is touched (NATS, ports) before the whole configuration is validated and the
// console login is ready.
import { readFileSync } from 'node:fs'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { connect, credsAuthenticator, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node'
import { CLOUD_BUCKETS } from '../proto/index.ts'
import { Aggregator } from './apply/aggregator.ts'
import { ApiServer } from './http/api.ts'
import { ConsoleAuth } from './http/auth.ts'
import { LiveEvents } from './http/live-events.ts'
import { parseCloudConfig, type CloudConfig } from './config.ts'
import { CloudError } from './errors.ts'
import { consoleCredentials } from './http/generated-password.ts'
import { allowedHostNames } from './http/host-guard.ts'
import type { Logger } from './log.ts'
import { createCloudMetrics, type CloudMetrics } from './metrics.ts'
import { LeaseTable } from './partitions/lease-table.ts'
import { checkPartitionMapping, type MappingState } from './partitions/mapping-check.ts'
import { readReplicas, type ReplicasView } from './partitions/replicas-view.ts'
import { provisionStreams } from './provision.ts'
import { provisionViews } from './provision.ts'
import { openFleetStore } from './apply/tiers/tier-store.ts'
import type { TierRetention } from './apply/tiers/tiers.ts'
import type { ViewStore } from './store/view-store.ts'
import { FleetViews } from './views/views.ts'
import { RawEvents } from './views/raw-events.ts'
import { Lifecycle } from '../lib/lifecycle.ts'

export interface CloudPorts { http: number | null }

/** The rollup tiers' retention from the config (retention.rollup1mMs ...). */
export const retentionOf = (c: CloudConfig): TierRetention => ({ '1m': c.retention.rollup1mMs, '5m': c.retention.rollup5mMs, '1h': c.retention.rollup1hMs })

function readConfigFile (key: string, file: string): Buffer {
  try {
    return readFileSync(file)
  } catch (err) {
    throw new CloudError('CLOUD_ERR_CONFIG', `invalid cloud config: ${key}: cannot read ${file}: ${(err as Error).message}`, { cause: err })
  }
}

export class Cloud extends Lifecycle {
  readonly metrics: CloudMetrics
  nc: NatsConnection | null = null
  store: ViewStore | null = null
  aggregator: Aggregator | null = null
  views: FleetViews | null = null
  api: ApiServer | null = null
  live: LiveEvents | null = null
  /** What the start-up check found of the NATS server's partition mapping. */
  mapping: MappingState | null = null

  constructor (private readonly config: CloudConfig, private readonly log: Logger, opts: { defaultMetrics?: boolean } = {}) {
    super()
    this.metrics = createCloudMetrics({ defaultMetrics: opts.defaultMetrics })
  }

  /**
   * Runs the (idempotent) provisioning, again while it fails with a retryable CloudError (e.g. "no
   * suitable peers for placement" while a 3-node cluster is still forming), for at most retryMs.
   */
  private async provisioned (retryMs: number, provision: () => Promise<void>): Promise<void> {
    const deadline = Date.now() + retryMs
    for (let attempt = 1, delayMs = 250; ; attempt++, delayMs = Math.min(delayMs * 2, 5000)) {
      try {
        return await provision()
      } catch (err) {
        if (!(err instanceof CloudError) || !err.retryable || Date.now() + delayMs > deadline) throw err
        this.log.warn({ err, attempt, delayMs }, 'provisioning failed: trying again')
        await new Promise((resolve) => setTimeout(resolve, delayMs))
      }
    }
  }

  async start (): Promise<CloudPorts> {
    // Validated again: a config built or edited in code (main.ts swaps in the embedded server's URL)
    // fails here, before any side effect, with the key it gets wrong.
    const c = parseCloudConfig(this.config)
    // noAsyncTraces: the client otherwise captures a stack trace (two Error objects) for every
    // request, i.e. every KV get and put of the apply: about a tenth of the aggregator's CPU.
    // Errors keep their messages and codes; they lose the caller's async stack.
    const nopts: NodeConnectionOptions = { servers: c.nats.servers, name: 'iot-cloud', maxReconnectAttempts: -1, user: c.nats.user, pass: c.nats.pass, token: c.nats.token, noAsyncTraces: true }
    if (c.nats.credsFile) nopts.authenticator = credsAuthenticator(readConfigFile('nats.credsFile', c.nats.credsFile))
    if (c.nats.tls) nopts.tls = { caFile: c.nats.tls.caFile, certFile: c.nats.tls.certFile, keyFile: c.nats.tls.keyFile }
    // The login before NATS: a bad state directory stops the start with nothing provisioned.
    const consoleLog = this.log.child({ component: 'console' })
    const consoleAuth = c.http.port === null ? null : await ConsoleAuth.create(await consoleCredentials(c.console, consoleLog), { registry: this.metrics.registry, log: consoleLog })
    this.nc = await connect(nopts)
    const retention = retentionOf(c)
    const nc = this.nc
    await this.provisioned(c.provisionRetryMs, async () => {
      await provisionStreams(nc, { replicas: c.replicas, duplicateWindowMs: c.duplicateWindowMs, maxAgeMs: c.streamMaxAgeMs })
      await provisionViews(nc, { replicas: c.replicas, bucket: c.viewsBucket, retention })
    })
    const { store, views: viewsKv } = await openFleetStore(this.nc, c.viewsBucket)
    this.store = store
    const views = this.views = new FleetViews(store, { offlineTimeoutMs: c.offlineTimeoutMs, drainStuckMs: c.drainStuckMs })
    this.metrics.setFleetSource(() => views.gateways())
    if (c.aggregator.enabled) {
      this.mapping = await checkPartitionMapping(this.nc, c.aggregator.partitions)
      if (this.mapping.state === 'unmapped') {
        this.log.warn({ partitions: c.aggregator.partitions }, 'the NATS server does not partition iot.*.telemetry / iot.*.events: every batch goes to the unmapped partition, applied by one replica at a time (no scale-out); add the mapping of deploy/nats/accounts.conf')
      }
      const { enabled: _, ...aopts } = c.aggregator
      this.aggregator = new Aggregator(this.nc, this.store, this.metrics, this.log.child({ component: 'aggregator' }), { ...aopts, bucketReplicas: c.replicas, retention })
      await this.aggregator.start()
    }
    let http: number | null = null
    if (c.http.port !== null && consoleAuth) {
      const js = jetstream(this.nc)
      // Provisioned above (provisionStreams); commands and rule sets go through the same client.
      const rules = await new Kvm(js).open(CLOUD_BUCKETS.rules)
      this.live = new LiveEvents(viewsKv.kv, this.views, this.log.child({ component: 'live-events' }))
      const allowedHosts = allowedHostNames(c.http.host, c.http.allowedHosts)
      // Any replica lists every replica: the lease table is read, never this process's memory.
      const a = c.aggregator
      const table = await LeaseTable.open(this.nc, { bucket: CLOUD_BUCKETS.leases, group: a.durablePrefix, ttlMs: a.leaseTtlMs })
      const replicas = (): Promise<ReplicasView> => readReplicas(table, a.partitions, a.leaseTtlMs)
      const raw = new RawEvents(js, await jetstreamManager(this.nc))
      this.api = new ApiServer({ views: this.views, registry: this.metrics.registry, log: this.log, ready: () => this.ready(), auth: consoleAuth, allowedHosts, js, rules, live: this.live, replicas, raw })
      http = await this.api.start(c.http.host, c.http.port)
    }
    this.log.info({ http, servers: c.nats.servers, replicas: c.replicas }, 'cloud started')
    return { http }
  }

  ready (): { ready: boolean, detail: Record<string, unknown> } {
    const nats = this.nc !== null && !this.nc.isClosed()
    const aggregator = this.aggregator ? this.aggregator.ready() : null
    const partitions = this.aggregator ? { mapping: this.mapping?.state ?? null, ...this.aggregator.partitions() } : null
    return { ready: nats && aggregator !== false && !this.isClosing, detail: { nats, aggregator, partitions, stats: this.aggregator?.stats() } }
  }

  /**
   * Reverse order: live streams (ended, so that the API's close does not wait on them), API,
   * aggregator (finishes and acks its group), store, NATS (drained).
   */
  protected async onClose (): Promise<void> {
    this.metrics.setFleetSource(null)
    await this.live?.close()
    await this.api?.close()
    await this.aggregator?.close()
    await this.store?.close()
    if (this.nc && !this.nc.isClosed()) await this.nc.drain().catch(() => this.nc?.close())
    this.log.info('cloud closed')
  }

  protected onDestroy (err?: Error): void {
    this.metrics.setFleetSource(null)
    this.live?.destroy()
    this.api?.destroy()
    this.aggregator?.destroy(err)
    void this.nc?.close()
  }
}
