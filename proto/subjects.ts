// NATS subjects and stream names shared by the gateway and the cloud. Every subject of a gateway is
// under iot.<gatewayId>. so that NATS permissions can confine a gateway to its own subjects.

export const subjects = {
  /** Replication batches of routine telemetry (JetStream, stream TELEMETRY). */
  telemetry: (gatewayId: string): string => `iot.${gatewayId}.telemetry`,
  /** Replication batches of the priority lane: alerts, decisions, command results, gaps (stream EVENTS). */
  events: (gatewayId: string): string => `iot.${gatewayId}.events`,
  /** Gateway heartbeats with status (core NATS). */
  status: (gatewayId: string): string => `iot.${gatewayId}.status`,
  /** Cloud-to-edge commands and rule sets for one gateway. */
  commands: (gatewayId: string): string => `iot.${gatewayId}.commands`,
}

export const STREAMS = {
  // The bare subject as gateways publish it, and its partitioned form (the server's subject mapping
  // appends the partition: proto/partitions.ts).
  telemetry: { name: 'TELEMETRY', subjects: ['iot.*.telemetry', 'iot.*.telemetry.*'] },
  events: { name: 'EVENTS', subjects: ['iot.*.events', 'iot.*.events.*'] },
  /** Cloud-to-edge commands, kept until each gateway's durable consumer has them (or they age out). */
  commands: { name: 'COMMANDS', subjects: ['iot.*.commands'] },
} as const

export const CLOUD_BUCKETS = {
  /** Rule sets pushed to gateways: key = gateway id, value = the rule set (YAML or JSON). */
  rules: 'RULES',
  /** Fleet views kept by the aggregator: devices (with their dedupe state), rollups, gateways. */
  views: 'VIEWS',
  /** Aggregator replicas (members) and who owns each partition (leases): cloud/partitions/. */
  leases: 'AGGREGATOR',
} as const
