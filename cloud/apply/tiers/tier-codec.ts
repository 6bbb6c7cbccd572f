// The stored form of a tier document (tiers.ts): compact bytes instead of JSON. The JSON rollups
// (one object per reading and minute, field names repeated) took about 22 KB per device-hour at
// 6 events/min with 3 readings; this form about 2 KB (`npm run bench -- history`).
//
// Layout: version, tier, span start (minutes), gateway and device ids, the applied seq ranges as
// deltas, the reading names, then per slot (ascending, as a delta) the readings present (a bit mask)
// and per reading its aggregate:
//   count, scale and a flag in one varint (scale = decimals 0..6 shared by min, max and last; 7 =
//   float64 for all four values; flag: same last (ts, seq) as the previous reading of the slot),
//   min (zigzag of the scaled integer, as a delta from the reading's previous min at the same scale),
//   max - min and last - min (scaled, unsigned),
//   sum (at the same scale: sum - count * min; else its own scale or float64),
//   unless flagged: lastTs (first reading of a slot: its distance from the slot's end; the others: a
//   zigzag delta from the previous reading's) and lastSeq (a zigzag delta from the previous one).
// Values are exact: a scaled integer is used only when it gives the same double back; a sum is kept
// as a scaled integer when that is within 1e-13 of it (the rounding noise of adding decimals),
// else as float64.
import type { Agg } from '../apply.ts'
import { ByteReader, ByteWriter, unzigzag, zigzag } from './bytes.ts'
import { TIER_NAMES, TIERS, type TierDoc } from './tiers.ts'

const VERSION = 2
const FLOAT = 7
const POW = [1, 10, 100, 1e3, 1e4, 1e5, 1e6]
const MAX_SCALED = 2 ** 46
/** Up to this many reading names a slot says which are present with a bit mask; beyond, with a list. */
const MASK_NAMES = 30

/** Fewest decimals (0..6) that represent v exactly, or FLOAT. */
function scaleOf (v: number): number {
  for (let k = 0; k < POW.length; k++) {
    const r = Math.round(v * POW[k])
    if (Math.abs(r) < MAX_SCALED && r / POW[k] === v) return k
  }
  return FLOAT
}

/** Fewest decimals that keep a sum to 1e-13 relative (float noise of adding decimals), or FLOAT. */
function sumScaleOf (v: number): number {
  for (let k = 0; k < POW.length; k++) {
    const r = Math.round(v * POW[k])
    if (Math.abs(r) < MAX_SCALED && Math.abs(r / POW[k] - v) <= Math.abs(v) * 1e-13) return k
  }
  return FLOAT
}

const scaled = (v: number, k: number): number => Math.round(v * POW[k])

export function encodeTierDoc (doc: TierDoc): Uint8Array {
  const w = new ByteWriter()
  const { slotMs } = TIERS[doc.tier]
  w.u8(VERSION)
  w.u8(TIER_NAMES.indexOf(doc.tier))
  w.varint(doc.startMs / 60_000)
  w.str(doc.gatewayId)
  w.str(doc.deviceId)
  w.varint(doc.applied.length)
  let prev = 0
  for (const [a, b] of doc.applied) { w.varint(a - prev); w.varint(b - a); prev = b }
  w.varint(doc.names.length)
  for (const n of doc.names) w.str(n)
  const slots = Object.keys(doc.slots).map(Number).sort((a, b) => a - b)
  w.varint(slots.length)
  let prevSlot = -1
  let prevSeq = 0
  /** Per reading, the scaled min of its last aggregate (the next min is written as a delta at the same scale). */
  const prevMin: Array<{ k: number, min: number }> = []
  for (const s of slots) {
    w.varint(s - prevSlot - 1)
    prevSlot = s
    const aggs = doc.slots[String(s)]
    const present: number[] = []
    aggs.forEach((a, i) => { if (a) present.push(i) })
    if (doc.names.length <= MASK_NAMES) {
      let mask = 0
      for (const i of present) mask += 2 ** i
      w.varint(mask)
    } else {
      w.varint(present.length)
      let pi = -1
      for (const i of present) { w.varint(i - pi - 1); pi = i }
    }
    const slotEnd = doc.startMs + (s + 1) * slotMs
    let prevTs = -1
    for (const i of present) {
      const a = aggs[i]!
      const k = Math.max(scaleOf(a.min), scaleOf(a.max), scaleOf(a.last))
      // The last reading's (ts, seq) is mostly the previous aggregate's of the slot (one event, several readings).
      const same = prevTs >= 0 && a.lastTs === prevTs && a.lastSeq === prevSeq ? 1 : 0
      w.varint(a.count * 16 + k * 2 + same)
      if (k === FLOAT) {
        w.f64(a.min); w.f64(a.max); w.f64(a.last); w.f64(a.sum)
      } else {
        const min = scaled(a.min, k)
        const pm = prevMin[i]
        w.varint(zigzag(pm !== undefined && pm.k === k ? min - pm.min : min))
        prevMin[i] = { k, min }
        w.varint(scaled(a.max, k) - min); w.varint(scaled(a.last, k) - min)
        const ks = sumScaleOf(a.sum)
        if (ks <= k) w.varint(zigzag(scaled(a.sum, k) - a.count * min) * 2)
        else if (ks === FLOAT) { w.varint(FLOAT * 2 + 1); w.f64(a.sum) } else { w.varint(ks * 2 + 1); w.varint(zigzag(scaled(a.sum, ks))) }
      }
      if (same) continue
      if (prevTs < 0) w.varint(slotEnd - 1 - a.lastTs)
      else w.varint(zigzag(a.lastTs - prevTs))
      prevTs = a.lastTs
      w.varint(zigzag(a.lastSeq - prevSeq))
      prevSeq = a.lastSeq
    }
  }
  return w.bytes()
}

export function decodeTierDoc (bytes: Uint8Array): TierDoc {
  const r = new ByteReader(bytes)
  const version = r.u8()
  if (version !== VERSION) throw new RangeError(`tier document version ${version}, expected ${VERSION}`)
  const tier = TIER_NAMES[r.u8()]
  if (!tier) throw new RangeError('tier document of an unknown tier')
  const { slotMs } = TIERS[tier]
  const startMs = r.varint() * 60_000
  const gatewayId = r.str()
  const deviceId = r.str()
  const applied: TierDoc['applied'] = []
  let prev = 0
  for (let n = r.varint(); n > 0; n--) {
    const a = prev + r.varint()
    prev = a + r.varint()
    applied.push([a, prev])
  }
  const names: string[] = []
  for (let n = r.varint(); n > 0; n--) names.push(r.str())
  const slots: TierDoc['slots'] = {}
  let prevSlot = -1
  let prevSeq = 0
  const prevMin: Array<{ k: number, min: number }> = []
  for (let n = r.varint(); n > 0; n--) {
    const s = prevSlot + 1 + r.varint()
    prevSlot = s
    const present: number[] = []
    if (names.length <= MASK_NAMES) {
      let mask = r.varint()
      for (let i = 0; mask > 0; i++, mask = Math.floor(mask / 2)) if (mask % 2 === 1) present.push(i)
    } else {
      let pi = -1
      for (let m = r.varint(); m > 0; m--) present.push(pi = pi + 1 + r.varint())
    }
    const aggs: Array<Agg | null> = []
    const slotEnd = startMs + (s + 1) * slotMs
    let prevTs = -1
    for (const i of present) {
      const head = r.varint()
      const same = head % 2
      const k = Math.floor(head / 2) % 8
      const count = Math.floor(head / 16)
      let min: number, max: number, last: number, sum: number
      if (k === FLOAT) {
        min = r.f64(); max = r.f64(); last = r.f64(); sum = r.f64()
      } else {
        const pm = prevMin[i]
        const d = unzigzag(r.varint())
        const mi = pm !== undefined && pm.k === k ? pm.min + d : d
        prevMin[i] = { k, min: mi }
        min = mi / POW[k]; max = (mi + r.varint()) / POW[k]; last = (mi + r.varint()) / POW[k]
        const sh = r.varint()
        if (sh % 2 === 0) sum = (unzigzag(sh / 2) + count * mi) / POW[k]
        else if ((sh - 1) / 2 === FLOAT) sum = r.f64()
        else sum = unzigzag(r.varint()) / POW[(sh - 1) / 2]
      }
      let lastTs = prevTs
      let lastSeq = prevSeq
      if (!same) {
        lastTs = prevTs < 0 ? slotEnd - 1 - r.varint() : prevTs + unzigzag(r.varint())
        prevTs = lastTs
        lastSeq = prevSeq + unzigzag(r.varint())
        prevSeq = lastSeq
      }
      while (aggs.length < i) aggs.push(null)
      aggs[i] = { count, min, max, sum, last, lastTs, lastSeq }
    }
    slots[String(s)] = aggs
  }
  if (!r.done) throw new RangeError('tier document: trailing bytes')
  return { v: 2, tier, gatewayId, deviceId, startMs, applied, names, slots }
}
