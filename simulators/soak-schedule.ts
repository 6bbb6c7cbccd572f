// The soak's fault schedule: a list of faults drawn up front from a seed (the same seed gives the
// same schedule), each with its start, its target and how long it lasts. Faults on one target never
// overlap, at most one NATS node is down at a time (the cluster keeps its quorum) and at most one
// aggregator replica is (with two or more, one is always up).
import { prng } from './signals.ts'

export const FAULT_KINDS = ['gateway-kill', 'nats-kill', 'replica-kill', 'uplink-cut', 'uplink-slow', 'uplink-blackhole', 'disk-budget', 'reconnect-storm', 'bad-payloads'] as const
export type FaultKind = typeof FAULT_KINDS[number]

export interface Fault {
  /** ms after the start of the run. */
  atMs: number
  kind: FaultKind
  /** Index of the gateway, the NATS node or the replica it hits. */
  target: number
  /** How long the fault lasts (down time, link fault time); 0 for an instant one. */
  forMs: number
}

export interface ScheduleOptions {
  seed: number
  /** Faults are drawn in [firstMs, endMs): every fault is over by endMs. */
  firstMs: number
  endMs: number
  gateways: number
  natsNodes: number
  replicas: number
  /** The gateway with the small disk budget (its `disk-budget` faults cut its uplink until it sheds). */
  budgetGateway: number
}

// How often each kind is drawn (relative), and its duration range in ms.
const WEIGHT: Record<FaultKind, number> = {
  'gateway-kill': 3,
  'nats-kill': 2,
  'replica-kill': 2,
  'uplink-cut': 3,
  'uplink-slow': 2,
  'uplink-blackhole': 2,
  'disk-budget': 1,
  'reconnect-storm': 2,
  'bad-payloads': 2,
}
const DURATION: Record<FaultKind, [number, number]> = {
  'gateway-kill': [500, 5000],
  'nats-kill': [2000, 15000],
  'replica-kill': [1000, 10000],
  'uplink-cut': [2000, 30000],
  'uplink-slow': [5000, 25000],
  'uplink-blackhole': [5000, 25000],
  'disk-budget': [30000, 50000],
  'reconnect-storm': [0, 0],
  'bad-payloads': [0, 0],
}
// Mean time between two fault starts, ms.
const MEAN_GAP_MS = 6000

/** The resource a fault holds while it lasts (faults on one resource never overlap). */
export function resourceOf (f: Pick<Fault, 'kind' | 'target'>): string {
  switch (f.kind) {
    case 'nats-kill': return 'nats'
    case 'replica-kill': return 'replicas'
    case 'uplink-cut': case 'uplink-slow': case 'uplink-blackhole': case 'disk-budget': return `uplink-${f.target}`
    default: return `gateway-${f.target}`
  }
}

/** Draws the schedule of a run. */
export function buildSchedule (o: ScheduleOptions): Fault[] {
  const rand = prng(o.seed)
  const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1))
  const busyUntil = new Map<string, number>()
  const total = Object.values(WEIGHT).reduce((a, b) => a + b, 0)
  const pick = (): FaultKind => {
    let r = rand() * total
    for (const k of FAULT_KINDS) { r -= WEIGHT[k]; if (r < 0) return k }
    return FAULT_KINDS[FAULT_KINDS.length - 1]
  }
  const faults: Fault[] = []
  let t = o.firstMs
  for (;;) {
    // Exponential gaps (a Poisson process), at least half a second apart.
    t += Math.max(500, Math.round(-Math.log(1 - rand()) * MEAN_GAP_MS))
    if (t >= o.endMs) break
    const kind = pick()
    const [lo, hi] = DURATION[kind]
    const forMs = int(lo, hi)
    if (t + forMs >= o.endMs) continue
    const target = kind === 'nats-kill' ? int(0, o.natsNodes - 1)
      : kind === 'replica-kill' ? int(0, o.replicas - 1)
        : kind === 'disk-budget' ? o.budgetGateway
          : int(0, o.gateways - 1)
    const res = resourceOf({ kind, target })
    // A gateway kill and a fault of its uplink may overlap (different resources); one fault per resource at a time.
    if ((busyUntil.get(res) ?? 0) > t) continue
    busyUntil.set(res, t + forMs + 1000)
    faults.push({ atMs: t, kind, target, forMs })
  }
  return faults
}

/** A fault as a log line. */
export function describeFault (f: Fault): string {
  const s = (ms: number): string => `${(ms / 1000).toFixed(1)}s`
  switch (f.kind) {
    case 'gateway-kill': return `kill -9 gateway gw-${f.target + 1}, restart after ${s(f.forMs)}`
    case 'nats-kill': return `kill -9 NATS node n${f.target + 1}, restart after ${s(f.forMs)}`
    case 'replica-kill': return `kill -9 aggregator replica r${f.target + 1}, restart after ${s(f.forMs)}`
    case 'uplink-cut': return `cut the uplink of gw-${f.target + 1} for ${s(f.forMs)}`
    case 'uplink-slow': return `slow the uplink of gw-${f.target + 1} (latency, bandwidth cap) for ${s(f.forMs)}`
    case 'uplink-blackhole': return `black-hole the uplink of gw-${f.target + 1} for ${s(f.forMs)}`
    case 'disk-budget': return `cut the uplink of gw-${f.target + 1} (small disk budget) for ${s(f.forMs)} so that it sheds`
    case 'reconnect-storm': return `reconnect storm: every device of gw-${f.target + 1} drops and reconnects at once`
    case 'bad-payloads': return `bad payloads sent to gw-${f.target + 1}`
  }
}
