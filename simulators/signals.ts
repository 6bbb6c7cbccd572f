// Realistic sensor signals: a daily cycle, slow drift, noise and rare spikes. Pure and seedable.

export type SensorKind = 'temperature' | 'humidity' | 'vibration' | 'power' | 'door'

/** A small deterministic PRNG (mulberry32) so a simulated fleet can be replayed. */
export function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

interface Profile { base: number, daily: number, drift: number, noise: number, spike: number, spikeP: number, min?: number, max?: number }

const PROFILES: Record<SensorKind, Profile> = {
  temperature: { base: 4, daily: 1.5, drift: 0.02, noise: 0.15, spike: 6, spikeP: 0.002 },
  humidity: { base: 55, daily: 8, drift: 0.05, noise: 0.8, spike: 15, spikeP: 0.001, min: 0, max: 100 },
  vibration: { base: 0.3, daily: 0.1, drift: 0.001, noise: 0.05, spike: 2.5, spikeP: 0.005, min: 0 },
  power: { base: 1200, daily: 400, drift: 1, noise: 25, spike: 900, spikeP: 0.002, min: 0 },
  door: { base: 0, daily: 0, drift: 0, noise: 0, spike: 1, spikeP: 0.01, min: 0, max: 1 },
}

/** One sensor's signal over time; `offset` shifts it (an actuator, e.g. a cooler, pushes it down). */
export class Signal {
  private drift = 0
  offset = 0
  private readonly p: Profile

  constructor (readonly kind: SensorKind, private readonly random: () => number) {
    this.p = PROFILES[kind]
  }

  /** The value at time tMs (ms since epoch). */
  sample (tMs: number): number {
    const p = this.p
    const day = Math.sin((2 * Math.PI * (tMs % 86_400_000)) / 86_400_000)
    this.drift += (this.random() - 0.5) * p.drift
    let v = p.base + p.daily * day + this.drift + (this.random() - 0.5) * 2 * p.noise + this.offset
    if (this.random() < p.spikeP) v += p.spike
    if (this.kind === 'door') v = v >= 0.5 ? 1 : 0
    if (p.min !== undefined) v = Math.max(p.min, v)
    if (p.max !== undefined) v = Math.min(p.max, v)
    return Math.round(v * 100) / 100
  }
}
