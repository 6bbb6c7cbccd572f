// Prometheus metrics of one cloud process. Each process (or test instance) has its own registry.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export type CloudMetrics = ReturnType<typeof createCloudMetrics>

/** What the aggregator reports of its partitions (the gauges below read it when scraped). */
export interface PartitionSource {
  report: () => { owned: string[], handovers: { acquired: number, released: number, lost: number }, liveReplicas: string[] }
  /** Apply lag per partition held, asked of JetStream now. */
  lag: () => Promise<Record<string, number>>
}

/** The gateways as the fleet views see them (online judged at read time). */
export interface FleetGateway { gatewayId: string, online: boolean, lastSeenMs: number }
export type FleetSource = () => Promise<FleetGateway[]>

// One read of the fleet serves every fleet gauge of a scrape.
const FLEET_READ_TTL_MS = 1000

export function createCloudMetrics (opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry()
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'cloud_' })
  const r = [registry]
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
  let source: PartitionSource | null = null
  // Partitions reported at the last scrape: one that moved away is reset to 0, not left standing.
  let shown = new Set<string>()
  return {
    registry,
    /** Where the partition gauges read from (set by the aggregator when it starts). */
    setPartitionSource: (fn: PartitionSource | null): void => { source = fn },
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
    rollupTooOld: new Counter({ name: 'cloud_rollup_too_old_total', help: 'Events not applied to a rollup tier because their document span is older than the tier retention (each event once per tier)', labelNames: ['tier'], registers: r }),
    heartbeats: new Counter({ name: 'cloud_aggregator_heartbeats_total', help: 'Gateway heartbeats stored', registers: r }),
    deliveryMarks: new Counter({ name: 'cloud_aggregator_delivery_marks_total', help: 'Per-device delivery marks (accepted, replicated, oldest unsent) stored from heartbeats', registers: r }),
    partitionsOwned: new Gauge({
      name: 'cloud_aggregator_partitions_owned',
      help: 'Partitions this replica holds the lease of (and applies)',
      registers: r,
      collect () { this.set(source ? source.report().owned.length : 0) },
    }),
    liveReplicas: new Gauge({
      name: 'cloud_aggregator_live_replicas',
      help: 'Aggregator replicas this one sees renewing their registration (itself included)',
      registers: r,
      collect () { this.set(source ? source.report().liveReplicas.length : 0) },
    }),
    handovers: new Gauge({
      name: 'cloud_aggregator_partition_handovers',
      help: 'Partitions this replica acquired, released (handed over) and lost (taken over by another) since it started',
      labelNames: ['kind'],
      registers: r,
      collect () {
        const h = source?.report().handovers ?? { acquired: 0, released: 0, lost: 0 }
        for (const [kind, n] of Object.entries(h)) this.set({ kind }, n)
      },
    }),
    consumerLag: new Gauge({
      name: 'cloud_aggregator_consumer_lag_messages',
      help: 'Per partition held: replication batches not yet applied (pending plus delivered and not acked), both streams',
      labelNames: ['partition'],
      registers: r,
      async collect () {
        let lag: Record<string, number> = {}
        try { lag = source ? await source.lag() : {} } catch { return /* not connected: keep the last values */ }
        for (const p of shown) if (!(p in lag)) this.set({ partition: p }, 0)
        for (const [p, n] of Object.entries(lag)) this.set({ partition: p }, n)
        shown = new Set(Object.keys(lag))
      },
    }),
  }
}
