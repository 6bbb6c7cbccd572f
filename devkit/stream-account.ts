// Reads every replication batch a stream holds and accounts for events by identity: each
// acknowledged reading present exactly once, every missing seq covered by a gap record, no batch
// stored twice. Used by the fault tests and by the scenario runner; a message that cannot be read
// is an error, never skipped.
import assert from 'node:assert/strict'
import { jetstreamManager } from '@nats-io/jetstream'
import { connect, type Authenticator } from '@nats-io/transport-node'
import { v1 } from '../proto/index.ts'
import { provisionStreams } from '../cloud/provision.ts'

/** How a test client logs in: user and password, or an authenticator (a .creds file's JWT and seed). */
export interface NatsAuth { user?: string, pass?: string, authenticator?: Authenticator }

export interface StreamAccount {
  batches: number
  batchIds: Map<string, number>
  /** "gateway/device" -> seq -> times seen */
  events: Map<string, Map<number, number>>
  gaps: Array<{ gatewayId: string, deviceId: string, fromSeq: number, toSeq: number }>
  /** "gateway/device" -> readings.n values seen, one entry per event */
  ns: Map<string, number[]>
  /** "gateway/device" -> event time (ms) -> times seen */
  times: Map<string, Map<number, number>>
  /** "gateway/device" -> readings.n value -> the seq of each event that carried it (filled by readStream). */
  seqsOfN?: Map<string, Map<number, number[]>>
}

const bump = (m: Map<number, number>, k: number): void => { m.set(k, (m.get(k) ?? 0) + 1) }
function inner<K, V> (m: Map<K, V>, key: K, make: () => V): V {
  let v = m.get(key)
  if (v === undefined) { v = make(); m.set(key, v) }
  return v
}

/** Reads all messages of `stream` (by stream sequence) and decodes their batches; throws on a message it cannot read. */
export async function readStream (url: string, stream: string, auth: NatsAuth = {}): Promise<StreamAccount> {
  const nc = await connect({ servers: url, ...auth })
  try {
    const jsm = await jetstreamManager(nc)
    const info = await jsm.streams.info(stream)
    const acc: StreamAccount = { batches: 0, batchIds: new Map(), events: new Map(), gaps: [], ns: new Map(), times: new Map(), seqsOfN: new Map() }
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      let m
      try {
        m = await jsm.streams.getMessage(stream, { seq })
      } catch (err) {
        throw new Error(`${stream}: message ${seq} of ${info.state.first_seq}..${info.state.last_seq} cannot be read`, { cause: err })
      }
      if (!m) throw new Error(`${stream}: message ${seq} of ${info.state.first_seq}..${info.state.last_seq} is missing`)
      const batch = v1.ReplicationBatch.decode(m.data)
      acc.batches++
      acc.batchIds.set(batch.batchId, (acc.batchIds.get(batch.batchId) ?? 0) + 1)
      for (const ev of batch.events) {
        const key = `${batch.gatewayId}/${ev.deviceId}`
        bump(inner(acc.events, key, () => new Map()), Number(ev.seq))
        bump(inner(acc.times, key, () => new Map()), Number(ev.eventTsMs))
        const n = (ev.readings ?? []).find((r) => r.name === 'n')?.value
        if (n !== undefined && n !== null) {
          inner(acc.ns, key, () => []).push(n)
          inner(inner(acc.seqsOfN!, key, () => new Map<number, number[]>()), n, () => []).push(Number(ev.seq))
        }
      }
      for (const g of batch.gaps) acc.gaps.push({ gatewayId: batch.gatewayId, deviceId: g.deviceId ?? '', fromSeq: Number(g.fromSeq), toSeq: Number(g.toSeq) })
    }
    return acc
  } finally {
    await nc.close()
  }
}

/**
 * One account of several streams, e.g. TELEMETRY and EVENTS: the gateway sends its gap records in
 * the priority lane, to EVENTS, and its readings to TELEMETRY.
 */
export function mergeAccounts (...accs: StreamAccount[]): StreamAccount {
  const out: StreamAccount = { batches: 0, batchIds: new Map(), events: new Map(), gaps: [], ns: new Map(), times: new Map(), seqsOfN: new Map() }
  const addCounts = <K>(into: Map<K, number>, from: Map<K, number>): void => { for (const [k, c] of from) into.set(k, (into.get(k) ?? 0) + c) }
  for (const a of accs) {
    out.batches += a.batches
    addCounts(out.batchIds, a.batchIds)
    for (const [key, m] of a.events) addCounts(inner(out.events, key, () => new Map()), m)
    for (const [key, m] of a.times) addCounts(inner(out.times, key, () => new Map()), m)
    for (const [key, ns] of a.ns) inner(out.ns, key, () => []).push(...ns)
    for (const [key, m] of a.seqsOfN ?? []) {
      const into = inner(out.seqsOfN!, key, () => new Map<number, number[]>())
      for (const [n, seqs] of m) inner(into, n, () => []).push(...seqs)
    }
    out.gaps.push(...a.gaps)
  }
  return out
}

/** Creates the cloud's streams on a test server. */
export async function provision (url: string, auth: NatsAuth = {}): Promise<void> {
  const nc = await connect({ servers: url, ...auth })
  await provisionStreams(nc)
  await nc.close()
}

/** How an acknowledged reading is recognised in the stream: its `n` reading, or its device event time. */
export type IdentityBy = 'n' | 'ts'

/**
 * Every problem of the accounting of `gatewayId`'s devices, as sentences (empty when exact):
 * a batch stored twice; a seq delivered twice; a seq missing with no gap record covering it; a gap
 * record covering a seq that was delivered; an acknowledged reading absent or present more than once.
 */
export function accountingProblems (acc: StreamAccount, gatewayId: string, acked: Map<string, Iterable<number>>, by: IdentityBy = 'n'): string[] {
  const problems: string[] = []
  for (const [id, count] of acc.batchIds) if (count !== 1) problems.push(`batch ${id} stored ${count} times`)
  const gapsOf = (deviceId: string): Array<{ fromSeq: number, toSeq: number }> => acc.gaps.filter((g) => g.gatewayId === gatewayId && g.deviceId === deviceId)
  for (const [deviceId, identities] of acked) {
    const key = `${gatewayId}/${deviceId}`
    const seqs = acc.events.get(key) ?? new Map<number, number>()
    const gaps = gapsOf(deviceId)
    for (const [seq, c] of seqs) {
      if (c !== 1) problems.push(`${key} seq ${seq} arrived ${c} times`)
      if (gaps.some((g) => seq >= g.fromSeq && seq <= g.toSeq)) problems.push(`${key} seq ${seq} arrived, yet a gap record says it was shed`)
    }
    const max = Math.max(0, ...seqs.keys(), ...gaps.map((g) => g.toSeq))
    for (let s = 1; s <= max; s++) {
      if (!seqs.has(s) && !gaps.some((g) => s >= g.fromSeq && s <= g.toSeq)) problems.push(`${key} seq ${s} missing, and no gap record explains it`)
    }
    const seen = new Map<number, number>()
    if (by === 'n') for (const n of acc.ns.get(key) ?? []) bump(seen, n)
    else for (const [t, c] of acc.times.get(key) ?? []) seen.set(t, c)
    for (const id of identities) {
      const c = seen.get(id) ?? 0
      if (c !== 1) problems.push(`${key}: acknowledged reading ${by}=${id} ${c === 0 ? 'never reached the stream' : `arrived ${c} times`}`)
    }
  }
  return problems
}

/** Asserts the accounting is exact (see accountingProblems); the message lists the first problems. */
export function assertExactlyOnce (acc: StreamAccount, gatewayId: string, acked: Map<string, Iterable<number>>, by: IdentityBy = 'n'): void {
  const problems = accountingProblems(acc, gatewayId, acked, by)
  assert.deepEqual(problems.slice(0, 20), [], `${problems.length} accounting problems`)
}
