// One partition of one stream, as its owner consumes it: a filtered durable pull consumer, the loop
// that takes what it delivers as groups of at most maxBatchMessages, applies and acks them (naks
// with a backoff when the apply fails), and a graceful stop that finishes the group in flight.
//
// Positioned on every acquisition: the consumer is recreated at its ack floor. Whatever the last
// owner had taken but not acked (a SIGKILLed replica's max_ack_pending messages) is delivered again
// at once instead of after ack_wait, and a paused former owner's late acks go to a consumer that no
// longer exists. What it had acked out of order above the floor comes again and counts as duplicates.
// The unmapped partition also takes over the consumer of a cloud from before partitioning
// (`<prefix>-<lane>`, unfiltered): it starts at that consumer's ack floor, then deletes it.
import { AckPolicy, DeliverPolicy, type ConsumerConfig, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream'
import type { Logger } from '../log.ts'
import type { CloudMetrics } from '../metrics.ts'

export interface PartitionConsumerOptions {
  stream: string
  durable: string
  filter: string
  /** A consumer of an unpartitioned cloud to take over (its position), then delete. */
  legacyDurable?: string
  maxBatchMessages: number
  ackWaitMs: number
}

export interface PartitionConsumerDeps {
  js: JetStreamClient
  jsm: JetStreamManager
  /** Applies one group and acks it (throws: the group is nak'ed and redelivered). */
  apply: (msgs: JsMsg[]) => Promise<void>
  /** Whether this replica may apply the partition right now (its lease is fresh). */
  holds: () => boolean
  metrics: CloudMetrics
  log: Logger
}

/** Longest wait at a handover for the ack floor to reach the last ack (then the next owner may see a few again: duplicates). */
const ACK_FLOOR_WAIT_MS = 2000
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const notFound = (err: unknown): boolean => /not found/i.test((err as Error)?.message ?? '')

export class PartitionConsumer {
  private iter: ConsumerMessages | null = null
  private loop: Promise<void> | null = null
  private stopping = false
  private wake: (() => void) | null = null
  /** Highest stream sequence this consumer has acked (to see the server's ack floor reach it). */
  private lastAcked = 0

  constructor (private readonly opts: PartitionConsumerOptions, private readonly deps: PartitionConsumerDeps) {}

  /** Positions the consumer at its ack floor and starts applying. */
  async start (): Promise<void> {
    await this.position()
    this.loop = this.run().catch((err) => this.deps.log.error({ err, stream: this.opts.stream, durable: this.opts.durable }, 'partition consumer stopped'))
  }

  /**
   * Stops pulling, finishes (and acks) the group in flight, hands back what was buffered, and waits
   * (briefly) for the server's ack floor to pass the last ack: acks are sent without waiting, and on a
   * cluster they reach the consumer's replicas a little later. The next owner starts at that floor,
   * so a clean handover redelivers nothing.
   */
  async stop (): Promise<void> {
    this.stopping = true
    this.wake?.()
    await this.iter?.close().catch(() => {})
    await this.loop
    const deadline = Date.now() + ACK_FLOOR_WAIT_MS
    while (this.lastAcked > 0 && Date.now() < deadline) {
      try {
        if ((await this.deps.jsm.consumers.info(this.opts.stream, this.opts.durable)).ack_floor.stream_seq >= this.lastAcked) return
      } catch { return }
      await sleep(20)
    }
  }

  /** Stops pulling now; what is not acked is redelivered to the next owner. */
  destroy (): void {
    this.stopping = true
    this.iter?.stop()
    this.wake?.()
  }

  /** Messages of the partition not yet applied: pending plus delivered and not acked. */
  async lag (): Promise<number> {
    const ci = await this.deps.jsm.consumers.info(this.opts.stream, this.opts.durable)
    return ci.num_pending + ci.num_ack_pending
  }

  private async position (): Promise<void> {
    const { jsm } = this.deps
    const { stream, durable, legacyDurable } = this.opts
    let floor: number | null = null
    try {
      floor = (await jsm.consumers.info(stream, durable)).ack_floor.stream_seq
      await jsm.consumers.delete(stream, durable)
    } catch (err) {
      if (!notFound(err)) throw err
    }
    let legacy = false
    if (legacyDurable) {
      try {
        const li = await jsm.consumers.info(stream, legacyDurable)
        legacy = true
        // Both floors: a first attempt may have created the durable (floor 0) and failed before
        // deleting the old consumer; starting at 0 would apply the old cloud's acked part again.
        floor = Math.max(floor ?? 0, li.ack_floor.stream_seq)
      } catch (err) {
        if (!notFound(err)) throw err
      }
    }
    const cfg: Partial<ConsumerConfig> = {
      durable_name: durable,
      filter_subject: this.opts.filter,
      ack_policy: AckPolicy.Explicit,
      ack_wait: this.opts.ackWaitMs * 1_000_000,
      max_ack_pending: this.opts.maxBatchMessages * 2,
      max_deliver: -1,
      ...(floor ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: floor + 1 } : { deliver_policy: DeliverPolicy.All }),
    }
    await jsm.consumers.add(stream, cfg)
    if (legacy) {
      await jsm.consumers.delete(stream, legacyDurable!)
      this.deps.log.warn({ stream, legacyDurable, durable, fromSeq: (floor ?? 0) + 1 }, 'consumer of the unpartitioned cloud taken over at its ack floor and deleted')
    }
  }

  /**
   * Drains what the consumer delivers: everything ready is applied as one group (at most
   * maxBatchMessages), then acked. The buffer is bounded by the consumer's max_ack_pending. An
   * iterator that ends while the partition is still held (a cluster node lost, the consumer
   * recreated) is started again.
   */
  private async run (): Promise<void> {
    const { stream, durable } = this.opts
    const buffer: JsMsg[] = []
    let failures = 0
    while (!this.stopping) {
      let ended = false
      try {
        const consumer = await this.deps.js.consumers.get(stream, durable)
        this.iter = await consumer.consume({
          max_messages: this.opts.maxBatchMessages,
          // Short pull expiry: a pull left on a cluster node that died is renewed within seconds.
          expires: 5000,
          callback: (m) => { buffer.push(m); this.wake?.() },
        })
      } catch (err) {
        this.deps.log.warn({ err, stream, durable }, 'partition consumer not available: trying again')
        await sleep(500)
        continue
      }
      if (this.stopping) { this.iter.stop(); break }
      void this.iter.closed().then(() => { ended = true; this.wake?.() })
      while (!ended && !this.stopping) {
        if (buffer.length === 0) {
          await new Promise<void>((resolve) => { this.wake = resolve })
          this.wake = null
          continue
        }
        const msgs = buffer.splice(0, this.opts.maxBatchMessages)
        if (!this.deps.holds()) {
          // Lease not renewed lately (NATS unreachable, or lost): apply nothing until it is settled.
          for (const m of msgs) m.nak(1000)
          await sleep(200)
          continue
        }
        try {
          await this.deps.apply(msgs)
          for (const m of msgs) if (m.seq > this.lastAcked) this.lastAcked = m.seq
          failures = 0
        } catch (err) {
          failures++
          this.deps.metrics.storeErrors.inc()
          const delayMs = Math.min(10000, 100 * 2 ** Math.min(failures, 7))
          this.deps.log.error({ err, stream, durable, batches: msgs.length, delayMs }, 'apply failed: batches will be redelivered')
          for (const m of msgs) m.nak(delayMs)
          await sleep(delayMs)
        }
      }
      if (!this.stopping) {
        this.deps.log.warn({ stream, durable }, 'partition consumer ended: starting it again')
        await sleep(200)
      }
    }
    // Taken from the server but not applied: hand them back at once (the next owner takes them).
    for (const m of buffer.splice(0)) m.nak()
  }
}
