// Checks, at start, that the NATS server partitions the gateways' subjects as this cloud expects
// (proto/partitions.ts). The server's subject mappings cannot be read over the client protocol on
// nats-server 2.9 without the system account, so the check watches them work: it publishes probe
// messages on iot.<probe>.telemetry and iot.<probe>.events and looks at the subjects they arrive on.
// The probes carry `Nats-Expected-Stream` naming no stream, so the streams that capture them refuse
// to store them: nothing reaches the aggregator.
import { randomBytes } from 'node:crypto'
import { headers, type NatsConnection } from '@nats-io/transport-node'
import { MAX_PARTITIONS, PARTITIONED_LANES, partitionOf } from '../../proto/index.ts'
import { CloudError } from '../errors.ts'

export type MappingState = { state: 'mapped', partitions: number } | { state: 'unmapped' }

const PROBES = 8

/**
 * 'mapped' when every probe arrives on the partition `{{partition(partitions,1)}}` gives it,
 * 'unmapped' when every probe arrives on its bare subject (a server without the mapping: everything
 * goes to the unmapped partition). Anything else is a configuration error naming what the server does.
 */
export async function checkPartitionMapping (nc: NatsConnection, partitions: number, timeoutMs = 3000): Promise<MappingState> {
  const tag = randomBytes(4).toString('hex')
  const ids = Array.from({ length: PROBES }, (_, i) => `partition-probe-${tag}-${i}`)
  const seen: string[] = []
  const expected = ids.length * PARTITIONED_LANES.length
  let done!: () => void
  const all = new Promise<void>((resolve) => { done = resolve })
  const subs = ids.map((id) => nc.subscribe(`iot.${id}.>`, { callback: (err, m) => { if (!err) seen.push(m.subject); if (seen.length >= expected) done() } }))
  try {
    await nc.flush()
    const h = headers()
    h.set('Nats-Expected-Stream', '__partition_probe__')
    for (const id of ids) for (const lane of PARTITIONED_LANES) nc.publish(`iot.${id}.${lane}`, new Uint8Array(0), { headers: h })
    await nc.flush()
    let timer: NodeJS.Timeout | undefined
    await Promise.race([all, new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs) })])
    clearTimeout(timer)
  } finally {
    for (const s of subs) s.unsubscribe()
  }
  const samples = seen.map((s) => s.split('.')).map((t) => ({ id: t[1], partition: t.length === 4 ? Number(t[3]) : null }))
  if (samples.length < expected) {
    throw new CloudError('CLOUD_ERR_PARTITIONS', `partition mapping check: ${samples.length} of ${expected} probe messages came back within ${timeoutMs} ms (does this NATS user lack permission to subscribe to iot.>?)`)
  }
  if (samples.every((s) => s.partition === null)) return { state: 'unmapped' }
  if (samples.every((s) => s.partition !== null && s.partition === partitionOf(s.id, partitions))) return { state: 'mapped', partitions }
  const unmapped = samples.filter((s) => s.partition === null).length
  if (unmapped > 0) throw new CloudError('CLOUD_ERR_CONFIG', `invalid cloud config: aggregator.partitions: the NATS server maps only some of iot.*.telemetry and iot.*.events (${unmapped} of ${samples.length} probes unmapped); map both (proto/partitions.ts, deploy/nats/accounts.conf)`)
  const fits = (p: number): boolean => samples.every((s) => s.partition === partitionOf(s.id, p))
  let serverP: number | null = null
  for (let p = 1; p <= MAX_PARTITIONS && serverP === null; p++) if (fits(p)) serverP = p
  throw new CloudError('CLOUD_ERR_CONFIG', `invalid cloud config: aggregator.partitions is ${partitions} but the NATS server maps the gateways into ${serverP ?? 'a different number of'} partitions ({{partition(${serverP ?? 'P'},1)}}); set aggregator.partitions to the server's P (a partition nobody consumes would hold its gateways' batches back)`)
}
