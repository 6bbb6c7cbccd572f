// Aggregator apply rate per replica: replication batches are put into TELEMETRY first (outside the
// measurement), then one aggregator consumes them and applies them to the views; events/s is
// applied events over the time from start to the last ack. Peers in the same run: the same
// aggregator with the in-memory view store (what KV costs), and a bare pull consumer that only
// decodes and acks (the ceiling set by JetStream and protobuf decoding).
import { jetstream, jetstreamManager, AckPolicy } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { Aggregator } from '../cloud/aggregator.ts'
import { startNats } from '../cloud/embedded-nats.ts'
import { KvViewStore } from '../cloud/kv-view-store.ts'
import { createLogger } from '../cloud/log.ts'
import { createCloudMetrics } from '../cloud/metrics.ts'
import { provisionStreams } from '../cloud/provision.ts'
import { provisionViews } from '../cloud/provision.ts'
import { MemoryViewStore } from '../cloud/view-store.ts'
import { STREAMS, v1 } from '../proto/index.ts'
import type { BenchOptions, BenchReport } from './run.ts'

interface Result { target: string, events: number, seconds: number, eventsPerSec: number, meanGroupApplyMs: number | null }

export async function aggregate (opts: BenchOptions): Promise<BenchReport> {
  const batches = opts.quick ? 100 : 500
  const perBatch = 2000
  const devices = 100
  const settings = { batches, eventsPerBatch: perBatch, devices, readingsPerEvent: 2 }
  const results: Result[] = []
  for (const target of ['consumer only (decode + ack)', 'aggregator, memory store', 'aggregator, KV store'] as const) {
    const nats = await startNats()
    try {
      const nc = await connect({ servers: nats.url })
      await provisionStreams(nc)
      await provisionViews(nc)
      const js = jetstream(nc)
      // Each device's seqs advance batch by batch, as a gateway's backlog would.
      const now = Date.now()
      const pubs: Promise<unknown>[] = []
      for (let b = 0; b < batches; b++) {
        const events = []
        for (let i = 0; i < perBatch; i++) {
          const n = b * perBatch + i
          const seq = Math.floor(n / devices) + 1
          events.push({ deviceId: `dev-${n % devices}`, seq, eventTsMs: now - 3600_000 + seq * 100, ingestTsMs: now, readings: [{ name: 'temperature', value: 20 + (n % 50) / 10 }, { name: 'humidity', value: 40 }] })
        }
        pubs.push(js.publish('iot.bench.telemetry', v1.ReplicationBatch.encode({ gatewayId: 'bench', batchId: `b${b}`, events }).finish(), { msgID: `b${b}` }))
        if (pubs.length >= 32) await Promise.all(pubs.splice(0))
      }
      await Promise.all(pubs)
      const total = batches * perBatch
      const t0 = performance.now()
      let seconds: number
      let meanGroup: number | null = null
      if (target.startsWith('consumer only')) {
        const jsm = await jetstreamManager(nc)
        await jsm.consumers.add(STREAMS.telemetry.name, { durable_name: 'bare', ack_policy: AckPolicy.Explicit })
        const c = await js.consumers.get(STREAMS.telemetry.name, 'bare')
        let seen = 0
        const iter = await c.consume({ max_messages: 64 })
        for await (const m of iter) {
          seen += v1.ReplicationBatch.decode(m.data).events.length
          m.ack()
          if (seen >= total) break
        }
        seconds = (performance.now() - t0) / 1000
      } else {
        const store = target.endsWith('memory store') ? new MemoryViewStore() : await KvViewStore.open(nc, 'VIEWS')
        const metrics = createCloudMetrics({ defaultMetrics: false })
        const agg = new Aggregator(nc, store, metrics, createLogger('warn'), { streams: ['telemetry'] })
        await agg.start()
        while (agg.stats().applied < total) await new Promise((resolve) => setTimeout(resolve, 5))
        seconds = (performance.now() - t0) / 1000
        const flush = (await metrics.flushSeconds.get()).values
        const count = flush.find((v) => v.metricName?.endsWith('_count'))?.value ?? 0
        const sum = flush.find((v) => v.metricName?.endsWith('_sum'))?.value ?? 0
        meanGroup = count ? Math.round(sum / count * 1e4) / 10 : null
        await agg.close()
      }
      results.push({ target, events: total, seconds: Math.round(seconds * 1000) / 1000, eventsPerSec: Math.round(total / seconds), meanGroupApplyMs: meanGroup })
      await nc.close()
    } finally {
      await nats.cleanup()
    }
  }
  const bare = results[0].eventsPerSec
  return {
    settings,
    results,
    ratios: results.map((r) => ({ target: r.target, vsConsumerOnly: Math.round(r.eventsPerSec / bare * 100) / 100 })),
    table: {
      columns: ['target', 'events', 'seconds', 'events/s', 'mean group apply (ms)', 'vs consumer only'],
      rows: results.map((r) => [r.target, String(r.events), r.seconds.toFixed(2), r.eventsPerSec.toLocaleString('en-US'), r.meanGroupApplyMs === null ? '-' : String(r.meanGroupApplyMs), (r.eventsPerSec / bare).toFixed(2) + '×']),
    },
    notes: [
      'One replica; the backlog is in the stream before the clock starts. Target: >= 150k events/s per replica.',
      'Not yet measured here: two replicas, and end-to-end latency p50/p99 under live load (issue #5).',
    ],
    failures: [],
  }
}
