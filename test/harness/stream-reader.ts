// Reads every replication batch a stream holds and does the delivery accounting a test asserts on.
import assert from 'node:assert/strict'
import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { v1 } from '../../proto/index.ts'
import { provisionStreams } from '../../cloud/provision.ts'

export interface StreamAccount {
  batches: number
  batchIds: Map<string, number>
  /** "gateway/device" -> seq -> times seen */
  events: Map<string, Map<number, number>>
  gaps: Array<{ deviceId: string, fromSeq: number, toSeq: number }>
  /** "gateway/device" -> readings.n values seen */
  ns: Map<string, number[]>
}

/** Reads all messages of `stream` (by stream sequence) and decodes their batches. */
export async function readStream (url: string, stream: string, auth: { user?: string, pass?: string } = {}): Promise<StreamAccount> {
  const nc = await connect({ servers: url, ...auth })
  try {
    const jsm = await jetstreamManager(nc)
    const info = await jsm.streams.info(stream)
    const acc: StreamAccount = { batches: 0, batchIds: new Map(), events: new Map(), gaps: [], ns: new Map() }
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null)
      if (!m) continue
      const batch = v1.ReplicationBatch.decode(m.data)
      acc.batches++
      acc.batchIds.set(batch.batchId, (acc.batchIds.get(batch.batchId) ?? 0) + 1)
      for (const ev of batch.events) {
        const key = `${batch.gatewayId}/${ev.deviceId}`
        const seqs = acc.events.get(key) ?? new Map<number, number>()
        seqs.set(Number(ev.seq), (seqs.get(Number(ev.seq)) ?? 0) + 1)
        acc.events.set(key, seqs)
        const n = (ev.readings ?? []).find((r) => r.name === 'n')?.value
        if (n !== undefined && n !== null) acc.ns.set(key, [...(acc.ns.get(key) ?? []), n])
      }
      for (const g of batch.gaps) acc.gaps.push({ deviceId: g.deviceId ?? '', fromSeq: Number(g.fromSeq), toSeq: Number(g.toSeq) })
    }
    return acc
  } finally {
    await nc.close()
  }
}

/** Creates the cloud's streams on a test server. */
export async function provision (url: string, auth: { user?: string, pass?: string } = {}): Promise<void> {
  const nc = await connect({ servers: url, ...auth })
  await provisionStreams(nc)
  await nc.close()
}

/** Every acknowledged `n` arrived exactly once; every event key is unique; seqs 1..max with no hole. */
export function assertExactlyOnce (acc: StreamAccount, gatewayId: string, acked: Map<string, Set<number>>): void {
  for (const [id, count] of acc.batchIds) assert.equal(count, 1, `batch ${id} stored ${count} times`)
  for (const [deviceId, set] of acked) {
    const key = `${gatewayId}/${deviceId}`
    const seqs = acc.events.get(key) ?? new Map()
    for (const [seq, c] of seqs) assert.equal(c, 1, `${key} seq ${seq} arrived ${c} times`)
    const max = Math.max(0, ...seqs.keys())
    assert.equal(seqs.size, max, `${key}: ${max - seqs.size} sequence numbers missing`)
    const ns = new Set(acc.ns.get(key) ?? [])
    for (const n of set) assert.ok(ns.has(n), `${key}: acknowledged message ${n} never reached the stream`)
  }
}

