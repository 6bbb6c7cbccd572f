// Prometheus metrics of one gateway. Each gateway has its own registry (tests run several in one process).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export type GatewayMetrics = ReturnType<typeof createMetrics>

/** Creates the gateway's metrics in a fresh registry. */
export function createMetrics (opts: { defaultMetrics?: boolean, oldestAgeSeconds?: () => number } = {}) {
  const registry = new Registry()
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'gateway_' })
  const r = [registry]
  // Plain running totals for the heartbeat (prom-client reads are async; the heartbeat is not).
  const totals = { rejected: 0, quarantined: 0, quarantinedByReason: {} as Record<string, number> }
  const rejected = new Counter({ name: 'gateway_rejected_total', help: 'Input refused or quarantined, by reason', labelNames: ['reason'], registers: r })
  const quarantined = new Counter({ name: 'gateway_dead_letters_total', help: 'Payloads quarantined in the dead-letter table, by reason', labelNames: ['reason'], registers: r })
  return {
    totals,
    rejected: { inc: (labels: { reason: string }, n = 1) => { totals.rejected += n; rejected.inc(labels, n) }, get: () => rejected.get() },
    quarantined: {
      inc: (labels: { reason: string }, n = 1) => {
        totals.quarantined += n
        totals.quarantinedByReason[labels.reason] = (totals.quarantinedByReason[labels.reason] ?? 0) + n
        quarantined.inc(labels, n)
      },
      get: () => quarantined.get(),
    },
    deadLetterReports: new Counter({ name: 'gateway_dead_letter_reports_total', help: 'Quarantined payloads reported to the cloud in the priority lane (sent), or only counted here (suppressed: over outbox.deadLetterReportsPerSec)', labelNames: ['result'], registers: r }),
    registry,
    ingested: new Counter({ name: 'gateway_ingest_events_total', help: 'Events committed to the outbox', registers: r }),
    resendsDropped: new Counter({ name: 'gateway_resends_dropped_total', help: 'Device resends of readings already committed (same device ts and payload): acknowledged, not stored again', registers: r }),
    throttled: new Counter({ name: 'gateway_throttled_publishes_total', help: 'Publishes delayed by the per-device rate limit', registers: r }),
    commitGroupEvents: new Histogram({ name: 'gateway_commit_group_events', help: 'Items per outbox commit group', buckets: [1, 4, 16, 64, 256, 1024, 4096], registers: r }),
    commitSeconds: new Histogram({ name: 'gateway_commit_duration_seconds', help: 'Duration of one outbox commit transaction on the event loop (the WAL fsync is apart: gateway_outbox_wal_sync_seconds)', buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5], registers: r }),
    commitWaitSeconds: new Histogram({ name: 'gateway_publish_commit_wait_seconds', help: 'Publish received to its commit (what PUBACK waits for)', buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5], registers: r }),
    walSyncSeconds: new Histogram({ name: 'gateway_outbox_wal_sync_seconds', help: 'Duration of one fsync of the outbox WAL (durability=full; on the thread pool, shared by the commits made while it runs)', buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5], registers: r }),
    checkpointSeconds: new Histogram({ name: 'gateway_outbox_checkpoint_seconds', help: 'Duration of one WAL checkpoint (in the checkpoint worker, or on the ingest connection when the worker falls behind)', buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1], registers: r }),
    checkpointFailures: new Counter({ name: 'gateway_outbox_checkpoint_failures_total', help: 'WAL checkpoints that failed, and a checkpoint worker that died', registers: r }),
    walBytes: new Gauge({ name: 'gateway_outbox_wal_bytes', help: 'Size of the SQLite WAL at the last checkpoint', registers: r }),
    commitFailures: new Counter({ name: 'gateway_commit_failures_total', help: 'Outbox commits that failed (nothing in the group acknowledged)', registers: r }),
    shed: new Counter({ name: 'gateway_outbox_shed_events_total', help: 'Events dropped by the overflow policy (gap recorded)', labelNames: ['lane'], registers: r }),
    outboxEvents: new Gauge({ name: 'gateway_outbox_events', help: 'Events buffered in the outbox', registers: r }),
    outboxBytes: new Gauge({ name: 'gateway_outbox_bytes', help: 'Bytes counted against the outbox budget', registers: r }),
    outboxBudgetBytes: new Gauge({ name: 'gateway_outbox_budget_bytes', help: 'The outbox disk budget', registers: r }),
    outboxOldestAge: new Gauge({ name: 'gateway_outbox_oldest_age_seconds', help: 'Age of the oldest buffered event (0 when empty)', registers: r, collect () { this.set(opts.oldestAgeSeconds?.() ?? 0) } }),
    outboxPending: new Gauge({ name: 'gateway_outbox_pending', help: 'Items waiting in memory for the next commit', registers: r }),
    decisionSeconds: new Histogram({ name: 'gateway_decision_seconds', help: 'Publish received to decision taken and its command handed to the broker', buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.05], registers: r }),
    decisions: new Counter({ name: 'gateway_decisions_total', help: 'Rule decisions by kind (fired, cleared)', labelNames: ['kind'], registers: r }),
    commands: new Counter({ name: 'gateway_commands_total', help: 'Command outcomes (sent, delivered, acknowledged, rejected, timed_out, expired)', labelNames: ['status'], registers: r }),
    commandsPending: new Gauge({ name: 'gateway_commands_pending', help: 'Commands awaiting an acknowledgement', registers: r }),
    rulesReloads: new Counter({ name: 'gateway_rules_reloads_total', help: 'Rule set loads by source and result', labelNames: ['source', 'result'], registers: r }),
    rulesInfo: new Gauge({ name: 'gateway_rules_info', help: 'The running rule set (value 1)', labelNames: ['version', 'source'], registers: r }),
    connections: new Gauge({ name: 'gateway_connections', help: 'Connected MQTT clients', registers: r }),
    keepaliveTimeouts: new Counter({ name: 'gateway_keepalive_timeouts_total', help: 'MQTT connections closed because the device sent nothing for 1.5 times its keep-alive (MQTT 5: the Server Keep Alive, mqtt.maxKeepAliveSeconds)', registers: r }),
    connectionsTotal: new Counter({ name: 'gateway_connections_total', help: 'MQTT connections accepted (CONNACK ok)', registers: r }),
    uplinkThreadUp: new Gauge({ name: 'gateway_uplink_thread_up', help: '1 while the uplink thread runs (the gateway_uplink_* and gateway_cloud_channel_* metrics are its own)', registers: r }),
    uplinkThreadRestarts: new Counter({ name: 'gateway_uplink_thread_restarts_total', help: 'Uplink threads that failed or exited unasked and were started again', registers: r }),
  }
}
