// The soak's child processes: gateways and aggregator replicas, each a process that can be killed
// with SIGKILL and started again on the same data directory and the same ports. Every PID started is
// tracked, so that the soak can stop them all, also when it fails or is interrupted.
import { spawn, type ChildProcess } from 'node:child_process'
import { scrapeMetrics, spawnGateway, type ChildGateway } from '../devkit/index.ts'
import { waitFor } from '../lib/wait-for.ts'
import { nodeArgsFor, SOURCE_ROOT } from '../lib/node-entry.ts'

const ROOT = SOURCE_ROOT
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Every child process alive, by PID: the last resort of the soak's cleanup. */
export const livePids = new Set<number>()

/** SIGKILLs every tracked child (on exit, when nothing else could stop them). */
export function killAllTracked (): void {
  for (const pid of livePids) { try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ } }
  livePids.clear()
}

function trackChild (child: ChildProcess): void {
  if (child.pid === undefined) return
  const pid = child.pid
  livePids.add(pid)
  child.once('exit', () => livePids.delete(pid))
}

const gone = (c: ChildProcess | null): boolean => !c || c.exitCode !== null || c.signalCode !== null

/** Sends `signal`, waits for the exit, SIGKILL after graceMs. */
async function stopChild (child: ChildProcess | null, exited: Promise<unknown> | null, signal: NodeJS.Signals, graceMs = 10000): Promise<void> {
  if (!child || gone(child)) return
  child.kill(signal)
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
  await exited
  clearTimeout(timer)
}

/** Retries `start` while the old ports are still held (after a kill) for up to 20 s. */
async function retryAddrInUse (start: () => Promise<void>): Promise<void> {
  const deadline = Date.now() + 20000
  for (;;) {
    try { return await start() } catch (err) {
      if (!/EADDRINUSE|address already in use/i.test((err as Error).message) || Date.now() > deadline) throw err
      await sleep(250)
    }
  }
}

/** A gateway child process on a data directory; restarts keep its MQTT and HTTP ports. */
export class GatewayProc {
  mqtt = 0
  http = 0
  lives = 0
  private gw: ChildGateway | null = null
  /** Output tails of earlier lives (the last few), for a failure report. */
  private readonly tails: string[] = []

  constructor (readonly gatewayId: string, readonly dataDir: string, private readonly sets: string[]) {}

  get running (): boolean { return this.gw !== null && !gone(this.gw.child) }

  async start (): Promise<void> {
    await retryAddrInUse(async () => {
      this.gw = await spawnGateway(this.dataDir, [`gatewayId=${this.gatewayId}`, ...this.sets], { mqttPort: this.mqtt, httpPort: this.http, timeoutMs: 30000 })
    })
    trackChild(this.gw!.child)
    this.lives++
    this.mqtt = this.gw!.ports.mqtt
    this.http = this.gw!.ports.http ?? 0
  }

  /** A power cut: SIGKILL, then wait for the exit. */
  async kill (): Promise<void> {
    if (!this.gw) return
    await this.gw.kill('SIGKILL')
    this.keepTail()
  }

  /** A graceful stop (SIGTERM, SIGKILL after 15 s). */
  async stop (): Promise<void> {
    if (!this.gw) return
    await stopChild(this.gw.child, this.gw.exited, 'SIGTERM', 15000)
    this.keepTail()
  }

  output (): string { return [...this.tails, this.gw?.stderr() ?? ''].join('\n--- restart ---\n').slice(-6000) }

  private keepTail (): void {
    const t = this.gw?.stderr()
    this.gw = null
    if (t) { this.tails.push(t.slice(-3000)); if (this.tails.length > 3) this.tails.shift() }
  }

  /** Events buffered in the outbox (committed and pending); null when the gateway does not answer. */
  async backlog (): Promise<number | null> {
    const v = await scrapeMetrics(this.http, ['gateway_outbox_events', 'gateway_outbox_pending'])
    return v === null ? null : v.get('gateway_outbox_events')! + v.get('gateway_outbox_pending')!
  }
}

/** An aggregator replica (cloud/main.ts: aggregator and API) as a child process on a fixed HTTP port. */
export class ReplicaProc {
  private child: ChildProcess | null = null
  private exited: Promise<void> | null = null
  private tail = ''
  lives = 0

  /** extraSets: more `--set key=value` flags, after the defaults (so they win). */
  constructor (readonly name: string, readonly httpPort: number, private readonly natsUrls: string[], private readonly passwordHash: string, private readonly extraSets: string[] = []) {}

  get api (): string { return `http://127.0.0.1:${this.httpPort}` }
  get running (): boolean { return !gone(this.child) }

  /** Starts that failed and were retried (a supervisor's restart): the cloud exits when NATS times out at its start. */
  readonly failedStarts: string[] = []

  async start (): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await retryAddrInUse(() => this.spawnOnce())
        break
      } catch (err) {
        if (attempt >= 5) throw err
        this.failedStarts.push((err as Error).message.slice(0, 300))
        await sleep(1000)
      }
    }
    this.lives++
  }

  private async spawnOnce (): Promise<void> {
    const sets = [`nats.servers=${this.natsUrls.join(',')}`, 'replicas=3', 'http.host=127.0.0.1', `http.port=${this.httpPort}`, 'logLevel=warn', 'offlineTimeoutMs=5000', ...this.extraSets]
    const child = spawn(process.execPath, [...nodeArgsFor('cloud/main.ts'), ...sets.flatMap((s) => ['--set', s])], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      // The hash, not the password, and in the environment rather than on the command line.
      env: { ...process.env, IOT_CLOUD_CONSOLE__PASSWORD_HASH: this.passwordHash },
    })
    trackChild(child)
    const keep = (d: Buffer): void => { this.tail = (this.tail + d.toString()).slice(-8000) }
    child.stdout!.on('data', keep)
    child.stderr!.on('data', keep)
    this.child = child
    this.exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    const ready = async (): Promise<'ready' | 'exited' | false> => {
      if (gone(child)) return 'exited'
      try {
        return (await fetch(`${this.api}/readyz`, { signal: AbortSignal.timeout(2000) })).status === 200 ? 'ready' : false
      } catch { return false }
    }
    let state: 'ready' | 'exited' | 'timeout'
    try {
      state = (await waitFor(ready, `replica ${this.name} to be ready`, 60000, 200)) as 'ready' | 'exited'
    } catch { state = 'timeout' }
    if (state !== 'ready') {
      await stopChild(child, this.exited, 'SIGKILL')
      throw new Error(`replica ${this.name} ${state === 'exited' ? `exited (${child.exitCode ?? child.signalCode})` : 'not ready within 60 s'}: ${this.tail.slice(-2000)}`)
    }
  }

  get pid (): number | null { return gone(this.child) ? null : this.child!.pid ?? null }
  async kill (): Promise<void> { await stopChild(this.child, this.exited, 'SIGKILL') }
  async stop (): Promise<void> { await stopChild(this.child, this.exited, 'SIGTERM') }
  output (): string { return this.tail }
}
