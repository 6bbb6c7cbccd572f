// Read-modify-write of view documents with compare-and-set, behind a bounded in-memory cache.
// Documents only grow (seq sets are monotone), so a cached copy can decide "already applied" without
// a read; a stale copy only costs a conflict, after which the document is re-read and the change
// applied again. Used by the aggregator only: one apply at a time per process, so no two callers
// race on one cached copy.
import { CloudError } from '../errors.ts'
import type { ViewStore } from '../store/view-store.ts'

interface Cached { value: unknown, rev: number }

export interface DocWriterOptions {
  /** Documents cached (LRU; overflow policy: the least recently used is dropped). */
  cacheDocs: number
  /** Compare-and-set attempts per document before giving up with CLOUD_ERR_VIEW_CONFLICT. */
  casAttempts: number
  /** Called on every compare-and-set conflict (counts and metrics). */
  onConflict: () => void
}

export class DocWriter {
  private readonly cache = new Map<string, Cached>()

  constructor (private readonly store: ViewStore, private readonly opts: DocWriterOptions) {}

  /**
   * Read-modify-write of one document with compare-and-set. `fn` changes the document in place and
   * says whether it changed; on a conflict the copy is dropped, re-read and `fn` runs again.
   */
  async update<T> (key: string, create: () => T, fn: (doc: T) => boolean): Promise<void> {
    for (let attempt = 0; attempt < this.opts.casAttempts; attempt++) {
      let cur = this.cache.get(key) as { value: T, rev: number } | undefined
      if (cur) this.cache.delete(key)
      else cur = (await this.store.get<T>(key)) ?? { value: create(), rev: 0 }
      if (!fn(cur.value)) {
        this.remember(key, cur)
        return
      }
      // A failed write leaves the copy changed but unwritten: it is not cached again.
      const rev = await this.store.cas(key, cur.value, cur.rev)
      if (rev !== null) {
        this.remember(key, { value: cur.value, rev })
        return
      }
      this.opts.onConflict()
    }
    throw new CloudError('CLOUD_ERR_VIEW_CONFLICT', `view document ${key}: ${this.opts.casAttempts} compare-and-set conflicts in a row`)
  }

  /** Drops the cached copies whose key matches (documents another replica may have written since). */
  forget (match: (key: string) => boolean): void {
    for (const key of [...this.cache.keys()]) if (match(key)) this.cache.delete(key)
  }

  private remember (key: string, entry: Cached): void {
    this.cache.set(key, entry)
    if (this.cache.size > this.opts.cacheDocs) this.cache.delete(this.cache.keys().next().value!)
  }
}
