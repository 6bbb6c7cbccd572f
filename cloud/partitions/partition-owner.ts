// One replica's side of the partition leases: it registers itself, renews what it owns, and every
// tick applies balance.ts (take free or lapsed partitions up to its fair share, hand over the
// excess). Ownership is held only through compare-and-set on a lease's revision, so two replicas
// never both hold a lease; a replica whose renewal fails has lost the partition and stops at once.
//
// Handover: the owner first stops applying the partition (handler.release: no new group, the one
// in flight finished and acked), then frees the lease and nudges the others (a core NATS message),
// so the next owner starts at once. Failover: a SIGKILLed owner stops renewing; when its lease's
// revision has stood still for ttlMs on another replica's clock, that replica takes it over.
// Fencing: an owner applies only while its last renewal was sent less than FENCE x ttlMs ago, so an
// owner cut off from NATS (or paused) stops applying before anyone can see its lease as lapsed.
import { hostname } from 'node:os'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { Lifecycle } from '../../lib/lifecycle.ts'
import type { Logger } from '../log.ts'
import { balance, type LeaseView } from './balance.ts'
import type { LeaseTable, MemberDoc } from './lease-table.ts'

/** Ticks between two refreshes of the per-partition lag reported in the registration (/metrics asks afresh). */
const LAG_EVERY = 5
/** Fraction of the TTL after the last renewal sent beyond which an owner stops applying. */
const FENCE = 0.7

/** What the owner of partitions does with them (the aggregator's partition consumers). */
export interface PartitionHandler {
  /** Start applying a partition just acquired. A throw gives the lease back. */
  acquire: (id: string) => Promise<void>
  /** Stop applying a partition: no new group, the one in flight finished and acked. Never throws. */
  release: (id: string) => Promise<void>
  /** Apply lag per owned partition (messages not yet applied), for the member document. */
  lag: () => Promise<Record<string, number>>
}

export interface PartitionOwnerOptions {
  replicaId: string
  /** The partitions shared out among the replicas. */
  ids: string[]
  /** Partitions outside the shares (balance.ts): the unmapped one. */
  spare?: string[]
  ttlMs: number
  /** How often leases are renewed and the balance reconsidered (default ttlMs / 5, at most 1 s). */
  tickMs?: number
  now?: () => number
}

export interface HandoverCounts { acquired: number, released: number, lost: number }

interface Held { rev: number, renewSentMs: number }

export class PartitionOwner extends Lifecycle {
  private readonly held = new Map<string, Held>()
  private readonly counts: HandoverCounts = { acquired: 0, released: 0, lost: 0 }
  private readonly now: () => number
  private readonly tickMs: number
  private readonly startedMs: number
  private timer: NodeJS.Timeout | null = null
  private renewTimer: NodeJS.Timeout | null = null
  private renewing: Promise<void> | null = null
  /** Per partition: the operations on its lease, one at a time (renew, take, free). */
  private readonly locks = new Map<string, Promise<unknown>>()
  private ticking: Promise<void> | null = null
  private again = false
  private sub: Subscription | null = null
  private lastLag: Record<string, number> = {}
  private members: string[] = []
  private ticks = 0

  constructor (private readonly nc: NatsConnection, private readonly table: LeaseTable, private readonly handler: PartitionHandler, private readonly log: Logger, private readonly opts: PartitionOwnerOptions) {
    super()
    this.now = opts.now ?? Date.now
    this.tickMs = opts.tickMs ?? Math.min(1000, Math.max(50, Math.floor(opts.ttlMs / 5)))
    this.startedMs = this.now()
  }

  get replicaId (): string { return this.opts.replicaId }

  /**
   * Registers, waits one tick (replicas started together then see each other before any takes a
   * share, instead of one taking everything and handing most of it over a second later), takes a
   * first share, and keeps ticking. Renewals run on their own timer, so a slow balance step (a
   * handover waits for acks) never delays them.
   */
  async start (): Promise<void> {
    this.sub = this.nc.subscribe(this.nudgeSubject(), { callback: () => { this.schedule() } })
    await this.table.putMember(this.memberDoc())
    this.renewTimer = setInterval(() => { if (!this.renewing) this.renewing = this.renew().catch((err) => this.log.warn({ err }, 'lease renewal failed')).finally(() => { this.renewing = null }) }, this.tickMs)
    this.renewTimer.unref()
    await new Promise((resolve) => setTimeout(resolve, this.tickMs))
    await this.tick()
    this.timer = setInterval(() => this.schedule(), this.tickMs)
    this.timer.unref()
  }

  /** True while this replica may apply the partition (held, and renewed recently enough). */
  holds (id: string): boolean {
    const h = this.held.get(id)
    return !!h && !this.isClosing && this.now() - h.renewSentMs < FENCE * this.opts.ttlMs
  }

  owned (): string[] { return this.all().filter((id) => this.held.has(id)) }
  private all (): string[] { return [...this.opts.ids, ...this.opts.spare ?? []] }
  handovers (): HandoverCounts { return { ...this.counts } }
  /** Live replicas seen at the last tick (this one included). */
  liveMembers (): string[] { return [...this.members] }
  lag (): Record<string, number> { return { ...this.lastLag } }

  /** Hands every partition over, deregisters and nudges the others. */
  protected async onClose (): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    if (this.renewTimer) clearInterval(this.renewTimer)
    await this.ticking?.catch(() => {})
    await this.renewing
    this.sub?.unsubscribe()
    const ids = this.owned()
    await Promise.all(ids.map((id) => this.giveBack(id)))
    await this.table.removeMember(this.opts.replicaId).catch((err) => this.log.warn({ err }, 'replica registration not removed'))
    if (ids.length > 0) this.nudge()
    this.log.info({ replicaId: this.opts.replicaId, released: ids }, 'partitions handed over')
  }

  /** Stops ticking; the leases lapse and are taken over after ttlMs. */
  protected onDestroy (): void {
    if (this.timer) clearInterval(this.timer)
    if (this.renewTimer) clearInterval(this.renewTimer)
    this.sub?.unsubscribe()
  }

  private nudgeSubject (): string { return `iot-cloud.${this.table.group}.rebalance` }
  private nudge (): void { try { this.nc.publish(this.nudgeSubject()) } catch { /* closed: the others tick anyway */ } }

  /** Runs a tick now, or right after the one running. */
  private schedule (): void {
    if (this.isClosing) return
    if (this.ticking) { this.again = true; return }
    this.ticking = this.tick().catch((err) => this.log.warn({ err }, 'partition lease tick failed'))
      .finally(() => {
        this.ticking = null
        if (this.again) { this.again = false; this.schedule() }
      })
  }

  private async tick (): Promise<void> {
    const t = this.now()
    if (this.isClosing) return
    const [members, leases] = await Promise.all([this.table.members(), this.table.leases(this.all())])
    this.members = [...new Set([this.opts.replicaId, ...members.filter((m) => !m.stale).map((m) => m.value!.replicaId)])].sort()
    const view = new Map<string, LeaseView>()
    for (const [id, l] of leases) view.set(id, { owner: l.value?.owner ?? '', lapsed: l.stale })
    const plan = balance({ me: this.opts.replicaId, ids: this.opts.ids, spare: this.opts.spare, members: this.members, leases: view, owned: new Set(this.held.keys()) })
    for (const id of plan.release) await this.giveBack(id)
    for (const id of plan.take) {
      if (this.isClosing) break
      await this.take(id, leases.get(id)!.rev, t)
    }
    if (plan.release.length > 0) this.nudge()
    // Lag costs two consumer-info requests per partition held: refreshed every LAG_EVERY ticks.
    if (this.ticks++ % LAG_EVERY === 0) this.lastLag = await this.handler.lag().catch(() => this.lastLag)
    await this.table.putMember(this.memberDoc())
  }

  /** Runs `fn` after every earlier operation on partition `id`'s lease. */
  private locked<T> (id: string, fn: () => Promise<T>): Promise<T> {
    const p = (this.locks.get(id) ?? Promise.resolve()).then(fn, fn)
    const tail = p.catch(() => {})
    this.locks.set(id, tail)
    void tail.then(() => { if (this.locks.get(id) === tail) this.locks.delete(id) })
    return p
  }

  /** Renews every held lease and the registration; a lease another replica has taken is lost and stops at once. */
  private async renew (): Promise<void> {
    const t = this.now()
    const lost: string[] = []
    await Promise.all([...this.held.keys()].map((id) => this.locked(id, async () => {
      const h = this.held.get(id)
      if (!h) return // freed meanwhile
      let rev: number | null
      try {
        rev = await this.table.casLease(id, { v: 1, owner: this.opts.replicaId, atMs: t }, h.rev)
      } catch (err) {
        // NATS unreachable: keep trying; holds() turns false once the fence passes.
        this.log.warn({ err, partition: id }, 'lease not renewed')
        return
      }
      if (rev !== null) {
        h.rev = rev
        h.renewSentMs = t
        return
      }
      this.held.delete(id)
      this.counts.lost++
      lost.push(id)
      this.log.warn({ partition: id, replicaId: this.opts.replicaId }, 'partition lease lost: another replica took it over')
    })))
    await this.table.putMember(this.memberDoc()).catch((err) => this.log.warn({ err }, 'replica registration not renewed'))
    for (const id of lost) await this.handler.release(id)
  }

  private async take (id: string, rev: number, t: number): Promise<void> {
    const got = await this.locked(id, async () => {
      const r = await this.table.casLease(id, { v: 1, owner: this.opts.replicaId, atMs: t }, rev)
      if (r !== null) this.held.set(id, { rev: r, renewSentMs: t })
      return r
    })
    if (got === null) return // another replica was faster
    try {
      await this.handler.acquire(id)
    } catch (err) {
      this.log.error({ err, partition: id }, 'partition not started: lease given back')
      await this.giveBack(id, false)
      return
    }
    this.counts.acquired++
    this.log.info({ partition: id, replicaId: this.opts.replicaId }, 'partition acquired')
  }

  /** Stops applying the partition, then frees its lease (a lease changed meanwhile is not ours to free). */
  private async giveBack (id: string, started = true): Promise<void> {
    if (!this.held.has(id)) return
    if (started) await this.handler.release(id)
    await this.locked(id, async () => {
      const h = this.held.get(id)
      if (!h) return // lost meanwhile
      this.held.delete(id)
      try {
        await this.table.casLease(id, { v: 1, owner: '', atMs: this.now() }, h.rev)
      } catch (err) {
        this.log.warn({ err, partition: id }, 'lease not freed: it lapses after the TTL')
      }
    })
    if (started) {
      this.counts.released++
      this.log.info({ partition: id, replicaId: this.opts.replicaId }, 'partition handed over')
    }
  }

  private memberDoc (): MemberDoc {
    return { v: 1, replicaId: this.opts.replicaId, host: hostname(), pid: process.pid, startedMs: this.startedMs, atMs: this.now(), partitions: this.owned(), lag: this.lastLag, handovers: this.handovers() }
  }
}
