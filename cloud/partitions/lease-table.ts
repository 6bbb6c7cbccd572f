// The partition leases and the replica registry, in one small KV bucket (CLOUD_BUCKETS.leases):
//   <group>.lease.<partition>  -> LeaseDoc: who owns the partition ('' = free), rewritten by its
//                                 owner every tick (compare-and-set on the revision)
//   <group>.member.<replicaId> -> MemberDoc: a live replica, rewritten every tick
// A key is "stale" when its revision has not moved for ttlMs on this replica's own clock: no clock
// of another machine is trusted, only how long this one has watched a revision stand still.
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream'
import { Kvm, type KV } from '@nats-io/kv'
import type { NatsConnection } from '@nats-io/transport-node'
import { isRevisionConflict } from '../store/kv-view-store.ts'

export interface LeaseDoc { v: 1, owner: string, atMs: number }

/** What a replica says of itself; the console lists these. */
export interface MemberDoc {
  v: 1
  replicaId: string
  host: string
  pid: number
  startedMs: number
  atMs: number
  /** The partitions it owns, and per partition its apply lag (messages not yet applied, both streams). */
  partitions: string[]
  lag: Record<string, number>
  handovers: { acquired: number, released: number, lost: number }
}

export interface Observed<T> { key: string, value: T | null, rev: number, stale: boolean }

const encoder = new TextEncoder()
const decoder = new TextDecoder()

export class LeaseTable {
  /** Per key: the revision last seen and since when (this clock). Bounded by partitions + members seen. */
  private readonly seen = new Map<string, { rev: number, sinceMs: number }>()

  private constructor (private readonly kv: KV, private readonly jsm: JetStreamManager, private readonly bucket: string, readonly group: string, private readonly ttlMs: number, private readonly now: () => number) {}

  /** Opens the bucket (provisioned by cloud/provision.ts). `group` is the aggregator's durable prefix. */
  static async open (nc: NatsConnection, opts: { bucket: string, group: string, ttlMs: number, now?: () => number }): Promise<LeaseTable> {
    return new LeaseTable(await new Kvm(nc).open(opts.bucket), await jetstreamManager(nc), opts.bucket, opts.group, opts.ttlMs, opts.now ?? Date.now)
  }

  private leaseKey (id: string): string { return `${this.group}.lease.${id}` }
  private memberKey (id: string): string { return `${this.group}.member.${id}` }

  /** The leases of the given partitions as they stand now. */
  async leases (ids: string[]): Promise<Map<string, Observed<LeaseDoc>>> {
    const all = await Promise.all(ids.map((id) => this.read<LeaseDoc>(this.leaseKey(id))))
    return new Map(ids.map((id, i) => [id, all[i]]))
  }

  /** Every registered replica (stale ones included: the caller decides). */
  async members (): Promise<Array<Observed<MemberDoc>>> {
    const pre = `$KV.${this.bucket}.`
    const si = await this.jsm.streams.info(`KV_${this.bucket}`, { subjects_filter: `${pre}${this.memberKey('>')}` })
    const keys = Object.keys(si.state.subjects ?? {}).map((s) => s.slice(pre.length))
    const out = await Promise.all(keys.map((k) => this.read<MemberDoc>(k)))
    return out.filter((m) => m.value !== null)
  }

  /** Writes a lease if it is still at `rev` (0: absent); the new revision, or null when another replica wrote first. */
  async casLease (id: string, doc: LeaseDoc, rev: number): Promise<number | null> {
    const data = encoder.encode(JSON.stringify(doc))
    try {
      const r = rev === 0 ? await this.kv.create(this.leaseKey(id), data) : await this.kv.update(this.leaseKey(id), data, rev)
      this.saw(this.leaseKey(id), r)
      return r
    } catch (err) {
      if (isRevisionConflict(err) || /key exists/i.test((err as Error).message)) return null
      throw err
    }
  }

  async putMember (doc: MemberDoc): Promise<void> {
    this.saw(this.memberKey(doc.replicaId), await this.kv.put(this.memberKey(doc.replicaId), encoder.encode(JSON.stringify(doc))))
  }

  /** Removes a replica's registration (on close, or a long-dead one). */
  async removeMember (replicaId: string): Promise<void> {
    await this.kv.purge(this.memberKey(replicaId))
    this.seen.delete(this.memberKey(replicaId))
  }

  private async read<T> (key: string): Promise<Observed<T>> {
    const e = await this.kv.get(key)
    if (!e || e.operation !== 'PUT' || e.value.length === 0) {
      // A deleted or purged key (or one aged out) counts as absent, revision 0: KV create() accepts
      // a key whose last operation was a delete.
      this.seen.delete(key)
      return { key, value: null, rev: 0, stale: false }
    }
    return { key, value: JSON.parse(decoder.decode(e.value)) as T, rev: e.revision, stale: this.saw(key, e.revision) }
  }

  /** Records a revision; true when it has stood still for ttlMs on this clock. */
  private saw (key: string, rev: number): boolean {
    const now = this.now()
    const s = this.seen.get(key)
    if (!s || s.rev !== rev) {
      this.seen.set(key, { rev, sinceMs: now })
      return false
    }
    return now - s.sinceMs >= this.ttlMs
  }
}
