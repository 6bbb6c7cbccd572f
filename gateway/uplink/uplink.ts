// The uplink as the main thread sees it: it runs the uplink thread (uplink-thread.ts), mirrors its
// state for /readyz, the heartbeat and the metrics, does the writes the thread asks for on the
// outbox's connection (store/inflight-ledger.ts), hands rule sets and commands from the cloud on, and
// starts the thread again if it fails. Nothing here waits for the cloud: the broker's loop only
// posts and receives messages.
import { Worker } from 'node:worker_threads'
import type { GatewayStatusProps } from '../../proto/index.ts'
import type { CloudCommand } from '../../proto/command.ts'
import type { GatewayConfig } from '../config.ts'
import type { Logger } from '../log.ts'
import type { GatewayMetrics } from '../metrics.ts'
import type { Outbox } from '../store/outbox.ts'
import { Lifecycle } from '../../lib/lifecycle.ts'
import { backoffMs, type LinkState } from './link.ts'
import { EMPTY_TOTALS, type DeliveryTotals } from './delivery-ledger.ts'
import type { ReplicatorStats } from './replicator.ts'
import type { FromThread, ToThread, UplinkSnapshot, UplinkThreadData } from './thread-messages.ts'

/** Where what the cloud sends goes (gateway.ts: the rules and the command tracker). */
export interface UplinkInbox {
  loadRules: (text: string) => Error | null
  command: (cmd: CloudCommand) => void
}

const EMPTY: UplinkSnapshot = {
  link: { state: 'down', lastError: '', server: null, tlsRequired: false },
  channel: { state: 'detached', lastError: '' },
  watchdog: { stalled: false, stalls: 0 },
  replicator: { inFlight: 0, retry: 0, lastAckTs: 0, backlogRanges: 0, liveCursor: 0, throttledForMs: 0, retryPending: false },
  delivery: EMPTY_TOTALS,
}

/** The uplink thread's old-generation heap limit (MB): batches in flight take a few MB. */
const THREAD_HEAP_MB = 96
/** How long close() waits for the thread beyond its publish timeout. */
const CLOSE_GRACE_MS = 3000
/** How long /metrics waits for the thread's part (a busy or blocked thread's part is left out). */
const METRICS_TIMEOUT_MS = 250
// The thread's TypeScript source when the gateway runs from sources, its JavaScript when compiled.
const ENTRY = new URL(`./uplink-thread${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url).href

export class Uplink extends Lifecycle {
  private worker: Worker | null = null
  /** The thread has started (its first snapshot arrived): it answers requests. */
  private running = false
  private snap: UplinkSnapshot = EMPTY
  private readonly listeners: Array<(state: LinkState) => void> = []
  private restarts = 0
  private restartTimer: NodeJS.Timeout | null = null
  private nextId = 1
  private readonly metricsWaiting = new Map<number, (text: string) => void>()
  private threadClosed: (() => void) | null = null
  /** Why the thread last failed ('' while it runs as it should). */
  private threadError = ''
  /** Events acknowledged by JetStream and deleted from the outbox since start. */
  ackedEvents = 0

  constructor (
    private readonly config: GatewayConfig,
    private readonly outbox: Outbox,
    private readonly inbox: UplinkInbox,
    private readonly log: Logger,
    private readonly metrics: GatewayMetrics,
  ) {
    super()
  }

  get state (): LinkState { return this.snap.link.state }
  get lastError (): string { return this.threadError || this.snap.link.lastError }
  /** The NATS server the link is connected to (host:port), or null. */
  get server (): string | null { return this.snap.link.server }
  get tlsRequired (): boolean { return this.snap.link.tlsRequired }
  get channel (): UplinkSnapshot['channel'] { return this.snap.channel }
  get stalled (): boolean { return this.snap.watchdog.stalled }
  get stalls (): number { return this.snap.watchdog.stalls }
  get lastAckTs (): number { return this.snap.replicator.lastAckTs }
  /** The per-device delivery ledger summed over devices (/readyz `delivery`). */
  get delivery (): DeliveryTotals { return this.snap.delivery }

  stats (): ReplicatorStats & { ackedEvents: number, threadRestarts: number } {
    return { ...this.snap.replicator, ackedEvents: this.ackedEvents, threadRestarts: this.restarts }
  }

  onState (listener: (state: LinkState) => void): void { this.listeners.push(listener) }

  /** Starts the thread; it connects in the background (ingest never waits for the cloud). */
  start (): void {
    if (this.worker || this.isClosing || this.config.uplink.servers.length === 0) return
    const data: UplinkThreadData = {
      entry: ENTRY,
      gatewayId: this.config.gatewayId,
      logLevel: this.config.logLevel,
      uplink: this.config.uplink,
      dbFile: this.outbox.dbFile,
      epoch: this.outbox.epoch,
      durable: this.outbox.durableMark(),
      ...this.outboxTotals(),
    }
    // A heap limit: a thread that runs away is stopped (ERR_WORKER_OUT_OF_MEMORY) and started again
    // like after any failure, instead of taking the gateway's memory with it.
    const worker = new Worker(new URL('./thread-boot.mjs', import.meta.url), { workerData: data, name: 'uplink', resourceLimits: { maxOldGenerationSizeMb: THREAD_HEAP_MB } })
    worker.on('message', (m: FromThread) => this.onMessage(m))
    worker.on('error', (err) => this.failed(worker, err))
    worker.on('exit', (code) => this.failed(worker, new Error(`uplink thread exited with code ${code}`)))
    this.worker = worker
  }

  /** The outbox committed or deleted: the thread may read further. */
  outboxChanged (): void {
    this.post({ t: 'outbox', durable: this.outbox.durableMark(), ...this.outboxTotals() })
  }

  private outboxTotals (): { events: number, shedEvents: number } {
    const { events, shedEvents } = this.outbox.stats()
    return { events, shedEvents }
  }

  /** The status that the next heartbeats carry (the thread fills in its own fields). */
  status (status: GatewayStatusProps): void {
    this.post({ t: 'status', status })
  }

  /** The thread's metrics in Prometheus text ('' while it does not run or does not answer in time). */
  metricsText (): Promise<string> {
    if (!this.worker || !this.running) return Promise.resolve('')
    const id = this.nextId++
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.metricsWaiting.delete(id); resolve('') }, METRICS_TIMEOUT_MS)
      this.metricsWaiting.set(id, (text) => { clearTimeout(timer); resolve(text) })
      this.post({ t: 'metrics', id })
    })
  }

  /** Fault injection (tests): terminates the thread at once, as a crash would; it is started again as after any failure. */
  kill (): void {
    void this.worker?.terminate()
  }

  /** Fault injection (tests): blocks the thread completely (no NATS, no timers) until the returned function is called. */
  hold (): () => void {
    const flag = new Int32Array(new SharedArrayBuffer(4))
    this.post({ t: 'hold', flag: flag.buffer as SharedArrayBuffer })
    return () => { Atomics.store(flag, 0, 1); Atomics.notify(flag, 0) }
  }

  private post (m: ToThread): void {
    this.worker?.postMessage(m)
  }

  private onMessage (m: FromThread): void {
    switch (m.t) {
      case 'record': {
        let reply: ToThread
        try {
          reply = { t: 'recorded', id: m.id, recorded: this.outbox.ledger.record(m.batches) }
        } catch (err) {
          this.log.error({ err }, 'uplink batches not recorded')
          reply = { t: 'recordFailed', id: m.id, message: (err as Error).message }
        }
        this.post(reply)
        break
      }
      case 'ack':
        this.ackedEvents += this.outbox.ledger.ack(m.batch).events
        this.mirror(m.snapshot)
        this.outboxChanged()
        break
      case 'snapshot':
        this.mirror(m.snapshot)
        break
      case 'rules': {
        const err = this.inbox.loadRules(m.text)
        if (err) this.log.error({ err, revision: m.revision }, 'rule set from the cloud refused')
        break
      }
      case 'command':
        this.inbox.command(m.command)
        break
      case 'log':
        this.relog(m.line)
        break
      case 'metrics':
        this.metricsWaiting.get(m.id)?.(m.text)
        this.metricsWaiting.delete(m.id)
        break
      case 'closed':
        this.mirror(m.snapshot)
        this.threadClosed?.()
        break
    }
  }

  private mirror (s: UplinkSnapshot): void {
    this.running = this.worker !== null
    this.metrics.uplinkThreadUp.set(this.running ? 1 : 0)
    const before = this.snap.link.state
    this.snap = s
    if (s.link.state === 'up') this.threadError = ''
    if (s.link.state !== before) for (const l of this.listeners) l(s.link.state)
  }

  // A line of the thread's logger, logged again by this thread's logger at its level.
  private relog (line: string): void {
    try {
      const { level, msg, time: _time, pid: _pid, hostname: _host, gatewayId: _gw, ...fields } = JSON.parse(line) as Record<string, unknown> & { level: number, msg?: string }
      const label = this.log.levels.labels[level] as 'info' | 'warn' | 'error' | 'debug' | 'trace' | 'fatal' | undefined
      this.log[label ?? 'info'](fields, msg ?? '')
    } catch {
      this.log.info({ line }, 'uplink thread log line')
    }
  }

  // The thread died (an uncaught error, out of memory, killed): its state is in the outbox (batches
  // in flight are recorded before they go), so a new thread re-sends them with their ids. Ingest and
  // decisions never stopped.
  private failed (worker: Worker, err: Error): void {
    if (this.worker !== worker) return
    this.worker = null
    this.running = false
    this.metrics.uplinkThreadUp.set(0)
    if (this.isClosing) { this.threadClosed?.(); return }
    this.restarts++
    this.metrics.uplinkThreadRestarts.inc()
    const wait = backoffMs(Math.min(this.restarts - 1, 10), this.config.uplink.reconnectMinMs, this.config.uplink.reconnectMaxMs)
    this.threadError = `uplink thread failed: ${err.message}`
    this.mirror({ ...EMPTY, watchdog: this.snap.watchdog })
    this.log.error({ err, restartInMs: wait, restarts: this.restarts }, 'uplink thread failed; starting it again (ingest and decisions go on)')
    for (const resolve of this.metricsWaiting.values()) resolve('')
    this.metricsWaiting.clear()
    this.restartTimer = setTimeout(() => { this.restartTimer = null; this.start() }, wait)
  }

  /** Asks the thread to close (it waits, bounded, for the batches in flight) and waits for it. Idempotent. */
  protected async onClose (): Promise<void> {
    if (this.restartTimer) clearTimeout(this.restartTimer)
    const worker = this.worker
    if (!worker) return
    // The thread waits up to publishTimeoutMs for its batches in flight; a thread that does not
    // answer by then and a little more is stopped (what it had in flight is re-sent by the next run).
    await new Promise<void>((resolve) => {
      const deadline = setTimeout(resolve, this.config.uplink.publishTimeoutMs + CLOSE_GRACE_MS)
      this.threadClosed = () => { clearTimeout(deadline); resolve() }
      worker.postMessage({ t: 'close' } satisfies ToThread)
    })
    this.worker = null
    this.running = false
    await worker.terminate()
    this.metrics.uplinkThreadUp.set(0)
  }

  protected onDestroy (): void {
    if (this.restartTimer) clearTimeout(this.restartTimer)
    void this.worker?.terminate()
    this.worker = null
    this.running = false
    this.metrics.uplinkThreadUp.set(0)
  }
}
