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

  private async inject (f: Fault): Promise<void> {
    const t = this.t
    switch (f.kind) {
      case 'gateway-kill': {
        const gw = t.gateways[f.target]
        this.expectedDown.add(gw.gatewayId)
        try {
          await gw.kill()
          await sleep(f.forMs)
          await gw.start()
        } finally { this.expectedDown.delete(gw.gatewayId) }
        return
      }
      case 'nats-kill': {
        const node = t.natsNodes[f.target]
        const name = `n${f.target + 1}`
        this.expectedDown.add(name)
        try {
          await node.kill()
          await sleep(f.forMs)
          await node.restart()
        } finally { this.expectedDown.delete(name) }
        return
      }
      case 'replica-kill': {
        const r = t.replicas[f.target]
        this.expectedDown.add(r.name)
        try {
          await r.kill()
          await sleep(f.forMs)
          await r.start()
        } finally { this.expectedDown.delete(r.name) }
        return
      }
      case 'uplink-cut':
      case 'disk-budget':
        for (const p of t.uplinks[f.target]) p.cut()
        await sleep(f.forMs)
        for (const p of t.uplinks[f.target]) p.restore()
        return
      case 'uplink-slow':
        for (const p of t.uplinks[f.target]) { p.setLatency(SLOW_LATENCY_MS); p.setBandwidth(SLOW_BYTES_PER_SEC) }
        await sleep(f.forMs)
        for (const p of t.uplinks[f.target]) { p.setLatency(0); p.setBandwidth(null) }
        return
      case 'uplink-blackhole':
        for (const p of t.uplinks[f.target]) p.hold()
        await sleep(f.forMs)
        for (const p of t.uplinks[f.target]) p.restore()
        return
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
