// The views in a NATS KV bucket: shared by every aggregator and console replica, replicated with the
// bucket (1 or 3 copies), and surviving restarts. Revisions are the KV's; compare-and-set is KV update().
import { JetStreamApiCodes, JetStreamApiError, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream'
import { Kvm, type KV } from '@nats-io/kv'
import type { NatsConnection } from '@nats-io/transport-node'
import { JSON_CODEC, type DocCodec, type Versioned, type ViewStore } from './view-store.ts'

/** True for KV's "the key is not at the revision you expected" error. */
export function isRevisionConflict (err: unknown): boolean {
  if (err instanceof JetStreamApiError) {
    return err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown
  }
  return /wrong last sequence/i.test((err as Error)?.message ?? '')
}

export class KvViewStore implements ViewStore {
  private constructor (readonly kv: KV, private readonly jsm: JetStreamManager, readonly bucket: string, private readonly codec: DocCodec) {}

  /** Opens an existing bucket (provisioned by cloud/provision.ts); documents stored as JSON unless a codec is given. */
  static async open (nc: NatsConnection, bucket: string, codec: DocCodec = JSON_CODEC): Promise<KvViewStore> {
    return new KvViewStore(await new Kvm(nc).open(bucket), await jetstreamManager(nc), bucket, codec)
  }

  async get<T> (key: string): Promise<Versioned<T> | null> {
    const e = await this.kv.get(key)
    if (!e || e.operation !== 'PUT' || e.value.length === 0) return null
    return { value: this.codec.decode(e.value) as T, rev: e.revision }
  }

  async cas<T> (key: string, value: T, rev: number): Promise<number | null> {
    const data = this.codec.encode(value)
    try {
      return rev === 0 ? await this.kv.create(key, data) : await this.kv.update(key, data, rev)
    } catch (err) {
      if (isRevisionConflict(err)) return null
      throw err
    }
  }

  async put<T> (key: string, value: T): Promise<number> {
    return this.kv.put(key, this.codec.encode(value))
  }

  // One stream-info request with a subjects filter (paged by the client) instead of kv.keys(): the
  // latter runs an ordered consumer that, with writers busy on the bucket, stalled here for its 30 s
  // expiry. Deleted keys may be listed; get() returns null for them.
  async keys (prefix: string[]): Promise<string[]> {
    const pre = `$KV.${this.bucket}.`
    const si = await this.jsm.streams.info(`KV_${this.bucket}`, { subjects_filter: `${pre}${prefix.join('.')}.>` })
    return Object.keys(si.state.subjects ?? {}).map((s) => s.slice(pre.length)).sort()
  }

  async close (): Promise<void> {}
}
