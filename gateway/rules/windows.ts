// Windowed aggregates for the rules engine, on the gateway's clock. A tumbling window keeps only
// running aggregates (O(1) whatever the rate); a sliding window keeps its points in growable rings
// bounded by maxPoints (the oldest is dropped and counted), with a monotonic deque so min and max
// stay O(1) amortised. Nothing allocates per point except an occasional ring growth.

/** The aggregate a window condition compares. */
export type Agg = 'count' | 'min' | 'max' | 'avg'

const AGG_COUNT = 0
const AGG_MIN = 1
const AGG_MAX = 2
const AGG_AVG = 3
const AGG_CODES: Record<Agg, number> = { count: AGG_COUNT, min: AGG_MIN, max: AGG_MAX, avg: AGG_AVG }

/** Aligned windows [k*ms, (k+1)*ms); the value of the last closed window is what conditions see. */
export class TumblingWindow {
  private readonly ms: number
  private readonly agg: number
  private start: number
  private count = 0
  private sum = 0
  private min = Infinity
  private max = -Infinity
  /** Aggregate of the last closed window; NaN before the first close and for min/max/avg of an empty one. */
  closed = NaN

  constructor (ms: number, agg: Agg, now: number) {
    this.ms = ms
    this.agg = AGG_CODES[agg]
    this.start = Math.floor(now / ms) * ms
  }

  /** When the current window closes. */
  get end (): number { return this.start + this.ms }

  /** Closes the window if `now` is past its end; returns true when one closed. */
  advance (now: number): boolean {
    const end = this.start + this.ms
    if (now < end) return false
    // Time may have skipped whole windows without events: the last of them closed empty.
    this.closed = now >= end + this.ms ? (this.agg === AGG_COUNT ? 0 : NaN) : this.value()
    this.start = Math.floor(now / this.ms) * this.ms
    this.count = 0
    this.sum = 0
    this.min = Infinity
    this.max = -Infinity
    return true
  }

  /** Adds a point to the current (open) window. */
  add (v: number): void {
    this.count++
    this.sum += v
    if (v < this.min) this.min = v
    if (v > this.max) this.max = v
  }

  private value (): number {
    switch (this.agg) {
      case AGG_COUNT: return this.count
      case AGG_MIN: return this.count === 0 ? NaN : this.min
      case AGG_MAX: return this.count === 0 ? NaN : this.max
      default: return this.count === 0 ? NaN : this.sum / this.count
    }
  }
}

/**
 * A FIFO of (a, b) pairs of doubles in one ring that doubles its capacity up to what the caller
 * allows. Pairs sit side by side so a point's time and value share a cache line: with hundreds of
 * windows touched in random order, cache misses are most of a window's cost.
 */
class PairRing {
  buf: Float64Array
  head = 0
  len = 0

  constructor (initial: number) {
    this.buf = new Float64Array(initial * 2)
  }

  push (a: number, b: number): void {
    const cap = this.buf.length >> 1
    if (this.len === cap) this.grow()
    const i = ((this.head + this.len) % (this.buf.length >> 1)) << 1
    this.buf[i] = a
    this.buf[i + 1] = b
    this.len++
  }

  shift (): void {
    this.head = (this.head + 1) % (this.buf.length >> 1)
    this.len--
  }

  popBack (): void { this.len-- }
  frontA (): number { return this.buf[this.head << 1] }
  frontB (): number { return this.buf[(this.head << 1) + 1] }
  backB (): number { return this.buf[(((this.head + this.len - 1) % (this.buf.length >> 1)) << 1) + 1] }
  /** The b of the i-th pair from the front. */
  b (i: number): number { return this.buf[(((this.head + i) % (this.buf.length >> 1)) << 1) + 1] }

  private grow (): void {
    const cap = this.buf.length >> 1
    const next = new Float64Array(this.buf.length * 2)
    for (let i = 0; i < this.len; i++) {
      const j = ((this.head + i) % cap) << 1
      next[i << 1] = this.buf[j]
      next[(i << 1) + 1] = this.buf[j + 1]
    }
    this.buf = next
    this.head = 0
  }
}

// Rings start small: a window over a slow signal should not reserve maxPoints up front (memory on a
// Pi is counted per device and per rule).
const INITIAL_POINTS = 16
// A running sum drifts as points come and go; it is recomputed exactly after this many evictions.
const RESUM_EVERY = 4096

/** The points of the last `ms` (times in (now - ms, now]), at most maxPoints of them. */
export class SlidingWindow {
  private readonly ms: number
  private readonly agg: number
  private readonly maxPoints: number
  // (time, value) of each point, oldest first.
  private readonly points = new PairRing(INITIAL_POINTS)
  // Monotonic deque for min/max: (sequence number, value), front = the current extreme.
  private readonly extremes: PairRing | null
  private seqHead = 0
  private seqNext = 0
  private sum = 0
  private evictions = 0
  /** Points dropped because the window held maxPoints. */
  dropped = 0

  constructor (ms: number, agg: Agg, maxPoints: number) {
    this.ms = ms
    this.agg = AGG_CODES[agg]
    this.maxPoints = maxPoints
    this.extremes = this.agg === AGG_MIN || this.agg === AGG_MAX ? new PairRing(INITIAL_POINTS) : null
  }

  /** Adds a point at time t; returns true when the oldest point had to be dropped to make room. */
  add (t: number, v: number): boolean {
    let dropped = false
    if (this.points.len >= this.maxPoints) {
      this.evictOldest()
      this.dropped++
      dropped = true
    }
    this.points.push(t, v)
    this.sum += v
    const seq = this.seqNext++
    const dq = this.extremes
    if (dq !== null) {
      const isMin = this.agg === AGG_MIN
      // Points that can never be the extreme again (an older one beaten by this one) leave now.
      while (dq.len > 0 && (isMin ? dq.backB() >= v : dq.backB() <= v)) dq.popBack()
      dq.push(seq, v)
    }
    return dropped
  }

  /** Drops the points that are `ms` old or older at `now`. */
  expire (now: number): void {
    const cutoff = now - this.ms
    while (this.points.len > 0 && this.points.frontA() <= cutoff) this.evictOldest()
  }

  /** When the oldest point leaves the window (Infinity when empty). */
  nextExpiry (): number {
    return this.points.len > 0 ? this.points.frontA() + this.ms : Infinity
  }

  /** Number of points held. */
  get size (): number { return this.points.len }

  /** The aggregate now; NaN for min/max/avg of an empty window. */
  value (): number {
    const n = this.points.len
    switch (this.agg) {
      case AGG_COUNT: return n
      case AGG_AVG: return n === 0 ? NaN : this.sum / n
      default: return this.extremes === null || this.extremes.len === 0 ? NaN : this.extremes.frontB()
    }
  }

  private evictOldest (): void {
    this.sum -= this.points.frontB()
    this.points.shift()
    const dq = this.extremes
    if (dq !== null && dq.len > 0 && dq.frontA() === this.seqHead) dq.shift()
    this.seqHead++
    if (this.points.len === 0) {
      this.sum = 0
    } else if (++this.evictions % RESUM_EVERY === 0) {
      let s = 0
      for (let i = 0; i < this.points.len; i++) s += this.points.b(i)
      this.sum = s
    }
  }
}
