// How an event is stored in the outbox, and how the replicator puts it back on the wire without
// decoding it. A row's body is the encoded iot.v1.TelemetryEvent (lane 1) or ControlEvent (lane 0)
// without gateway_id and, from schema version 3 on, without device_id (field 2 in both): the row
// names its device by a small number instead (events.dev = device_seq.num), so a device id costs
// 1-3 bytes per buffered event rather than its length plus 2 (38 bytes for a UUID).
// Rows written before version 3 have dev NULL and keep device_id in their body.
//
// protobufjs writes fields in number order and gateway_id is never stored, so the device_id field
// followed by such a body is byte for byte what encoding the whole event gives (and protobuf
// parsers take fields in any order anyway): the cloud sees the same messages as before.

/** Tag of device_id: field 2, length-delimited, in TelemetryEvent and ControlEvent alike. */
const DEVICE_ID_TAG = (2 << 3) | 2

/** A stored event as the uplink reads it. dev: the device's number, or null when body holds device_id. */
export interface StoredRow { dev: number | null, body: Buffer }

/** The encoded device_id field (tag, length, UTF-8 bytes) that a version-3 body leaves out. */
export function deviceIdField (deviceId: string): Buffer {
  const len = Buffer.byteLength(deviceId, 'utf8')
  const out = Buffer.allocUnsafe(1 + varintSize(len) + len)
  out[0] = DEVICE_ID_TAG
  const at = writeVarint(out, 1, len)
  out.write(deviceId, at, 'utf8')
  return out
}

/** Bytes that n (0 <= n < 2^31) takes as a protobuf varint. */
export function varintSize (n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5
}

/** Writes n (0 <= n < 2^31) as a varint at off; returns the offset after it. */
function writeVarint (out: Buffer, off: number, n: number): number {
  while (n >= 0x80) {
    out[off++] = (n & 0x7f) | 0x80
    n >>>= 7
  }
  out[off++] = n
  return off
}

/**
 * A whole ReplicationBatch in one buffer: `header` (the batch encoded without events), then each
 * row as repeated field `field` (3: events, 6: control; below 16, so a one-byte tag) with its
 * device_id put back in front of the body from `fieldOf(dev)` (deviceIdField bytes, cached by the
 * caller). The size is computed first, so the payload is allocated once and no event is re-encoded.
 */
export function encodeBatch (header: Uint8Array, field: number, rows: readonly StoredRow[], fieldOf: (dev: number) => Buffer): Buffer {
  const tag = (field << 3) | 2
  let size = header.length
  for (const r of rows) {
    const inner = (r.dev === null ? 0 : fieldOf(r.dev).length) + r.body.length
    size += 1 + varintSize(inner) + inner
  }
  const out = Buffer.allocUnsafe(size)
  out.set(header, 0)
  let off = header.length
  for (const r of rows) {
    const prefix = r.dev === null ? null : fieldOf(r.dev)
    out[off++] = tag
    off = writeVarint(out, off, (prefix === null ? 0 : prefix.length) + r.body.length)
    if (prefix !== null) off += prefix.copy(out, off)
    off += r.body.copy(out, off)
  }
  // allocUnsafe: a miscount would send stale memory to the cloud; refuse instead.
  if (off !== size) throw new RangeError(`replication batch encoded ${off} bytes of the ${size} counted`)
  return out
}

/**
 * The seq (field 3) and ingest time (field 5) of a stored body, read off its first bytes without
 * decoding it: both are varints near the front (fields in number order). Works on a head of the
 * body as long as it reaches field 5 (the uplink's ledger reads 32 bytes), and on bodies from before
 * version 3 (a device_id field first). 0 for a field not found.
 */
export function storedSeqAndIngest (body: Uint8Array): { seq: number, ingestTsMs: number } {
  let seq = 0
  let ingestTsMs = 0
  let off = 0
  while (off < body.length) {
    const tag = body[off++]
    const field = tag >>> 3
    if (field > 5) break
    if ((tag & 7) === 2) {
      let len = 0
      let shift = 0
      while (off < body.length) { const b = body[off++]; len += (b & 0x7f) * 2 ** shift; shift += 7; if (b < 0x80) break }
      off += len
      continue
    }
    if ((tag & 7) !== 0) break
    let v = 0
    let shift = 0
    let done = false
    while (off < body.length) { const b = body[off++]; v += (b & 0x7f) * 2 ** shift; shift += 7; if (b < 0x80) { done = true; break } }
    if (!done) break
    if (field === 3) seq = v
    else if (field === 5) { ingestTsMs = v; break }
  }
  return { seq, ingestTsMs }
}

/** The seq of a stored body (storedSeqAndIngest's first half, cheaper: it stops at field 3). */
export function storedSeq (body: Uint8Array): number {
  // Version 3 bodies start with the seq's tag (0x18): the common case costs one varint.
  if (body[0] === 0x18) {
    let v = 0
    let scale = 1
    for (let off = 1; off < body.length && off < 10; off++) { const b = body[off]; v += (b & 0x7f) * scale; scale *= 128; if (b < 0x80) return v }
  }
  return storedSeqAndIngest(body).seq
}
