// One device connection's state in the broker: who it is, its protocol version, its publish rate
// (a token bucket that holds back a device above it, so its PUBACKs come later and other devices
// are not affected), and its QoS 1/2 publishes not answered yet: their number (MQTT 5 Receive
// Maximum, and the bound of pipelining) and the order their answers must leave in.
import { TokenBucket } from '../../lib/token-bucket.ts'

/** A publish held back by the throttle, released in order by one timer. */
interface Held { releaseAt: number, run: () => void }

export class DeviceSession {
  /** QoS 1/2 publishes of this connection whose PUBACK has not been decided. */
  unanswered = 0
  /** Set once it broke the Receive Maximum: it is being disconnected. */
  overReceiveMaximum = false
  private readonly bucket: TokenBucket
  private held: Held[] = []
  private timer: NodeJS.Timeout | null = null
  private refused: { first: string, count: number } | null = null
  /** Answers of QoS 1/2 publishes, in arrival order; each runs once it and all before it are decided. */
  private readonly answers: Array<{ run: (() => void) | null }> = []

  /** version: the MQTT protocol level of the CONNECT (4 = 3.1.1, 5 = MQTT 5). */
  constructor (readonly deviceId: string, readonly version: number, rate: number, burst: number) {
    this.bucket = new TokenBucket(rate, burst, performance.now())
  }

  /**
   * Runs `run` now, or later in order when the device is above its rate. Returns false, and runs
   * nothing, when the delay would exceed maxDelayMs: the caller refuses the publish.
   */
  throttle (maxDelayMs: number, run: () => void): 'now' | 'held' | 'refused' {
    const now = performance.now()
    const wait = this.bucket.take(now)
    if (wait === 0 && this.held.length === 0) { run(); return 'now' }
    if (wait > maxDelayMs) {
      this.bucket.refund()
      return 'refused'
    }
    this.held.push({ releaseAt: now + wait, run })
    if (!this.timer) this.arm()
    return 'held'
  }

  /** Whether publishes are held back by the throttle (the connection then waits for them). */
  throttling (): boolean {
    return this.held.length > 0
  }

  /**
   * Publishes still held when their device goes away are never acknowledged, so they must not be
   * stored either: the device will resend them.
   */
  dropHeld (): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    this.held = []
  }

  /**
   * Reserves the answer of a QoS 1/2 publish in arrival order. The returned function takes the
   * answer (a PUBACK with its code, or a refusal) once decided; it leaves only after the answers
   * of every earlier publish of this connection, whatever order they are decided in (a refusal is
   * decided at once, a reading after its commit). MQTT requires PUBACKs in the order of the
   * PUBLISHes, and a device may take an out-of-order PUBACK as the loss of the earlier one.
   */
  inOrder (): (answer: () => void) => void {
    const slot: { run: (() => void) | null } = { run: null }
    this.answers.push(slot)
    return (answer) => {
      slot.run = answer
      while (this.answers.length > 0 && this.answers[0].run !== null) this.answers.shift()!.run!()
    }
  }

  /**
   * A refused SUBSCRIBE filter. The filters of one packet are authorized in one turn: `report`
   * runs once for them, after the turn, with the first filter and their number.
   */
  refusedFilter (filter: string, report: (first: string, count: number) => void): void {
    if (this.refused) { this.refused.count++; return }
    this.refused = { first: filter, count: 1 }
    setImmediate(() => {
      const r = this.refused!
      this.refused = null
      report(r.first, r.count)
    })
  }

  private arm (): void {
    const next = this.held[0]
    this.timer = setTimeout(() => {
      this.timer = null
      const now = performance.now()
      while (this.held.length > 0 && this.held[0].releaseAt <= now) this.held.shift()!.run()
      if (this.held.length > 0) this.arm()
    }, Math.max(0, next.releaseAt - performance.now()))
  }
}
