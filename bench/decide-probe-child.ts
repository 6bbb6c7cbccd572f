// The decision probe in a process of its own. The bench process polls the gateway, scrapes metrics
// and runs the background load's bookkeeping; a probe sharing that event loop adds the bench's own
// stalls to every measured decision. In its own process, the probe's timers and 'message' events
// only wait for the probe. Times cross the process boundary as epoch milliseconds
// (performance.timeOrigin + performance.now(), sub-millisecond), which is enough to select the
// triggers of a window; every latency itself is measured on the probe's one clock.
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { DecisionProbe, mergeCounts, mergeWindows, type ProbeCounts, type ProbeOptions, type ProbeWindow } from './decide-probe.ts'

const SELF = fileURLToPath(import.meta.url)

type Request =
  | { cmd: 'start', opts: ProbeOptions[] }
  | { cmd: 'stop', settleMs: number }
  | { cmd: 'window', fromEpochMs: number, toEpochMs: number }
type Reply = { ok: true, value: unknown } | { ok: false, error: string }

/** The parent's handle on a probe child: the same calls as DecisionProbe, over IPC. */
export class ProbeChild {
  private pending: ((r: Reply) => void) | null = null

  /** The probe process's PID (its CPU counts with the bench's). */
  get pid (): number { return this.child.pid! }

  private constructor (private readonly child: ChildProcess) {
    child.on('message', (r) => { const p = this.pending; this.pending = null; p?.(r as Reply) })
    child.on('exit', (code) => { const p = this.pending; this.pending = null; p?.({ ok: false, error: `probe process exited (code ${code})` }) })
  }

  /** Forks the probe and starts triggering, one sensor/actuator pair per options; resolves once every MQTT client is connected. */
  static async start (opts: ProbeOptions[]): Promise<ProbeChild> {
    const child = fork(SELF, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    const probe = new ProbeChild(child)
    try {
      await probe.call({ cmd: 'start', opts })
    } catch (err) {
      probe.close()
      throw err
    }
    return probe
  }

  private async call (req: Request): Promise<unknown> {
    if (this.pending) throw new Error('probe: one request at a time')
    const reply = new Promise<Reply>((resolve) => { this.pending = resolve })
    this.child.send(req)
    const r = await reply
    if (!r.ok) throw new Error(`probe: ${r.error}`)
    return r.value
  }

  /** Stops triggering and waits (at most settleMs) for the last commands; the process stays for window(). */
  async stop (settleMs: number): Promise<ProbeCounts> {
    return await this.call({ cmd: 'stop', settleMs }) as ProbeCounts
  }

  /** The triggers published in [from, to), given as performance.now() of this (the parent) process. */
  async window (from: number, to: number): Promise<ProbeWindow> {
    return await this.call({ cmd: 'window', fromEpochMs: performance.timeOrigin + from, toEpochMs: performance.timeOrigin + to }) as ProbeWindow
  }

  /** Ends the probe process (by its PID: only the child this handle forked). */
  close (): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
  }
}

function serve (): void {
  let probes: DecisionProbe[] = []
  process.once('disconnect', () => process.exit(1))
  process.on('message', (msg) => {
    const req = msg as Request
    const run = async (): Promise<unknown> => {
      switch (req.cmd) {
        case 'start': probes = await Promise.all(req.opts.map(async (o) => await DecisionProbe.start(o))); return null
        case 'stop': return mergeCounts(await Promise.all(probes.map(async (p) => await p.stop(req.settleMs))))
        case 'window': return mergeWindows(probes.map((p) => p.window(req.fromEpochMs - performance.timeOrigin, req.toEpochMs - performance.timeOrigin)))
      }
    }
    run().then((value) => process.send!({ ok: true, value }), (err: Error) => process.send!({ ok: false, error: err.message }))
  })
}

if (process.argv[1] === SELF) serve()
