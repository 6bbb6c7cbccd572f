// Prometheus metrics of one cloud process. Each process (or test instance) has its own registry.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export type CloudMetrics = ReturnType<typeof createCloudMetrics>

/** Lag of one durable consumer: stream last seq minus the consumer's ack floor (messages, i.e. batches). */
export type LagSource = () => Promise<Array<{ stream: string, lag: number, pending: number }>>

/** The gateways as the fleet views see them (online judged at read time). */
export interface FleetGateway { gatewayId: string, online: boolean, lastSeenMs: number }
export type FleetSource = () => Promise<FleetGateway[]>

// One read of the fleet serves every fleet gauge of a scrape.
const FLEET_READ_TTL_MS = 1000

export function createCloudMetrics (opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry()
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'cloud_process_' })
  const r = [registry]
  let lagSource: LagSource | null = null
  let fleetSource: FleetSource | null = null
  let fleetRead: { atMs: number, result: ReturnType<FleetSource> } | null = null
  const fleet = (): ReturnType<FleetSource> | null => {
    if (!fleetSource) return null
    if (!fleetRead || Date.now() - fleetRead.atMs > FLEET_READ_TTL_MS) fleetRead = { atMs: Date.now(), result: fleetSource() }
    return fleetRead.result
  }
  const fleetGauge = (name: string, help: string, value: (g: FleetGateway, nowMs: number) => number): Gauge<'gateway'> => new Gauge({
    name, help, labelNames: ['gateway'], registers: r,
    async collect () {
      const read = fleet()
      if (!read) return
      // Reset first: a gateway the views no longer hold, or views that cannot be read, show no value rather than an old one.
      this.reset()
      try {
        const now = Date.now()
        for (const g of await read) this.set({ gateway: g.gatewayId }, value(g, now))
      } catch { /* no values this scrape */ }
    },
  })
  return {
    registry,
    /** Where the consumer lag gauges read from (set by the aggregator when it starts). */
    setLagSource: (fn: LagSource | null): void => { lagSource = fn },
    /** Where the per-gateway fleet gauges read from (set by the composition once the views exist). */
    setFleetSource: (fn: FleetSource | null): void => { fleetSource = fn; fleetRead = null },
    // Per gateway, from the cloud's side: what alerting needs when the gateways themselves cannot be
    // scraped (a site behind NAT). A gateway the views no longer hold disappears from the gauges.
    gatewayOnline: fleetGauge('cloud_fleet_gateway_online', 'Per gateway: 1 while its heartbeats arrive within the offline timeout, 0 once one is overdue', (g) => g.online ? 1 : 0),
    gatewayHeartbeatAge: fleetGauge('cloud_fleet_gateway_heartbeat_age_seconds', 'Per gateway: seconds since the cloud stored its last heartbeat', (g, now) => Math.max(0, (now - g.lastSeenMs) / 1000)),
    applied: new Counter({ name: 'cloud_aggregator_applied_events_total', help: 'Events applied to the views for the first time', labelNames: ['stream'], registers: r }),
    duplicates: new Counter({ name: 'cloud_aggregator_duplicate_events_total', help: 'Events dropped because (gateway, device, seq) was already applied', labelNames: ['stream'], registers: r }),
    gapSeqs: new Counter({ name: 'cloud_aggregator_gap_seqs_total', help: 'Sequence numbers by gap event: explained (gap record from the gateway), filled (a late event closed a hole)', labelNames: ['kind'], registers: r }),
    rejected: new Counter({ name: 'cloud_aggregator_rejected_total', help: 'Batches or events refused, by reason', labelNames: ['reason'], registers: r }),
    batches: new Counter({ name: 'cloud_aggregator_batches_total', help: 'Replication batches applied and acknowledged', labelNames: ['stream'], registers: r }),
    flushSeconds: new Histogram({ name: 'cloud_aggregator_flush_seconds', help: 'Apply and store one group of batches, before the acks', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5], registers: r }),
    flushBatches: new Histogram({ name: 'cloud_aggregator_flush_batches', help: 'Replication batches per apply group', buckets: [1, 2, 4, 8, 16, 32, 64, 128], registers: r }),
    latencySeconds: new Histogram({ name: 'cloud_aggregator_e2e_latency_seconds', help: 'Ingest at the edge of the newest event of a batch to applied in the views (includes backlog age)', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60, 600, 3600], registers: r }),
    storeConflicts: new Counter({ name: 'cloud_aggregator_store_conflicts_total', help: 'Compare-and-set conflicts on view documents (another replica wrote first), retried', registers: r }),
    storeErrors: new Counter({ name: 'cloud_aggregator_store_errors_total', help: 'Failed view-store operations (the batch is redelivered)', registers: r }),
    heartbeats: new Counter({ name: 'cloud_aggregator_heartbeats_total', help: 'Gateway heartbeats stored', registers: r }),
    consumerLag: new Gauge({
      name: 'cloud_aggregator_consumer_lag_messages',
      help: 'Stream last sequence minus the durable consumer ack floor',
      labelNames: ['stream'],
      registers: r,
      async collect () {
        if (!lagSource) return
        try {
          for (const l of await lagSource()) this.set({ stream: l.stream }, l.lag)
        } catch { /* not connected: keep the last value */ }
      },
    }),
  }
}
