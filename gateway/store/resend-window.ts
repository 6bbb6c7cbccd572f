// Recognises a device's resends. A device whose PUBACK was lost (the gateway lost power right after
// the commit, or the link dropped under it) publishes the same bytes again after reconnecting, as a
// fresh packet: MQTT.js does not even set DUP, so the packet cannot tell. The reading can: its
// identity is (device, the ts the device stamped on it, a 32-bit hash of the raw payload). Per
// device the identities of the last K committed readings are kept here, and persisted beside the
// device's sequence counter in the same transaction as the events, so a power cut loses neither.
// Readings still queued for a commit are tracked too, so a resend that overtakes its first copy's
// commit waits for it. Payloads without a device ts are never matched: identical bytes may then be
// a legitimate repeat.
//
// This runs for every stamped publish, so it is built for the miss. Devices stamp readings with a
// clock that moves forward, so a reading newer than every one the device sent before is new without
// looking further, and so is one of the same millisecond with a hash not seen in it; only the rest
// (a resend, or a device sending readings out of order) is searched for. Identities live in typed
// arrays, a queued reading is known by an integer ticket (no allocation per publish), and a window
// is encoded with two memory copies.
import type { GatewayError } from '../errors.ts'

/**
 * MurmurHash3 (x86, 32 bits, seed 0) of the payload: 4-byte blocks, each mixed before it enters the
 * state, then a final avalanche, so payloads that differ in a digit or two spread over all 2^32
 * values. A word-wise FNV-1a used before collided about 100 times more often than a random 32-bit
 * hash on sensor payloads that differ only in a counter (560 collisions in 200k payloads sharing one
 * ts, against about 5): a collision with the same ts drops a distinct reading as a resend.
 * Persisted in the resend window: a change only makes resends stored before it go unrecognised.
 */
export function payloadHash (bytes: Uint8Array): number {
  const c1 = 0xcc9e2d51
  const c2 = 0x1b873593
  let h = 0
  const blocks = bytes.length & ~3
  let i = 0
  for (; i < blocks; i += 4) {
    let k = bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24)
    k = Math.imul(k, c1)
    k = (k << 15) | (k >>> 17)
    h ^= Math.imul(k, c2)
    h = (h << 13) | (h >>> 19)
    h = (Math.imul(h, 5) + 0xe6546b64) | 0
  }
  let k = 0
  switch (bytes.length & 3) {
    case 3: k ^= bytes[i + 2] << 16 // falls through
    case 2: k ^= bytes[i + 1] << 8 // falls through
    case 1:
      k ^= bytes[i]
      k = Math.imul(k, c1)
      k = (k << 15) | (k >>> 17)
      h ^= Math.imul(k, c2)
  }
  h ^= bytes.length
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

export type SettleCallback = (err: GatewayError | null) => void

/** find(): the reading is new. */
export const NEW_READING = -1
/** find(): the reading is committed already. (Otherwise find returns the ticket of its queued first copy.) */
export const COMMITTED_READING = -2

/**
 * Persisted form: HEADER_BYTES with the newest ts seen (float64), then per identity the ts (ms,
 * modulo 2^32: 49 days, far beyond any resend) and the hash, both uint32; little-endian, oldest first.
 */
export const HEADER_BYTES = 8
export const ENTRY_BYTES = 8
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1
/** Hashes remembered for the newest millisecond of a device; past that, its readings are searched for. */
const AT_MAX = 16

/** One device: a ring of the last `size` committed identities, and its readings awaiting a commit. */
class DeviceWindow {
  /** [ts, hash] pairs; once full, the oldest pair is at `next`. */
  readonly ring: Uint32Array
  count = 0
  next = 0
  /** Changed since it was last persisted. */
  dirty = false
  /** At least the newest device ts among the committed and queued readings: any newer reading is new. */
  maxTs = -Infinity
  /** Hashes of the readings stamped maxTs (atMaxCount of them; -1: not known, search instead). */
  private readonly atMax = new Uint32Array(AT_MAX)
  private atMaxCount = 0
  // Readings queued for commit, by ticket (ticket & mask is the slot): tickets head..tail-1 are
  // queued or settled out of order (live 0). Commits settle them in queue order, so head advances.
  private pHash = new Uint32Array(4)
  private pTs = new Uint32Array(4)
  private pLive = new Uint8Array(4)
  private head = 0
  private tail = 0
  /** Resends waiting for a queued first copy, by its ticket (rare: null until needed). */
  waiters: Map<number, SettleCallback[]> | null = null

  constructor (readonly size: number) {
    this.ring = new Uint32Array(size * 2)
  }

  /** Notes the ts of a reading the device sent (queued now). */
  stamp (tsMs: number, hash: number): void {
    if (tsMs > this.maxTs) {
      this.maxTs = tsMs
      this.atMaxCount = 0
    }
    if (tsMs === this.maxTs && this.atMaxCount >= 0) {
      if (this.atMaxCount === AT_MAX) this.atMaxCount = -1
      else this.atMax[this.atMaxCount++] = hash
    }
  }

  /** True when the reading cannot be one the device sent before: the common case, answered in O(1). */
  surelyNew (tsMs: number, hash: number): boolean {
    if (tsMs > this.maxTs) return true
    if (tsMs < this.maxTs || this.atMaxCount < 0) return false
    for (let i = 0; i < this.atMaxCount; i++) if (this.atMax[i] === hash) return false
    return true
  }

  committed (ts: number, hash: number): boolean {
    const r = this.ring
    for (let i = 0, n = this.count * 2; i < n; i += 2) if (r[i + 1] === hash && r[i] === ts) return true
    return false
  }

  /** The ticket of a queued reading with this identity, or NEW_READING. */
  queued (ts: number, hash: number): number {
    if (this.head === this.tail) return NEW_READING
    const mask = this.pHash.length - 1
    for (let t = this.head; t < this.tail; t++) {
      const i = t & mask
      if (this.pHash[i] === hash && this.pTs[i] === ts && this.pLive[i] === 1) return t
    }
    return NEW_READING
  }

  enqueue (ts: number, hash: number): number {
    if (this.tail - this.head === this.pHash.length) this.grow()
    const t = this.tail++
    const i = t & (this.pHash.length - 1)
    this.pHash[i] = hash
    this.pTs[i] = ts
    this.pLive[i] = 1
    return t
  }

  /** Moves a queued reading into the committed ring. */
  commit (t: number): void {
    const i = t & (this.pHash.length - 1)
    this.push(this.pTs[i], this.pHash[i])
  }

  dequeue (t: number): void {
    const i = t & (this.pHash.length - 1)
    if (t < this.head || t >= this.tail || this.pLive[i] === 0) return
    this.pLive[i] = 0
    while (this.head < this.tail && this.pLive[this.head & (this.pHash.length - 1)] === 0) this.head++
    // Empty: start the tickets again, so they stay small integers. None is held any more.
    if (this.head === this.tail) this.head = this.tail = 0
  }

  private grow (): void {
    const oldMask = this.pHash.length - 1
    const cap = this.pHash.length * 2
    const hashes = new Uint32Array(cap)
    const tss = new Uint32Array(cap)
    const live = new Uint8Array(cap)
    for (let t = this.head; t < this.tail; t++) {
      hashes[t & (cap - 1)] = this.pHash[t & oldMask]
      tss[t & (cap - 1)] = this.pTs[t & oldMask]
      live[t & (cap - 1)] = this.pLive[t & oldMask]
    }
    this.pHash = hashes
    this.pTs = tss
    this.pLive = live
  }

  push (ts: number, hash: number): void {
    this.ring[2 * this.next] = ts
    this.ring[2 * this.next + 1] = hash
    this.next = this.next + 1 === this.size ? 0 : this.next + 1
    if (this.count < this.size) this.count++
    this.dirty = true
  }

  /** Oldest first, after the header. */
  encode (): Buffer {
    const out = Buffer.allocUnsafe(HEADER_BYTES + this.count * ENTRY_BYTES)
    out.writeDoubleLE(this.maxTs, 0)
    if (!LITTLE_ENDIAN) {
      for (let k = 0, start = this.count < this.size ? 0 : this.next; k < this.count; k++) {
        const i = (start + k) % this.size
        out.writeUInt32LE(this.ring[2 * i], HEADER_BYTES + k * ENTRY_BYTES)
        out.writeUInt32LE(this.ring[2 * i + 1], HEADER_BYTES + k * ENTRY_BYTES + 4)
      }
      return out
    }
    const bytes = Buffer.from(this.ring.buffer, this.ring.byteOffset, this.ring.byteLength)
    if (this.count < this.size) bytes.copy(out, HEADER_BYTES, 0, this.count * ENTRY_BYTES)
    else {
      const split = this.next * ENTRY_BYTES
      bytes.copy(out, HEADER_BYTES, split)
      bytes.copy(out, HEADER_BYTES + bytes.length - split, 0, split)
    }
    return out
  }

  /** Replaces the ring with a persisted one; keeps its newest `size` identities (K may have changed). */
  decode (blob: Uint8Array | null): void {
    this.count = 0
    this.next = 0
    this.dirty = false
    // Anything unreadable counts as empty: at worst a resend is stored twice, never a reading lost.
    if (!blob || blob.length < HEADER_BYTES || (blob.length - HEADER_BYTES) % ENTRY_BYTES !== 0) return
    const buf = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength)
    const max = buf.readDoubleLE(0)
    // An upper bound stays one: readings still queued may be newer than the persisted ones. The
    // hashes of the persisted newest millisecond are not kept: search those.
    if (!(max < this.maxTs)) {
      this.maxTs = Number.isNaN(max) ? Infinity : max
      this.atMaxCount = -1
    }
    const n = (blob.length - HEADER_BYTES) / ENTRY_BYTES
    for (let k = Math.max(0, n - this.size); k < n; k++) this.push(buf.readUInt32LE(HEADER_BYTES + k * ENTRY_BYTES), buf.readUInt32LE(HEADER_BYTES + k * ENTRY_BYTES + 4))
    this.dirty = false
  }
}

/** The resend windows of every device. size 0 turns de-duplication off. */
export class ResendWindows {
  private readonly devices = new Map<string, DeviceWindow>()
  /** Windows loaded at start, decoded on their device's first stamped reading: start-up stays a table read. */
  private readonly persisted = new Map<string, Uint8Array>()

  constructor (readonly size: number) {}

  get enabled (): boolean { return this.size > 0 }

  /** Start-up: a device's committed identities as persisted (decoded when first needed). */
  load (deviceId: string, blob: Uint8Array): void {
    if (this.enabled && blob.length > 0) this.persisted.set(deviceId, blob)
  }

  /** After a failed commit: the device's committed identities as the database still has them. */
  restore (deviceId: string, blob: Uint8Array | null): void {
    this.persisted.delete(deviceId)
    const w = this.devices.get(deviceId)
    if (w) w.decode(blob)
    else if (blob && blob.length > 0) this.load(deviceId, blob)
  }

  private window (deviceId: string): DeviceWindow | undefined {
    const w = this.devices.get(deviceId)
    if (w !== undefined || this.persisted.size === 0) return w
    const blob = this.persisted.get(deviceId)
    if (blob === undefined) return undefined
    this.persisted.delete(deviceId)
    const loaded = new DeviceWindow(this.size)
    loaded.decode(blob)
    this.devices.set(deviceId, loaded)
    return loaded
  }

  /** Whether the device sent this reading before: NEW_READING, COMMITTED_READING, or the ticket of its queued first copy. */
  find (deviceId: string, tsMs: number, hash: number): number {
    const w = this.window(deviceId)
    if (!w || w.surelyNew(tsMs, hash)) return NEW_READING
    const ts = tsMs >>> 0
    const t = w.queued(ts, hash)
    if (t !== NEW_READING) return t
    return w.committed(ts, hash) ? COMMITTED_READING : NEW_READING
  }

  /** Runs cb when the queued first copy with this ticket (from find) is settled. */
  wait (deviceId: string, ticket: number, cb: SettleCallback): void {
    const w = this.devices.get(deviceId)!
    w.waiters ??= new Map()
    const list = w.waiters.get(ticket)
    if (list) list.push(cb)
    else w.waiters.set(ticket, [cb])
  }

  /** Notes a new reading queued for commit; returns its ticket. */
  queue (deviceId: string, tsMs: number, hash: number): number {
    let w = this.window(deviceId)
    if (!w) {
      w = new DeviceWindow(this.size)
      this.devices.set(deviceId, w)
    }
    w.stamp(tsMs, hash)
    return w.enqueue(tsMs >>> 0, hash)
  }

  /** Inside the commit transaction: the queued reading is stored, its identity joins the window. */
  stored (deviceId: string, ticket: number): void {
    this.devices.get(deviceId)?.commit(ticket)
  }

  /** After its commit (err null) or its refusal: the reading stops being queued; its resends learn the outcome. */
  settle (deviceId: string, ticket: number, err: GatewayError | null): void {
    const w = this.devices.get(deviceId)
    if (!w) return
    w.dequeue(ticket)
    if (w.waiters === null) return
    const waiters = w.waiters.get(ticket)
    if (!waiters) return
    w.waiters.delete(ticket)
    if (w.waiters.size === 0) w.waiters = null
    for (const cb of waiters) cb(err)
  }

  /** The device's window to persist when it changed since the last call, else null. */
  takeDirty (deviceId: string): Buffer | null {
    const w = this.devices.get(deviceId)
    if (!w || !w.dirty) return null
    w.dirty = false
    return w.encode()
  }
}
