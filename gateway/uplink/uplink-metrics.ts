// Prometheus metrics of the uplink thread (uplink-thread.ts), in a registry of its own: the gateway's
// /metrics appends their text to its own (uplink.ts).
import { Counter, Gauge, Histogram, Registry } from 'prom-client'

export type UplinkMetrics = ReturnType<typeof createUplinkMetrics>

/** Creates the uplink's metrics in a fresh registry. */
export function createUplinkMetrics () {
  const registry = new Registry()
  const r = [registry]
  return {
    registry,
    uplinkUp: new Gauge({ name: 'gateway_uplink_up', help: '1 while the uplink to the cloud is connected', registers: r }),
    uplinkStalled: new Gauge({ name: 'gateway_uplink_stalled', help: '1 while the uplink is stalled: connected, something to replicate, no ack for uplink.stallAfterTimeouts x publishTimeoutMs', registers: r }),
    uplinkStalls: new Counter({ name: 'gateway_uplink_stalls_total', help: 'Uplink stalls detected (each followed by a reconnect)', registers: r }),
    uplinkConnects: new Counter({ name: 'gateway_uplink_connects_total', help: 'Uplink connections and reconnections', registers: r }),
    uplinkErrors: new Counter({ name: 'gateway_uplink_errors_total', help: 'Uplink problems by kind (auth, permission, no_stream, timeout, connection, disconnect; corrupt, internal: replication stopped)', labelNames: ['kind'], registers: r }),
    uplinkInFlight: new Gauge({ name: 'gateway_uplink_batches_in_flight', help: 'Replication batches awaiting a JetStream ack', registers: r }),
    uplinkPublishSeconds: new Histogram({ name: 'gateway_uplink_publish_seconds', help: 'Batch publish to JetStream ack', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5], registers: r }),
    uplinkAcked: new Counter({ name: 'gateway_uplink_acked_events_total', help: 'Events acknowledged by JetStream, by lane', labelNames: ['lane'], registers: r }),
    uplinkBatches: new Counter({ name: 'gateway_uplink_batches_total', help: 'Batches acknowledged by JetStream (duplicate=true: JetStream had it already)', labelNames: ['duplicate'], registers: r }),
    uplinkFreshnessSeconds: new Histogram({ name: 'gateway_uplink_freshness_seconds', help: 'Ingest of the newest event of a live batch to its JetStream ack', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10], registers: r }),
    uplinkLastAck: new Gauge({ name: 'gateway_uplink_last_ack_timestamp_seconds', help: 'Time of the last successful JetStream ack', registers: r }),
    deliveryDevices: new Gauge({ name: 'gateway_delivery_devices', help: 'Devices in the per-device delivery ledger', registers: r }),
    deliveryDevicesBehind: new Gauge({ name: 'gateway_delivery_devices_behind', help: 'Devices with events accepted and not yet replicated', registers: r }),
    deliveryUnreplicated: new Gauge({ name: 'gateway_delivery_unreplicated_seqs', help: 'Sum over devices of highest seq accepted minus highest seq replicated', registers: r }),
    deliveryOldestUnsent: new Gauge({ name: 'gateway_delivery_oldest_unsent_age_seconds', help: 'Age of the oldest event not yet replicated, over all devices (as of the last ledger read)', registers: r }),
    deliveryReported: new Counter({ name: 'gateway_delivery_reported_total', help: 'Device entries of the delivery ledger sent in heartbeats', registers: r }),
    cloudChannelAttached: new Gauge({ name: 'gateway_cloud_channel_attached', help: '1 while the cloud-to-edge channel (rules watch, commands consumer) is attached', registers: r }),
    cloudChannelAttaches: new Counter({ name: 'gateway_cloud_channel_attaches_total', help: 'Attempts to attach the cloud-to-edge channel, by result (ok, failed) and cause (link_up, retry, lost)', labelNames: ['result', 'cause'], registers: r }),
  }
}
