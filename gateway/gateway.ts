// The edge gateway: composes database, outbox, ingest, broker and the ops endpoint. Starts them in
// dependency order and closes them in reverse.
import { renameSync, writeFileSync } from 'node:fs'
import type { GatewayStatusProps } from '../proto/index.ts'
import { Broker, type BrokerPorts } from './mqtt/broker.ts'
import type { GatewayConfig } from './config.ts'
import { openDb, type Db } from './store/db.ts'
import { DeviceRegistry } from './store/device-registry.ts'
import { Ingest } from './ingest/ingest.ts'
import type { Logger } from './log.ts'
import { createMetrics, type GatewayMetrics } from './metrics.ts'
import { OpsServer } from './http-server.ts'
import { Outbox } from './store/outbox.ts'
import { Checkpointer } from './store/checkpointer.ts'
import { Heartbeat } from './uplink/heartbeat.ts'
import { Replicator } from './uplink/replicator.ts'
import { UplinkLink } from './uplink/link.ts'
import { RateMeter } from './rate-meter.ts'
import { CommandTracker } from './rules/command-tracker.ts'
import { Control } from './rules/control.ts'
import { CloudChannel } from './uplink/cloud-channel.ts'
import { StallWatchdog } from './uplink/stall-watchdog.ts'
import type { IncomingControl } from './store/outbox-types.ts'
import type { FsyncFn } from './store/wal-sync.ts'
import { Lifecycle } from '../lib/lifecycle.ts'

export const VERSION = '0.1.0'

export interface GatewayPorts extends BrokerPorts { http: number | null }

export class Gateway extends Lifecycle {
  readonly metrics: GatewayMetrics
  db!: Db
  outbox!: Outbox
  private checkpointer!: Checkpointer
  registry!: DeviceRegistry
  ingest!: Ingest
  broker!: Broker
  link!: UplinkLink
  commands!: CommandTracker
  control!: Control
  private cloudChannel: CloudChannel | null = null
  private watchdog: StallWatchdog | null = null
  replicator!: Replicator
  private heartbeat: Heartbeat | null = null
  private readonly startedTs = Date.now()
  private ops: OpsServer | null = null
  /** How far start() has got; closing and closed are the lifecycle's (lib/lifecycle.ts). */
  private phase: 'new' | 'starting' | 'running' = 'new'
  ports: GatewayPorts | null = null

  private readonly fsync: FsyncFn | undefined

  /** opts.fsync: how the outbox syncs its files (tests inject one to watch the syncs; default fs.fsync). */
  constructor (readonly config: GatewayConfig, private readonly log: Logger, opts: { defaultMetrics?: boolean, fsync?: FsyncFn } = {}) {
    super()
    this.fsync = opts.fsync
    this.metrics = createMetrics({
      defaultMetrics: opts.defaultMetrics,
      oldestAgeSeconds: () => {
        const ts = this.phase === 'running' && !this.isClosing ? this.outbox.oldestIngestTs() : null
        return ts === null ? 0 : (Date.now() - ts) / 1000
      },
    })
  }

  async start (): Promise<GatewayPorts> {
    if (this.phase !== 'new' || this.isClosing) throw new Error(`gateway already ${this.state()}`)
    this.phase = 'starting'
    const cfg = this.config
    const t0 = performance.now()
    this.db = openDb(cfg.dataDir, cfg.outbox.durability)
    this.outbox = new Outbox(this.db, cfg.outbox, this.log.child({ component: 'outbox' }), this.metrics, { fsync: this.fsync })
    this.outbox.start()
    // Nothing the last run left is replicated or acknowledged (a resend of it) before it is on disk.
    await this.outbox.started()
    this.checkpointer = new Checkpointer(this.db, { file: this.db.name, intervalMs: cfg.outbox.checkpointIntervalMs, maxWalBytes: cfg.outbox.maxWalBytes, durability: cfg.outbox.durability }, this.log.child({ component: 'checkpointer' }), this.metrics)
    this.checkpointer.start()
    this.outbox.onCommit(() => this.checkpointer.afterCommit())
    this.link = new UplinkLink(cfg.uplink, cfg.gatewayId, this.log.child({ component: 'uplink' }), this.metrics)
    this.replicator = new Replicator(this.outbox.reader, this.link, cfg.uplink, cfg.gatewayId, this.log.child({ component: 'replicator' }), this.metrics)
    this.replicator.start()
    this.registry = new DeviceRegistry(this.db)
    // The control path, in dependency order: commands, rules, ingest, broker. The tracker publishes
    // through the broker made after it, by a callback that runs only once commands are sent.
    const recordControl = (ev: IncomingControl): void => this.outbox.appendControl(ev, (err) => {
      if (err) this.log.error({ err, kind: ev.kind }, 'control event not recorded')
    })
    this.commands = new CommandTracker(cfg.commands, { publish: (deviceId, payload, command) => this.broker.publishCommand(deviceId, payload, command), record: recordControl }, this.log.child({ component: 'commands' }), this.metrics)
    this.control = new Control(cfg.rules, this.commands, recordControl, this.log.child({ component: 'rules' }), this.metrics)
    this.ingest = new Ingest(this.outbox, this.control, this.metrics, cfg.mqtt.maxPayloadBytes)
    this.broker = new Broker(cfg.mqtt, this.registry, this.ingest, this.commands, this.log.child({ component: 'broker' }), this.metrics)
    this.control.start()
    const brokerPorts = await this.broker.start()
    let http: number | null = null
    if (cfg.http.port !== null) {
      this.ops = new OpsServer(this.metrics.registry, { ready: () => this.readiness() })
      http = await this.ops.start(cfg.http.host, cfg.http.port)
    }
    this.ports = { ...brokerPorts, http }
    // The uplink starts last and in the background: ingest never waits for the cloud.
    this.link.start()
    const ingestRate = new RateMeter(() => this.outbox.stats().events + this.outbox.stats().shedEvents + this.replicator.ackedEvents)
    const uplinkRate = new RateMeter(() => this.replicator.ackedEvents)
    this.heartbeat = new Heartbeat(this.link, cfg.gatewayId, cfg.uplink.heartbeatMs, () => this.status(ingestRate.rate(), uplinkRate.rate()), this.log.child({ component: 'heartbeat' }))
    this.heartbeat.start()
    this.cloudChannel = new CloudChannel(this.link, cfg.gatewayId, {
      loadRules: (text) => this.control.load(text, 'cloud'),
      command: (cmd) => { this.commands.fromCloud(cmd) },
    }, { verifyMs: cfg.uplink.channelVerifyMs, retryMinMs: cfg.uplink.reconnectMinMs, retryMaxMs: cfg.uplink.reconnectMaxMs }, this.log.child({ component: 'cloud-channel' }), this.metrics)
    this.cloudChannel.start()
    this.watchdog = new StallWatchdog(cfg.uplink, this.link, () => ({ lastAckTs: this.replicator.lastAckTs, waiting: this.outbox.stats().events > 0 }), this.log.child({ component: 'uplink' }), this.metrics)
    this.watchdog.start()
    this.phase = 'running'
    const stats = this.outbox.stats()
    this.log.info({ ports: this.ports, outboxEvents: stats.events, outboxBytes: stats.bytes, durability: cfg.outbox.durability, durationMs: Math.round(performance.now() - t0) }, 'gateway started')
    if (cfg.portsFile) {
      // Written whole then renamed, so a reader never sees a half-written file.
      writeFileSync(`${cfg.portsFile}.tmp`, JSON.stringify(this.ports))
      renameSync(`${cfg.portsFile}.tmp`, cfg.portsFile)
    }
    return this.ports
  }

  /** The status a heartbeat carries. */
  status (ingestPerSec = 0, uplinkPerSec = 0): GatewayStatusProps {
    const s = this.outbox.stats()
    const oldest = this.outbox.oldestIngestTs()
    return {
      gatewayId: this.config.gatewayId,
      tsMs: Date.now(),
      version: VERSION,
      linkState: this.link.state,
      backlogEvents: s.events,
      backlogBytes: s.bytes,
      oldestUnsentAgeMs: oldest === null ? 0 : Math.max(0, Date.now() - oldest),
      ingestEventsPerSec: ingestPerSec,
      uplinkEventsPerSec: uplinkPerSec,
      connectedDevices: this.broker.aedes.connectedClients,
      shedEventsTotal: s.shedEvents,
      rejectedTotal: this.metrics.totals.rejected,
      quarantinedTotal: this.metrics.totals.quarantined,
      startedTsMs: this.startedTs,
      lastAckTsMs: this.replicator.lastAckTs,
      lastError: this.link.lastError,
      cloudChannelState: this.cloudChannel?.state ?? 'detached',
      cloudChannelError: this.cloudChannel?.lastError ?? '',
      uplinkStalled: this.watchdog?.stalled ?? false,
      uplinkStallsTotal: this.watchdog?.stalls ?? 0,
      ruleSetVersion: this.control.version,
      decisionP99Ms: this.control.decisionP99(),
    }
  }

  private readiness (): { ready: boolean, detail: Record<string, unknown> } {
    const s = this.outbox.stats()
    return { ready: this.phase === 'running' && !this.isClosing, detail: { state: this.state(), outboxEvents: s.events, outboxBytes: s.bytes, pending: s.pending, uplink: { link: this.link.state, lastError: this.link.lastError, stalled: this.watchdog?.stalled ?? false, stalls: this.watchdog?.stalls ?? 0, ...this.replicator.stats() }, cloudChannel: { state: this.cloudChannel?.state ?? 'detached', lastError: this.cloudChannel?.lastError ?? '' } } }
  }

  private state (): string { return this.isClosing ? this.lifecycleState : this.phase }

  /** Graceful: stop accepting, commit what is queued, close the database; parts close in reverse order of start. */
  protected async onClose (): Promise<void> {
    await this.broker?.close()
    await this.control?.close()
    await this.commands?.close()
    await this.cloudChannel?.close()
    await this.watchdog?.close()
    await this.outbox?.close()
    await this.heartbeat?.close()
    await this.replicator?.close()
    await this.link?.close()
    await this.ops?.close()
    await this.checkpointer?.close()
    this.db?.close()
    this.log.info('gateway closed')
  }

  /** Immediate: refuse what is queued (nothing unacknowledged is lost: devices resend) and close. */
  protected onDestroy (err?: Error): void {
    for (const part of [this.control, this.commands, this.cloudChannel, this.watchdog, this.outbox, this.heartbeat, this.replicator, this.link, this.broker, this.ops, this.checkpointer]) part?.destroy(err)
    if (this.db?.open) this.db.close()
  }
}
