// Per-device token bucket. Pure: the caller passes the clock.

/** A token bucket: `rate` tokens/s, holding at most `burst`. take() says how long the caller must wait. */
export class TokenBucket {
  private tokens: number
  private last: number

  constructor (private readonly rate: number, private readonly burst: number, nowMs: number) {
    this.tokens = burst
    this.last = nowMs
  }

  /** Takes n tokens, going into debt if needed; returns the ms until they are really available. */
  take (nowMs: number, n = 1): number {
    this.tokens = Math.min(this.burst, this.tokens + ((nowMs - this.last) * this.rate) / 1000)
    this.last = nowMs
    this.tokens -= n
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.rate)
  }

  /** Gives a token back (used when a publish that was charged is refused instead of delayed). */
  refund (): void {
    this.tokens = Math.min(this.burst, this.tokens + 1)
  }
}
