// The soak's verdict: identity accounting of every acknowledged reading, in the stream and in the
// cloud's views. A reading is named by (gateway, device, n): n is the device's own counter, in the
// payload, so the device knows the identity of every reading it got a PUBACK for.
//   stream: devkit/stream-account.ts (each acknowledged identity exactly once, every missing seq
//   covered by a gap record, no gap covering a delivered seq, no batch twice); an acknowledged
//   reading absent from the stream must have been shed: a gap record covers the seqs between its
//   delivered neighbours, with room for it.
//   cloud: per device the accounting API agrees with the stream's seqs (received, highest, explained
//   gaps, nothing open), and the device's 1-minute history holds, bucket by bucket, the count, sum,
//   min and max of `n` over exactly the readings the stream holds: a reading applied twice or
//   missing changes them.
import { accountingProblems, type StreamAccount } from '../devkit/index.ts'

export interface DeviceRecord {
  deviceId: string
  /** n -> device ts of every reading sent. */
  sentTs: Map<number, number>
  /** n of every acknowledged reading. */
  ackedN: number[]
}

export interface GatewayRecord {
  gatewayId: string
  devices: DeviceRecord[]
  /** Devices that sent only bad payloads: nothing of theirs may reach the stream or the views. */
  badDeviceIds: string[]
  /** Whether this gateway may shed (its disk budget is small); the others must never. */
  mayShed: boolean
}

export interface AccountTotals {
  acked: number
  /** Distinct (device, seq) in the stream. */
  inStream: number
  /** Acknowledged readings not in the stream, explained by gap records (shed at the edge). */
  shed: number
  /** Readings sent without a PUBACK seen (the link broke) that reached the stream once anyway. */
  unackedStored: number
  /** The cloud's distinct events applied and redeliveries it dropped. */
  applied: number
  cloudDuplicates: number
  gapRecords: number
}

type ApiGet = (path: string) => Promise<unknown>

interface DeviceAccounting { deviceId: string, received: number, duplicates: number, highestSeq: number, gapsOpen: number, gapsExplained: number, gapsAbandoned: number }
interface HistoryBucket { start: number, readings: Record<string, { count: number, min: number, max: number, sum: number }> }

const MINUTE = 60_000

/** Acknowledged readings missing from the stream that gap records do not explain, as problems; and how many are explained. */
function shedProblems (acc: StreamAccount, key: string, dev: DeviceRecord): { problems: string[], explained: Set<number> } {
  const problems: string[] = []
  const explained = new Set<number>()
  const seqOf = acc.seqsOfN?.get(key) ?? new Map<number, number[]>()
  const gw = key.slice(0, key.indexOf('/'))
  const gaps = acc.gaps.filter((g) => g.gatewayId === gw && `${gw}/${g.deviceId}` === key)
  const absent = dev.ackedN.filter((n) => !seqOf.has(n))
  if (absent.length === 0) return { problems, explained }
  const present = [...seqOf.entries()].map(([n, seqs]) => [n, seqs[0]] as const).sort((a, b) => a[0] - b[0])
  for (let i = 1; i < present.length; i++) {
    if (present[i][1] <= present[i - 1][1]) problems.push(`${key}: readings n=${present[i - 1][0]} and n=${present[i][0]} got seqs ${present[i - 1][1]} and ${present[i][1]}: ingest order broken`)
  }
  const highest = Math.max(0, ...(acc.events.get(key)?.keys() ?? []), ...gaps.map((g) => g.toSeq))
  // Absent readings grouped by the delivered neighbours around them: the seqs between those must be
  // shed (gap records), at least one per absent reading.
  const brackets = new Map<string, { lo: number, hi: number, ns: number[] }>()
  for (const n of absent) {
    let lo = 0
    let hi = highest + 1
    for (const [pn, ps] of present) {
      if (pn < n) lo = ps
      else { hi = ps; break }
    }
    const k = `${lo}-${hi}`
    const b = brackets.get(k) ?? { lo, hi, ns: [] }
    b.ns.push(n)
    brackets.set(k, b)
  }
  for (const { lo, hi, ns } of brackets.values()) {
    let shed = 0
    for (let s = lo + 1; s < hi; s++) if (gaps.some((g) => s >= g.fromSeq && s <= g.toSeq)) shed++
    if (shed >= ns.length) for (const n of ns) explained.add(n)
    else problems.push(`${key}: ${ns.length} acknowledged readings (n=${ns.slice(0, 5).join(',')}${ns.length > 5 ? ',…' : ''}) never reached the stream, and only ${shed} seqs between ${lo} and ${hi} were shed`)
  }
  return { problems, explained }
}

/** Stream and cloud accounting of every gateway; problems empty when exact. */
export async function soakAccounting (acc: StreamAccount, gateways: GatewayRecord[], get: ApiGet, window: { fromMs: number, toMs: number }): Promise<{ problems: string[], streamProblems: string[], cloudProblems: string[], totals: AccountTotals }> {
  const problems = new Set<string>()
  const cloudProblems = new Set<string>()
  const totals: AccountTotals = { acked: 0, inStream: 0, shed: 0, unackedStored: 0, applied: 0, cloudDuplicates: 0, gapRecords: 0 }
  for (const g of gateways) {
    const gw = g.gatewayId
    const acked = new Map(g.devices.map((d) => [d.deviceId, d.ackedN]))
    const explained = new Set<string>()
    for (const d of g.devices) {
      const key = `${gw}/${d.deviceId}`
      const s = shedProblems(acc, key, d)
      for (const p of s.problems) problems.add(p)
      for (const n of s.explained) explained.add(`${key}: acknowledged reading n=${n} never reached the stream`)
      totals.shed += s.explained.size
    }
    // Every other problem of the stream accounting stands; an absent reading only where it was shed.
    for (const p of accountingProblems(acc, gw, acked, 'n')) if (!explained.has(p)) problems.add(p)
    const gapRecords = acc.gaps.filter((x) => x.gatewayId === gw)
    totals.gapRecords += gapRecords.length
    if (!g.mayShed && gapRecords.length > 0) problems.add(`${gw}: ${gapRecords.length} gap records, though its disk budget is never reached`)
    for (const bad of g.badDeviceIds) {
      const n = acc.events.get(`${gw}/${bad}`)?.size ?? 0
      if (n > 0) problems.add(`${gw}/${bad}: ${n} events of a device that sent only bad payloads reached the stream`)
    }

    const cloud = (await get(`/api/accounting?gateway=${encodeURIComponent(gw)}`)) as { devices: DeviceAccounting[] }
    const byId = new Map(cloud.devices.map((d) => [d.deviceId, d]))
    for (const bad of g.badDeviceIds) if ((byId.get(bad)?.received ?? 0) > 0) cloudProblems.add(`${gw}/${bad}: the cloud applied ${byId.get(bad)!.received} events of a device that sent only bad payloads`)
    for (const d of g.devices) {
      const key = `${gw}/${d.deviceId}`
      totals.acked += d.ackedN.length
      const seqs = acc.events.get(key) ?? new Map<number, number>()
      totals.inStream += seqs.size
      const ackedSet = new Set(d.ackedN)
      const ns = acc.seqsOfN?.get(key) ?? new Map<number, number[]>()
      for (const n of ns.keys()) {
        if (!d.sentTs.has(n)) problems.add(`${key}: reading n=${n} is in the stream but the device never sent it`)
        else if (!ackedSet.has(n)) totals.unackedStored++
      }
      const a = byId.get(d.deviceId)
      if (!a) { cloudProblems.add(`${key}: the cloud has no accounting for the device`); continue }
      totals.applied += a.received
      totals.cloudDuplicates += a.duplicates
      const gaps = acc.gaps.filter((x) => x.gatewayId === gw && x.deviceId === d.deviceId)
      const highest = Math.max(0, ...seqs.keys(), ...gaps.map((x) => x.toSeq))
      if (a.received !== seqs.size) cloudProblems.add(`${key}: the cloud applied ${a.received} events, the stream holds ${seqs.size} distinct seqs`)
      if (a.highestSeq !== highest) cloudProblems.add(`${key}: the cloud's highest seq is ${a.highestSeq}, the stream's ${highest}`)
      if (a.gapsOpen !== 0 || a.gapsAbandoned !== 0) cloudProblems.add(`${key}: the cloud has ${a.gapsOpen} open and ${a.gapsAbandoned} abandoned gaps`)
      if (a.received + a.gapsExplained !== a.highestSeq) cloudProblems.add(`${key}: the cloud's received ${a.received} + explained gaps ${a.gapsExplained} != highest seq ${a.highestSeq}`)
      for (const p of await historyProblems(get, gw, d, ns, window)) cloudProblems.add(p)
    }
  }
  return { problems: [...problems, ...cloudProblems], streamProblems: [...problems], cloudProblems: [...cloudProblems], totals }
}

/** The device's 1-minute rollups of `n` against the readings the stream holds, bucket by bucket. */
async function historyProblems (get: ApiGet, gw: string, d: DeviceRecord, inStream: Map<number, number[]>, window: { fromMs: number, toMs: number }): Promise<string[]> {
  const key = `${gw}/${d.deviceId}`
  const want = new Map<number, { count: number, sum: number, min: number, max: number }>()
  for (const n of inStream.keys()) {
    const ts = d.sentTs.get(n)
    if (ts === undefined) continue
    const start = Math.floor(ts / MINUTE) * MINUTE
    const b = want.get(start) ?? { count: 0, sum: 0, min: Infinity, max: -Infinity }
    b.count++
    b.sum += n
    b.min = Math.min(b.min, n)
    b.max = Math.max(b.max, n)
    want.set(start, b)
  }
  const from = Math.floor(window.fromMs / MINUTE) * MINUTE
  const to = (Math.floor(window.toMs / MINUTE) + 1) * MINUTE
  const h = (await get(`/api/devices/${encodeURIComponent(gw)}/${encodeURIComponent(d.deviceId)}/history?res=1m&from=${from}&to=${to}`)) as { buckets: HistoryBucket[] }
  const got = new Map(h.buckets.filter((b) => b.readings.n).map((b) => [b.start, b.readings.n]))
  const problems: string[] = []
  for (const start of new Set([...want.keys(), ...got.keys()])) {
    const w = want.get(start)
    const g = got.get(start)
    const fmt = (x?: { count: number, sum: number, min: number, max: number }): string => x ? `count ${x.count} sum ${x.sum} min ${x.min} max ${x.max}` : 'nothing'
    if (!w || !g || w.count !== g.count || w.sum !== g.sum || w.min !== g.min || w.max !== g.max) {
      problems.push(`${key}: minute ${new Date(start).toISOString()} of the history has ${fmt(g)} for n, the stream's readings give ${fmt(w)}`)
    }
  }
  return problems
}
