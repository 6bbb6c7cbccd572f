// Runs the soak's fault schedule against the fleet: each fault at its time, logged when it starts
// and when it is over; faults on one resource run one after the other (a gateway is never killed
// while it is still starting after the previous kill). Every fault undoes itself when it ends.
import type { NatsServer, Proxy } from '../devkit/index.ts'
import type { BadClient, SoakDevice } from './soak-device.ts'
import type { GatewayProc, ReplicaProc } from './soak-procs.ts'
import { describeFault, FAULT_KINDS, resourceOf, type Fault, type FaultKind } from './soak-schedule.ts'

export interface SoakTargets {
  gateways: GatewayProc[]
  /** Per gateway, the proxies in front of its uplink (one per NATS node). */
  uplinks: Proxy[][]
  natsNodes: NatsServer[]
  replicas: ReplicaProc[]
  /** Per gateway, its devices. */
  devices: SoakDevice[][]
  bad: BadClient[]
}

/** Bad payloads sent per `bad-payloads` fault. */
const BAD_PER_FAULT = 10
// A slowed uplink: this much latency each way and this many bytes/s.
const SLOW_LATENCY_MS = 300
const SLOW_BYTES_PER_SEC = 16 * 1024

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export class FaultRunner {
  /** Faults started, by kind. */
  readonly counts = new Map<FaultKind, number>(FAULT_KINDS.map((k) => [k, 0]))
  /** Faults under way (their descriptions). */
  readonly active = new Set<string>()
  /** Components expected down now (a kill fault holds them): anything else down crashed by itself. */
  readonly expectedDown = new Set<string>()
  readonly errors: string[] = []
  badSent = 0
  private readonly chains = new Map<string, Promise<void>>()
  private readonly timers: NodeJS.Timeout[] = []
  private stopped = false

  constructor (private readonly t: SoakTargets, private readonly log: (line: string) => void) {}

  get total (): number { return [...this.counts.values()].reduce((a, b) => a + b, 0) }

  /** Schedules every fault relative to now. */
  start (schedule: Fault[]): void {
    schedule.forEach((f, i) => {
      this.timers.push(setTimeout(() => {
        const res = resourceOf(f)
        const prev = this.chains.get(res) ?? Promise.resolve()
        this.chains.set(res, prev.then(() => this.run(f, i + 1)))
      }, f.atMs))
    })
  }

  /** Cancels the faults not yet started and waits for those under way to end (and undo themselves). */
  async stop (): Promise<void> {
    this.stopped = true
    for (const t of this.timers) clearTimeout(t)
    // No timer fires any more, so no fault joins a chain; those queued behind one under way return at once.
    await Promise.all(this.chains.values())
  }

  private async run (f: Fault, no: number): Promise<void> {
    if (this.stopped) return
    const label = `#${no} ${describeFault(f)}`
    this.counts.set(f.kind, this.counts.get(f.kind)! + 1)
    this.active.add(label)
    this.log(`fault ${label}`)
    try {
      await this.inject(f)
      if (f.forMs > 0) this.log(`fault #${no} over (${f.kind})`)
    } catch (err) {
      const msg = `fault ${label} failed: ${(err as Error).message}`
      this.errors.push(msg)
      this.log(msg)
    } finally {
      this.active.delete(label)
    }
  }

  /** kill -9 of a component, down for forMs, then started again; expected down all that time. */
  private async downFor (name: string, forMs: number, kill: () => Promise<void>, start: () => Promise<void>): Promise<void> {
    this.expectedDown.add(name)
    try {
      await kill()
      await sleep(forMs)
      await start()
    } finally { this.expectedDown.delete(name) }
  }

  /** A fault on every proxy of a gateway's uplink for forMs, then undone. */
  private async uplinkFor (proxies: Proxy[], forMs: number, begin: (p: Proxy) => void, end: (p: Proxy) => void): Promise<void> {
    for (const p of proxies) begin(p)
    await sleep(forMs)
    for (const p of proxies) end(p)
  }

  private async inject (f: Fault): Promise<void> {
    const t = this.t
    switch (f.kind) {
      case 'gateway-kill': {
        const gw = t.gateways[f.target]
        return this.downFor(gw.gatewayId, f.forMs, () => gw.kill(), () => gw.start())
      }
      case 'nats-kill': {
        const node = t.natsNodes[f.target]
        return this.downFor(`n${f.target + 1}`, f.forMs, () => node.kill(), () => node.restart())
      }
      case 'replica-kill': {
        const r = t.replicas[f.target]
        return this.downFor(r.name, f.forMs, () => r.kill(), () => r.start())
      }
      case 'uplink-cut':
      case 'disk-budget':
        return this.uplinkFor(t.uplinks[f.target], f.forMs, (p) => p.cut(), (p) => p.restore())
      case 'uplink-slow':
        return this.uplinkFor(t.uplinks[f.target], f.forMs, (p) => { p.setLatency(SLOW_LATENCY_MS); p.setBandwidth(SLOW_BYTES_PER_SEC) }, (p) => { p.setLatency(0); p.setBandwidth(null) })
      case 'uplink-blackhole':
        return this.uplinkFor(t.uplinks[f.target], f.forMs, (p) => p.hold(), (p) => p.restore())
      case 'reconnect-storm':
        // Every device of the gateway at once, reconnecting right away.
        for (const d of t.devices[f.target]) d.drop(1)
        t.bad[f.target].drop(1)
        return
      case 'bad-payloads':
        this.badSent += t.bad[f.target].sendBad(BAD_PER_FAULT)
    }
  }
}
