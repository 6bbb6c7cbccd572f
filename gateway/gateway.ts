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
import { Uplink } from './uplink/uplink.ts'
import { RateMeter } from './rate-meter.ts'
import { CommandTracker } from './rules/command-tracker.ts'
import { Control } from './rules/control.ts'
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
  /** The link to the cloud, in a thread of its own (uplink/uplink-thread.ts); this is its mirror. */
  uplink!: Uplink
  commands!: CommandTracker
  control!: Control
  private statusTimer: NodeJS.Timeout | null = null
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
    // What the cloud sends goes to the rules and the command tracker, made below.
    this.uplink = new Uplink(cfg, this.outbox, {
      loadRules: (text) => this.control.load(text, 'cloud'),
      command: (cmd) => { this.commands.fromCloud(cmd) },
    }, this.log.child({ component: 'uplink' }), this.metrics)
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
      this.ops = new OpsServer(async () => {
        const [own, uplink] = await Promise.all([this.metrics.registry.metrics(), this.uplink.metricsText()])
        return uplink === '' || own.endsWith('\n') ? own + uplink : `${own}\n${uplink}`
      }, this.metrics.registry.contentType, { ready: () => this.readiness() })
      http = await this.ops.start(cfg.http.host, cfg.http.port)
    }
    this.ports = { ...brokerPorts, http }
    // The uplink starts last, in its own thread: ingest never waits for the cloud.
    this.outbox.onCommit(() => this.uplink.outboxChanged())
    this.uplink.start()
    const ingestRate = new RateMeter(() => this.outbox.stats().events + this.outbox.stats().shedEvents + this.uplink.ackedEvents)
    const uplinkRate = new RateMeter(() => this.uplink.ackedEvents)
    // The thread sends heartbeats with the latest status it was given.
    const pushStatus = (): void => this.uplink.status(this.status(ingestRate.rate(), uplinkRate.rate()))
    pushStatus()
    this.statusTimer = setInterval(pushStatus, Math.max(100, Math.floor(cfg.uplink.heartbeatMs / 2)))
    this.statusTimer.unref()
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
      linkState: this.uplink.state,
      backlogEvents: s.events,
      backlogBytes: s.bytes,
      oldestUnsentAgeMs: oldest === null ? 0 : Math.max(0, Date.now() - oldest),
      ingestEventsPerSec: ingestPerSec,
      uplinkEventsPerSec: uplinkPerSec,
      connectedDevices: this.broker.aedes.connectedClients,
      shedEventsTotal: s.shedEvents,
      rejectedTotal: this.metrics.totals.rejected,
      quarantinedTotal: this.metrics.totals.quarantined,
      quarantinedByReason: this.metrics.totals.quarantinedByReason,
      startedTsMs: this.startedTs,
      lastAckTsMs: this.uplink.lastAckTs,
      lastError: this.uplink.lastError,
      cloudChannelState: this.uplink.channel.state,
      cloudChannelError: this.uplink.channel.lastError,
      uplinkStalled: this.uplink.stalled,
      uplinkStallsTotal: this.uplink.stalls,
      ruleSetVersion: this.control.version,
      decisionP99Ms: this.control.decisionP99(),
    }
  }

  private readiness (): { ready: boolean, detail: Record<string, unknown> } {
    const s = this.outbox.stats()
    return { ready: this.phase === 'running' && !this.isClosing, detail: { state: this.state(), outboxEvents: s.events, outboxBytes: s.bytes, pending: s.pending, uplink: { link: this.uplink.state, lastError: this.uplink.lastError, stalled: this.uplink.stalled, stalls: this.uplink.stalls, ...this.uplink.stats() }, cloudChannel: this.uplink.channel, delivery: this.uplink.delivery } }
  }

  private state (): string { return this.isClosing ? this.lifecycleState : this.phase }

  /** Graceful: stop accepting, commit what is queued, close the database; parts close in reverse order of start. */
  protected async onClose (): Promise<void> {
    if (this.statusTimer) clearInterval(this.statusTimer)
    await this.broker?.close()
    await this.control?.close()
    await this.commands?.close()
    await this.outbox?.close()
    // After the outbox's last commit: the thread may still send it, and records its acks here.
    await this.uplink?.close()
    await this.ops?.close()
    await this.checkpointer?.close()
    this.db?.close()
    this.log.info('gateway closed')
  }

  /** Immediate: refuse what is queued (nothing unacknowledged is lost: devices resend) and close. */
  protected onDestroy (err?: Error): void {
    if (this.statusTimer) clearInterval(this.statusTimer)
    for (const part of [this.control, this.commands, this.outbox, this.uplink, this.broker, this.ops, this.checkpointer]) part?.destroy(err)
    if (this.db?.open) this.db.close()
  }
}
