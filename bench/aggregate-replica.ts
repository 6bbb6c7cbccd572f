// One aggregator replica as its own process, for bench/aggregate.ts: its own NATS connection, KV
// view store and metrics, sharing the partitions' durable consumers and leases with every other
// replica on the same nats-server, as separate cloud processes would. Driven by lines on stdin:
//   start      - start the aggregator (takes its share of the partitions); stats lines follow
//   lat-begin  - from now on keep every observation of the end-to-end latency histogram
//   lat-end    - print the observations kept since lat-begin (seconds) and stop keeping them
//   stop       - close the aggregator (finishes and acks its group), print final stats, exit
// and answers with JSON lines on stdout: {type:'ready'}, {type:'stats',…}, {type:'lat',…}, {type:'done',…}.
// Usage: node --import tsx bench/aggregate-replica.ts <nats-url> <partitions> [leaseTtlMs]
import { subscribe } from 'node:diagnostics_channel'
import { createInterface } from 'node:readline'
import { connect } from '@nats-io/transport-node'
import { APPLY_WINDOW_CHANNEL, Aggregator } from '../cloud/apply/aggregator.ts'
import { openFleetStore } from '../cloud/apply/tiers/tier-store.ts'
import { createLogger } from '../cloud/log.ts'
import { createCloudMetrics } from '../cloud/metrics.ts'

const STATS_EVERY_MS = 20

const [url, partitions, ttl] = process.argv.slice(2)
if (!url || !partitions) {
  console.error('usage: aggregate-replica.ts <nats-url> <partitions> [leaseTtlMs]')
  process.exit(2)
}
const send = (msg: Record<string, unknown>): void => { process.stdout.write(JSON.stringify(msg) + '\n') }

// As the cloud connects (cloud/cloud.ts): no async stack trace per request.
const nc = await connect({ servers: url, name: 'bench-aggregate-replica', noAsyncTraces: true })
const store = (await openFleetStore(nc, 'VIEWS')).store
const metrics = createCloudMetrics({ defaultMetrics: false })
// The aggregator's own end-to-end histogram (ingest at the edge of the newest event of a batch ->
// applied), observed here value by value so that quantiles are exact rather than bucket bounds.
let latency: number[] | null = null
const observe = metrics.latencySeconds.observe.bind(metrics.latencySeconds)
metrics.latencySeconds.observe = ((...args: Parameters<typeof observe>) => {
  if (latency !== null && typeof args[0] === 'number') latency.push(args[0])
  return observe(...args)
}) as typeof metrics.latencySeconds.observe
// Wall-clock times of the first and the last group that applied something (comparable across the
// replica processes), and per partition the end of its last group (failover: when a partition
// applies again after its owner was killed).
let firstAppliedWallMs = 0
let lastAppliedWallMs = 0
const inc = metrics.applied.inc.bind(metrics.applied)
metrics.applied.inc = ((...args: Parameters<typeof inc>) => {
  lastAppliedWallMs = Date.now()
  if (firstAppliedWallMs === 0 && Number((args as unknown[])[1] ?? 0) > 0) firstAppliedWallMs = lastAppliedWallMs
  return inc(...args)
}) as typeof metrics.applied.inc
const lastByPartition: Record<string, number> = {}
subscribe(APPLY_WINDOW_CHANNEL, (w) => { const { partition, endMs } = w as { partition: string, endMs: number }; lastByPartition[partition] = endMs })
const agg = new Aggregator(nc, store, metrics, createLogger('warn'), { streams: ['telemetry'], partitions: Number(partitions), leaseTtlMs: ttl ? Number(ttl) : undefined })
let timer: NodeJS.Timeout | null = null
const stats = (): Record<string, unknown> => ({ ...agg.stats(), firstAppliedWallMs, lastAppliedWallMs, owned: agg.partitions().owned, lastByPartition })

send({ type: 'ready', pid: process.pid })
for await (const line of createInterface({ input: process.stdin })) {
  const cmd = line.trim()
  if (cmd === 'start') {
    await agg.start()
    timer = setInterval(() => send({ type: 'stats', ...stats() }), STATS_EVERY_MS)
  } else if (cmd === 'lat-begin') {
    latency = []
  } else if (cmd === 'lat-end') {
    send({ type: 'lat', seconds: latency ?? [] })
    latency = null
  } else if (cmd === 'stop') {
    if (timer) clearInterval(timer)
    await agg.close()
    await store.close()
    await nc.drain().catch(() => nc.close())
    send({ type: 'done', ...stats() })
    break
  }
}
process.exit(0)
