// How the cloud's work is partitioned by gateway (issue 19). nats-server maps every gateway's
// replication subject onto one of P partitions with its subject-mapping function
// `{{partition(P,1)}}` (nats-server 2.8+, in the server's or the account's `mappings`):
//   iot.<gw>.telemetry -> iot.<gw>.telemetry.<p>     iot.<gw>.events -> iot.<gw>.events.<p>
// so the gateways never know P and publish as before (NATS permissions are checked on the subject
// they publish). The streams capture both shapes: a message that reaches a server without the
// mapping lands on the bare subject, in the "unmapped" partition, and is applied all the same.
// Each partition is one filtered durable consumer per stream; one aggregator replica owns it at a
// time (cloud/partitions/).

/** The partition of messages published where no mapping applies (a server without it, streams made before it). */
export const UNMAPPED_PARTITION = 'u'

/** The streams that are partitioned, by the lane name of proto/subjects.ts. */
export type PartitionedLane = 'telemetry' | 'events'
export const PARTITIONED_LANES: readonly PartitionedLane[] = ['telemetry', 'events']

/** Most partitions the cloud accepts (each is two durable consumers). */
export const MAX_PARTITIONS = 1024

/** The partition ids of a cloud with `count` mapped partitions: '0'..'count-1' and the unmapped one. */
export function partitionIds (count: number): string[] {
  return [...Array.from({ length: count }, (_, i) => String(i)), UNMAPPED_PARTITION]
}

/** The subject filter of a partition's consumer on `lane`'s stream. */
export function partitionFilter (lane: PartitionedLane, id: string): string {
  return id === UNMAPPED_PARTITION ? `iot.*.${lane}` : `iot.*.${lane}.${id}`
}

/**
 * The partition nats-server's `{{partition(count,1)}}` puts a gateway in: FNV-1a (32 bits) of the
 * gateway id, modulo count. Used to show where a gateway is and to check the server's mapping.
 */
export function partitionOf (gatewayId: string, count: number): number {
  let h = 0x811c9dc5
  for (const b of new TextEncoder().encode(gatewayId)) {
    h ^= b
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h % count
}

/** The subject mappings a server (or the account holding the streams) needs for `count` partitions. */
export function partitionMappings (count: number): Record<string, string> {
  return Object.fromEntries(PARTITIONED_LANES.map((lane) => [`iot.*.${lane}`, `iot.{{wildcard(1)}}.${lane}.{{partition(${count},1)}}`]))
}

/** The same as nats-server config text: a `mappings { ... }` block (top level, or inside an account). */
export function partitionMappingsConfig (count: number, indent = ''): string {
  const lines = Object.entries(partitionMappings(count)).map(([from, to]) => `${indent}  "${from}": "${to}"`)
  return [`${indent}mappings {`, ...lines, `${indent}}`].join('\n')
}
