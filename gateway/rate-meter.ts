// Turns a monotonically growing counter into a rate (per second) between two reads.

export class RateMeter {
  private lastValue: number
  private lastTs: number

  constructor (private readonly read: () => number) {
    this.lastValue = read()
    this.lastTs = performance.now()
  }

  /** Rate since the previous call (or since construction). */
  rate (): number {
    const v = this.read()
    const now = performance.now()
    const dt = (now - this.lastTs) / 1000
    const r = dt > 0 ? Math.max(0, v - this.lastValue) / dt : 0
    this.lastValue = v
    this.lastTs = now
    return r
  }
}
