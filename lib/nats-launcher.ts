// Runs a real nats-server with JetStream (the cloud's embedded default on a laptop, the demo, and the
// test harness): ephemeral ports read from the ports file, a
// temporary store directory, and stop/kill/restart on the same client port to inject faults.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect as tcpConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { waitFor } from './wait-for.ts'

const BIN = 'nats-server'
const MISSING = `${BIN} not found on PATH: apt-get install nats-server`
const OUTPUT_TAIL = 8000

export interface StartNatsOptions {
  /** JetStream store directory; default a temporary one removed by cleanup(). A given one is kept. */
  storeDir?: string
  /** Client port; default -1 (chosen by the server). */
  port?: number
  /** Extra nats-server config text (accounts, authorization…); command-line flags still win. */
  config?: string
  /** Extra command-line arguments, appended last. */
  args?: string[]
  /** How long to wait for the server to accept clients, in ms (default 15000). */
  startTimeoutMs?: number
}

export interface NatsServer {
  /** nats://127.0.0.1:port — stays the same across restart(). */
  readonly url: string
  readonly port: number
  /** http://127.0.0.1:port of the monitoring endpoint; changes on restart(). */
  readonly monitorUrl: string
  readonly storeDir: string
  /** PID of the running server process, or null when stopped. */
  readonly pid: number | null
  /** The last few KB of the server's stdout/stderr. */
  output: () => string
  /** SIGTERM, wait for exit, SIGKILL after timeoutMs. Idempotent. */
  stop: (timeoutMs?: number) => Promise<void>
  /** SIGKILL and wait for exit (a crash: no graceful JetStream shutdown). */
  kill: () => Promise<void>
  /** Stops if running, then starts again on the same client port and store directory. */
  restart: () => Promise<void>
  /** Stops and removes the temporary directories. Idempotent. */
  cleanup: () => Promise<void>
}

let available: boolean | undefined

/** Why nats-server cannot be used here, or undefined if it can (usable as node:test `skip`). */
export function natsServerMissing (): string | undefined {
  if (available === undefined) {
    const r = spawnSync(BIN, ['--version'], { stdio: 'ignore' })
    available = !r.error && r.status === 0
  }
  return available ? undefined : MISSING
}

/** Throws a clear error when nats-server is not on the PATH. */
export function assertNatsServer (): void {
  const missing = natsServerMissing()
  if (missing) throw new Error(missing)
}

// A safety net for a test process that dies mid-test: never leave a server behind.
const live = new Set<ChildProcess>()
let exitHook = false
function track (child: ChildProcess): void {
  live.add(child)
  if (!exitHook) {
    exitHook = true
    process.once('exit', () => { for (const c of live) c.kill('SIGKILL') })
  }
}

/** Starts nats-server with JetStream on 127.0.0.1; resolves once it accepts client connections. */
export async function startNats (opts: StartNatsOptions = {}): Promise<NatsServer> {
  assertNatsServer()
  const base = mkdtempSync(join(tmpdir(), 'nats-test-'))
  try {
    const server = new NatsServerProcess(base, opts)
    await server.start(opts.port ?? -1)
    return server
  } catch (err) {
    rmSync(base, { recursive: true, force: true })
    throw err
  }
}

interface Running { child: ChildProcess, exited: Promise<void> }

class NatsServerProcess implements NatsServer {
  port = -1
  monitorUrl = ''
  readonly storeDir: string
  private readonly portsDir: string
  private readonly configFile: string | null
  private readonly extraArgs: string[]
  private readonly startTimeoutMs: number
  private running: Running | null = null
  private tail = ''
  private cleaned = false

  constructor (private readonly base: string, opts: StartNatsOptions) {
    this.storeDir = opts.storeDir ?? join(base, 'store')
    mkdirSync(this.storeDir, { recursive: true })
    this.portsDir = join(base, 'ports')
    mkdirSync(this.portsDir)
    this.configFile = opts.config === undefined ? null : join(base, 'nats-server.conf')
    if (this.configFile) writeFileSync(this.configFile, opts.config!)
    this.extraArgs = opts.args ?? []
    this.startTimeoutMs = opts.startTimeoutMs ?? 15000
  }

  get url (): string { return `nats://127.0.0.1:${this.port}` }
  get pid (): number | null { return this.running?.child.pid ?? null }
  output (): string { return this.tail }

  /** Spawns the server on `port` (-1: ephemeral) and waits until it is ready. */
  async start (port: number): Promise<void> {
    if (this.cleaned) throw new Error('nats-server harness already cleaned up')
    if (this.running) throw new Error('nats-server already running')
    const args = ['-js', '-a', '127.0.0.1', '-p', String(port), '-m', '-1', '-sd', this.storeDir,
      '--ports_file_dir', this.portsDir, ...(this.configFile ? ['-c', this.configFile] : []), ...this.extraArgs]
    const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    const keep = (d: Buffer): void => { this.tail = (this.tail + d.toString()).slice(-OUTPUT_TAIL) }
    child.stdout!.on('data', keep)
    child.stderr!.on('data', keep)
    // 'exit' may not follow 'error' (e.g. ENOENT), so either one ends the process' life here.
    const exited = new Promise<void>((resolve) => {
      child.once('exit', () => resolve())
      child.once('error', (err) => { keep(Buffer.from(`\nspawn error: ${err.message}`)); resolve() })
    })
    track(child)
    void exited.then(() => { live.delete(child); if (this.running?.child === child) this.running = null })
    this.running = { child, exited }

    const died = exited.then(() => {
      throw new Error(`nats-server exited during start (code ${child.exitCode}, signal ${child.signalCode}):\n${this.tail}`)
    })
    died.catch(() => {})
    try {
      await Promise.race([died, this.waitReady(child)])
    } catch (err) {
      await this.kill()
      throw err
    }
  }

  private async waitReady (child: ChildProcess): Promise<void> {
    const file = join(this.portsDir, `${BIN}_${child.pid}.ports`)
    const what = (s: string): string => `${s} (output so far: ${this.tail.slice(-2000)})`
    // The file may be seen half-written: JSON.parse throws and waitFor tries again.
    const ports = await waitFor(() => JSON.parse(readFileSync(file, 'utf8')) as { nats?: string[], monitoring?: string[] },
      what(`ports file ${BIN}_${child.pid}.ports`), this.startTimeoutMs)
    const client = ports.nats?.[0]
    if (!client) throw new Error(`no client URL in ports file: ${JSON.stringify(ports)}`)
    this.port = Number(new URL(client).port)
    const mon = ports.monitoring?.[0]
    this.monitorUrl = mon ? `http://127.0.0.1:${new URL(mon).port}` : ''
    await waitFor(() => probeNats(this.port), what(`nats-server to accept clients on port ${this.port}`), this.startTimeoutMs)
  }

  async stop (timeoutMs = 10000): Promise<void> {
    const r = this.running
    if (!r) return
    r.child.kill('SIGTERM')
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), timeoutMs) })
    const late = await Promise.race([r.exited.then(() => false), timedOut])
    clearTimeout(timer)
    if (late) {
      r.child.kill('SIGKILL')
      await r.exited
    }
  }

  async kill (): Promise<void> {
    const r = this.running
    if (!r) return
    r.child.kill('SIGKILL')
    await r.exited
  }

  async restart (): Promise<void> {
    await this.stop()
    // The kernel may briefly hold the port (or a racing process took it); retry only that case.
    const deadline = Date.now() + 5000
    for (;;) {
      try {
        return await this.start(this.port)
      } catch (err) {
        if (!/address already in use/i.test((err as Error).message) || Date.now() > deadline) throw err
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    }
  }

  async cleanup (): Promise<void> {
    await this.stop()
    if (this.cleaned) return
    this.cleaned = true
    rmSync(this.base, { recursive: true, force: true })
  }
}

/** True once the port answers with a NATS INFO line (works whatever auth the server requires). */
function probeNats (port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host: '127.0.0.1', port })
    let buf = ''
    const done = (ok: boolean): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => done(false), timeoutMs)
    socket.on('data', (d: Buffer) => {
      buf += d.toString()
      if (buf.includes('\r\n')) done(buf.startsWith('INFO '))
    })
    socket.on('error', () => done(false))
    socket.on('close', () => done(false))
  })
}
