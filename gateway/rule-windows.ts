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

/** A FIFO of doubles in a ring that doubles its capacity up to a fixed maximum. */
class Ring {
  buf: Float64Array
  head = 0
  len = 0

  constructor (initial: number) {
    this.buf = new Float64Array(initial)
  }

  push (x: number): void {
    if (this.len === this.buf.length) this.grow()
    this.buf[(this.head + this.len) % this.buf.length] = x
    this.len++
  }

  shift (): number {
    const x = this.buf[this.head]
    this.head = (this.head + 1) % this.buf.length
    this.len--
    return x
  }

  popBack (): void { this.len-- }
  front (): number { return this.buf[this.head] }
  back (): number { return this.buf[(this.head + this.len - 1) % this.buf.length] }

  private grow (): void {
    const next = new Float64Array(this.buf.length * 2)
    for (let i = 0; i < this.len; i++) next[i] = this.buf[(this.head + i) % this.buf.length]
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
  private readonly ts = new Ring(INITIAL_POINTS)
  private readonly vs = new Ring(INITIAL_POINTS)
  // Monotonic deque for min/max: sequence numbers and values, front = the current extreme.
  private readonly dqSeq = new Ring(INITIAL_POINTS)
  private readonly dqVal = new Ring(INITIAL_POINTS)
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
  }

  /** Adds a point at time t; returns true when the oldest point had to be dropped to make room. */
  add (t: number, v: number): boolean {
    let dropped = false
    if (this.ts.len >= this.maxPoints) {
      this.evictOldest()
      this.dropped++
      dropped = true
    }
    this.ts.push(t)
    this.vs.push(v)
    this.sum += v
    const seq = this.seqNext++
    if (this.agg === AGG_MIN || this.agg === AGG_MAX) {
      const isMin = this.agg === AGG_MIN
      // Points that can never be the extreme again (an older one beaten by this one) leave now.
      while (this.dqVal.len > 0 && (isMin ? this.dqVal.back() >= v : this.dqVal.back() <= v)) {
        this.dqVal.popBack()
        this.dqSeq.popBack()
      }
      this.dqSeq.push(seq)
      this.dqVal.push(v)
    }
    return dropped
  }

  /** Drops the points that are `ms` old or older at `now`. */
  expire (now: number): void {
    const cutoff = now - this.ms
    while (this.ts.len > 0 && this.ts.front() <= cutoff) this.evictOldest()
  }

  /** When the oldest point leaves the window (Infinity when empty). */
  nextExpiry (): number {
    return this.ts.len > 0 ? this.ts.front() + this.ms : Infinity
  }

  /** Number of points held. */
  get size (): number { return this.ts.len }

  /** The aggregate now; NaN for min/max/avg of an empty window. */
  value (): number {
    const n = this.ts.len
    switch (this.agg) {
      case AGG_COUNT: return n
      case AGG_AVG: return n === 0 ? NaN : this.sum / n
      default: return this.dqVal.len === 0 ? NaN : this.dqVal.front()
    }
  }

  private evictOldest (): void {
    this.ts.shift()
    this.sum -= this.vs.shift()
    if (this.dqSeq.len > 0 && this.dqSeq.front() === this.seqHead) {
      this.dqSeq.shift()
      this.dqVal.shift()
    }
    this.seqHead++
    if (this.vs.len === 0) {
      this.sum = 0
    } else if (++this.evictions % RESUM_EVERY === 0) {
      let s = 0
      for (let i = 0; i < this.vs.len; i++) s += this.vs.buf[(this.vs.head + i) % this.vs.buf.length]
      this.sum = s
    }
  }
}
