// One ViewStore over several: each document goes to the store of its key's first token (the
// rollup tiers to their own KV buckets, each with its retention and stored form), every other key to
// the default store (VIEWS). Readers and writers keep using one store and one key layout.
import type { Versioned, ViewStore } from './view-store.ts'

export class RoutedViewStore implements ViewStore {
  /**
   * @param fallback the store of every key whose first token has no route
   * @param routes first key token -> store
   */
  constructor (readonly fallback: ViewStore, private readonly routes: ReadonlyMap<string, ViewStore>) {}

  /** The store a key (or a key prefix's first token) goes to. */
  storeFor (firstToken: string): ViewStore {
    return this.routes.get(firstToken) ?? this.fallback
  }

  private of (key: string): ViewStore {
    const dot = key.indexOf('.')
    return this.storeFor(dot < 0 ? key : key.slice(0, dot))
  }

  get<T> (key: string): Promise<Versioned<T> | null> { return this.of(key).get<T>(key) }
  cas<T> (key: string, value: T, rev: number): Promise<number | null> { return this.of(key).cas(key, value, rev) }
  put<T> (key: string, value: T): Promise<number> { return this.of(key).put(key, value) }
  keys (prefix: string[]): Promise<string[]> { return this.storeFor(prefix[0] ?? '').keys(prefix) }

  /** Closes every store it routes to (they do not close the NATS connection). */
  async close (): Promise<void> {
    await Promise.all([this.fallback, ...this.routes.values()].map((s) => s.close()))
  }
}
