// The aggregate benchmark's settings and its load: a backlog of replication batches put into
// TELEMETRY before the measurement, and a steady live load of batches with ingestTsMs = now.
import type { JetStreamClient } from '@nats-io/jetstream'
import { partitionOf, subjects, v1 } from '../proto/index.ts'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export interface Settings {
  mode: string
  backlogEvents: number
  batches: number
  eventsPerBatch: number
  gateways: number
  devicesPerGateway: number
  readingsPerEvent: number
  replicaCounts: number[]
  /** Partitions of the server's mapping and of the replicas (the gateways are spread evenly over them). */
  partitions: number
  /** CPU share of each replica in the capped rows (cores). */
  capCores: number
  /** Failover runs (SIGKILL of a replica under live load). */
  failoverRuns: number
  live: { ratePerSec: number, tickMs: number, gateways: number, devicesPerGateway: number, warmupMs: number, durationMs: number }
  drainTimeoutMs: number
}


export function settingsFor (quick: boolean): Settings {
  const batches = quick ? 50 : 500
  const eventsPerBatch = 2000
  return {
    mode: quick ? 'quick' : 'full',
    backlogEvents: batches * eventsPerBatch,
    batches,
    eventsPerBatch,
    // 16 gateways, 2 per partition: a fleet large enough spreads evenly by hashing; 16 chosen ids do so exactly.
    gateways: 16,
    devicesPerGateway: 100,
    readingsPerEvent: 2,
    replicaCounts: [1, 2, 4],
    partitions: 8,
    capCores: Number(process.env.BENCH_REPLICA_CORES ?? 0.3),
    failoverRuns: 5,
    live: { ratePerSec: 5000, tickMs: 20, gateways: 16, devicesPerGateway: 100, warmupMs: quick ? 500 : 2000, durationMs: quick ? 2000 : 20000 },
    drainTimeoutMs: quick ? 30_000 : 120_000,
  }
}


/** `count` gateway ids `<prefix>-<i>`, the same number in each of `partitions` partitions (count a multiple of it). */
export function balancedGatewayIds (prefix: string, count: number, partitions: number): string[] {
  const per = new Array<number>(partitions).fill(0)
  const ids: string[] = []
  for (let i = 0; ids.length < count; i++) {
    const id = `${prefix}-${i}`
    const p = partitionOf(id, partitions)
    if (per[p] >= Math.ceil(count / partitions)) continue
    per[p]++
    ids.push(id)
  }
  return ids
}

/** The backlog: batches round-robin over the gateways, each spread over its gateway's devices, seqs advancing batch by batch. */
export async function fillBacklog (js: JetStreamClient, s: Settings): Promise<void> {
  const now = Date.now()
  const sent = new Array<number>(s.gateways).fill(0)
  const ids = balancedGatewayIds('bench', s.gateways, s.partitions)
  const pubs: Promise<unknown>[] = []
  for (let b = 0; b < s.batches; b++) {
    const g = b % s.gateways
    const gatewayId = ids[g]
    const events = []
    for (let i = 0; i < s.eventsPerBatch; i++) {
      const n = sent[g]++
      const seq = Math.floor(n / s.devicesPerGateway) + 1
      events.push({ deviceId: `dev-${n % s.devicesPerGateway}`, seq, eventTsMs: now - 3600_000 + seq * 100, ingestTsMs: now, readings: [{ name: 'temperature', value: 20 + (n % 50) / 10 }, { name: 'humidity', value: 40 }] })
    }
    pubs.push(js.publish(subjects.telemetry(gatewayId), v1.ReplicationBatch.encode({ gatewayId, batchId: `b${b}`, events }).finish(), { msgID: `${gatewayId}-b${b}` }))
    if (pubs.length >= 32) await Promise.all(pubs.splice(0))
  }
  await Promise.all(pubs)
}

/** Steady live load: every tick, one batch per gateway with ingestTsMs = now; seqs continue across calls. */
export async function liveLoad (js: JetStreamClient, s: Settings['live'], durationMs: number, seqs: number[], partitions: number): Promise<{ events: number, batches: number, errors: number, ms: number }> {
  const ids = balancedGatewayIds('live', s.gateways, partitions)
  const perBatch = Math.max(1, Math.round(s.ratePerSec * s.tickMs / 1000 / s.gateways))
  const pubs: Promise<unknown>[] = []
  let errors = 0
  let events = 0
  let batches = 0
  const t0 = performance.now()
  for (let tick = 0; performance.now() - t0 < durationMs; tick++) {
    const now = Date.now()
    for (let g = 0; g < s.gateways; g++) {
      const gatewayId = ids[g]
      const evs = []
      for (let i = 0; i < perBatch; i++) {
        const n = seqs[g]++
        const seq = Math.floor(n / s.devicesPerGateway) + 1
        evs.push({ deviceId: `dev-${n % s.devicesPerGateway}`, seq, eventTsMs: now, ingestTsMs: now, readings: [{ name: 'temperature', value: 20 + (n % 50) / 10 }, { name: 'humidity', value: 40 }] })
      }
      const batchId = `${gatewayId}-${seqs[g]}`
      pubs.push(js.publish(subjects.telemetry(gatewayId), v1.ReplicationBatch.encode({ gatewayId, batchId, events: evs }).finish(), { msgID: batchId }).catch(() => { errors++ }))
      events += perBatch
      batches++
    }
    if (pubs.length >= 256) await Promise.all(pubs.splice(0))
    const next = t0 + (tick + 1) * s.tickMs
    const wait = next - performance.now()
    if (wait > 0) await sleep(wait)
  }
  await Promise.all(pubs)
  return { events, batches, errors, ms: performance.now() - t0 }
}
