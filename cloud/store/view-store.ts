// Where the fleet views live. The aggregator reads a document, changes it, and writes it back with
// compare-and-set on its revision, so any number of aggregator replicas can share one store: a
// conflicting write fails, the writer reloads and re-applies (the apply is idempotent).
// Two implementations share one contract: MemoryViewStore (one process, tests, benchmarks) and
// KvViewStore (a NATS KV bucket: shared by replicas, survives restarts).
import { CloudError } from '../errors.ts'

export interface Versioned<T> { value: T, rev: number }

/** How a store turns documents into bytes and back (JSON unless a kind of document has its own form). */
export interface DocCodec {
  encode: (value: unknown) => Uint8Array
  decode: (bytes: Uint8Array) => unknown
}

const textEncoder = new TextEncoder()
const textDecoder = new TextDecoder()
export const JSON_CODEC: DocCodec = {
  encode: (value) => textEncoder.encode(JSON.stringify(value)),
  decode: (bytes) => JSON.parse(textDecoder.decode(bytes)),
}

/** A document store with per-key revisions. Keys are dot-separated tokens of [-/_=A-Za-z0-9]. */
export interface ViewStore {
  /** The document and its revision, or null when absent. */
  get: <T>(key: string) => Promise<Versioned<T> | null>
  /** Writes if the key is at revision `rev` (0 = must not exist); the new revision, or null on a conflict. */
  cas: <T>(key: string, value: T, rev: number) => Promise<number | null>
  /** Writes unconditionally (last writer wins); the new revision. */
  put: <T>(key: string, value: T) => Promise<number>
  /** Every key under the given leading tokens, e.g. ['dev', 'gw-1'] -> dev.gw-1.* at any depth. */
  keys: (prefix: string[]) => Promise<string[]>
  /** Releases what the store holds (not the NATS connection it was given). Idempotent. */
  close: () => Promise<void>
}

// Device ids may contain '.', a token separator in KV keys: it is written as '=' (never in an id).
const enc = (id: string): string => id.replaceAll('.', '=')
const dec = (token: string): string => token.replaceAll('=', '.')

/** The key layout of the views. */
export const viewKeys = {
  device: (gatewayId: string, deviceId: string): string => `dev.${gatewayId}.${enc(deviceId)}`,
  gateway: (gatewayId: string): string => `gw.${gatewayId}`,
  /** Dedupe state and accounting of a gateway's control events: (gateway, "$control", seq). */
  control: (gatewayId: string): string => `ctl.${gatewayId}`,
  /** The gateway's recent decisions (bounded). */
  decisions: (gatewayId: string): string => `dec.${gatewayId}`,
  /** The gateway's alerts: state per alert id (active, operator ack) and recent raise/clear events. */
  alerts: (gatewayId: string): string => `alr.${gatewayId}`,
  /** The gateway's recent commands, each with its status timeline (bounded). */
  commands: (gatewayId: string): string => `cmd.${gatewayId}`,
  /** The gateway's recent dead letters (bounded). */
  deadLetters: (gatewayId: string): string => `dlq.${gatewayId}`,
  /** One device's references to its recent decisions, alerts, commands and dead letters. */
  deviceControl: (gatewayId: string, deviceId: string): string => `dctl.${gatewayId}.${enc(deviceId)}`,
  /** Link-health history of a gateway: one sample per heartbeat (bounded). */
  health: (gatewayId: string): string => `hlth.${gatewayId}`,
  /** Ingest -> applied lag of the newest events applied for a gateway (last writer wins). */
  lag: (gatewayId: string): string => `lag.${gatewayId}`,
  /** One shard of a gateway's per-device delivery marks (apply/delivery-docs.ts). */
  delivery: (gatewayId: string, shard: number): string => `dlv.${gatewayId}.${shard}`,
  /** dev.<gw>.<device> -> { gatewayId, deviceId } */
  parseDevice: (key: string): { gatewayId: string, deviceId: string } => {
    const [, gatewayId, device] = key.split('.')
    return { gatewayId, deviceId: dec(device) }
  },
}

/**
 * Read-modify-write of one document with compare-and-set, for writers other than the aggregator
 * (the API: operator acknowledgements, queued commands). `fn` changes the document in place and
 * returns whether it changed (false: nothing is written); on a conflict it runs again on a fresh
 * copy. Returns the document as written (or as read when unchanged), or null when `create` gives null
 * for a missing document.
 */
export async function updateDoc<T> (store: ViewStore, key: string, create: () => T | null, fn: (doc: T) => boolean, attempts = 20): Promise<T | null> {
  for (let i = 0; i < attempts; i++) {
    const cur = await store.get<T>(key)
    const doc = cur ? cur.value : create()
    if (doc === null) return null
    if (!fn(doc)) return doc
    if (await store.cas(key, doc, cur?.rev ?? 0) !== null) return doc
  }
  throw new CloudError('CLOUD_ERR_VIEW_CONFLICT', `view document ${key}: ${attempts} compare-and-set conflicts in a row`)
}

/** An in-process store: documents are kept as JSON text, so readers never share objects with writers. */
export class MemoryViewStore implements ViewStore {
  private readonly docs = new Map<string, { text: string, rev: number }>()
  private seq = 0

  async get<T> (key: string): Promise<Versioned<T> | null> {
    const d = this.docs.get(key)
    return d ? { value: JSON.parse(d.text) as T, rev: d.rev } : null
  }

  async cas<T> (key: string, value: T, rev: number): Promise<number | null> {
    const cur = this.docs.get(key)?.rev ?? 0
    if (cur !== rev) return null
    return this.write(key, value)
  }

  async put<T> (key: string, value: T): Promise<number> {
    return this.write(key, value)
  }

  async keys (prefix: string[]): Promise<string[]> {
    const p = prefix.join('.') + '.'
    return [...this.docs.keys()].filter((k) => k.startsWith(p)).sort()
  }

  async close (): Promise<void> {}

  private write (key: string, value: unknown): number {
    const rev = ++this.seq
    this.docs.set(key, { text: JSON.stringify(value), rev })
    return rev
  }
}
