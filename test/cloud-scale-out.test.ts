// Cloud scale-out (issue 19, promise 10): aggregator replicas partitioned by gateway on a 3-node
// JetStream cluster whose servers map iot.<gw>.telemetry onto 4 partitions. Under load from real
// gateways, replicas join 1 -> 3 and leave 3 -> 1 (graceful close: handover). Every acknowledged
// event is applied once in effect (checked by identity in the stream and by count and seq in the
// views), the partitions stay balanced, no two replicas ever apply one partition at the same time
// (apply windows recorded per partition), and a steady state has no compare-and-set conflict.
import assert from 'node:assert/strict'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { test } from 'node:test'
import { APPLY_WINDOW_CHANNEL } from '../cloud/apply/aggregator.ts'
import type { Cloud } from '../cloud/cloud.ts'
import { partitionIds, partitionMappingsConfig, partitionOf } from '../proto/index.ts'
import { assertExactlyOnce, connectDevice, mergeAccounts, readStream, startGateway, startNatsCluster, waitFor } from '../devkit/index.ts'
import { loadDevice } from './harness/load.ts'
import { apiFetch, deferrer, startCloud } from './harness/cloud.ts'
import { ackedTotal, assertViewsAccount } from './harness/views-account.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }
const P = 4
const IDS = partitionIds(P)

interface Window { replicaId: string, partition: string, stream: string, startMs: number, endMs: number }

/** Pairs of windows of one partition applied by two replicas at overlapping times. */
function overlaps (windows: Window[]): string[] {
  const out: string[] = []
  const byPartition = new Map<string, Window[]>()
  for (const w of windows) byPartition.set(w.partition, [...(byPartition.get(w.partition) ?? []), w])
  for (const [p, ws] of byPartition) {
    ws.sort((a, b) => a.startMs - b.startMs)
    let last: Window | null = null
    for (const w of ws) {
      if (last && w.replicaId !== last.replicaId && w.startMs < last.endMs) out.push(`partition ${p}: ${last.replicaId} [${last.startMs}, ${last.endMs}] and ${w.replicaId} [${w.startMs}, ${w.endMs}]`)
      if (!last || w.endMs > last.endMs) last = w
    }
  }
  return out
}

/** Gateway ids whose partitions cover all P (so that every replica gets traffic). */
function gatewayIds (n: number): string[] {
  const ids: string[] = []
  for (let i = 0; ids.length < n; i++) {
    const id = `gw-so-${i}`
    const covered = new Set(ids.map((x) => partitionOf(x, P)))
    if (covered.size < P && covered.has(partitionOf(id, P))) continue
    ids.push(id)
  }
  return ids
}

test('cloud scale-out: replicas join 1 -> 3 and leave 3 -> 1 under load on a 3-node cluster; balanced, never two on one partition, no conflict in steady state, every acknowledged event applied once', { timeout: 240000 }, async (t) => {
  const defer = deferrer(t)
  const windows: Window[] = []
  const onWindow = (w: unknown): void => { windows.push(w as Window) }
  subscribe(APPLY_WINDOW_CHANNEL, onWindow)
  defer(() => unsubscribe(APPLY_WINDOW_CHANNEL, onWindow))
  const cluster = await startNatsCluster({ config: partitionMappingsConfig(P) })
  defer(() => cluster.cleanup())

  const clouds: Cloud[] = []
  const apis: string[] = []
  const startReplica = async (): Promise<Cloud> => {
    const { cloud, api } = await startCloud(cluster, { replicas: 3, aggregator: { partitions: P, leaseTtlMs: 3000 } })
    defer(() => cloud.close())
    clouds.push(cloud)
    apis.push(api)
    return cloud
  }
  const first = await startReplica()
  assert.deepEqual(first.mapping, { state: 'mapped', partitions: P }, 'the cloud found the cluster\'s partition mapping')
  assert.deepEqual(first.aggregator!.partitions().owned, IDS, 'a lone replica owns every partition')

  const gwIds = gatewayIds(6)
  assert.equal(new Set(gwIds.map((g) => partitionOf(g, P))).size, P, 'the gateways cover every partition')
  const acked = new Map<string, Map<string, Set<number>>>()
  const loads: Array<{ stop: () => void }> = []
  for (const gatewayId of gwIds) {
    const gw = await startGateway({ gatewayId, mqtt: ANON, uplink: { servers: cluster.urls, reconnectMinMs: 50, reconnectMaxMs: 500, publishTimeoutMs: 2000, heartbeatMs: 500 } })
    defer(() => gw.close())
    const devices = new Map<string, Set<number>>()
    acked.set(gatewayId, devices)
    for (let d = 0; d < 2; d++) {
      const id = `dev-${d}`
      devices.set(id, new Set())
      const c = await connectDevice(gw.ports.mqtt, { clientId: id })
      defer(() => c.end(true))
      loads.push(loadDevice(c, id, { n: 0 }, devices.get(id)!, { window: 4, intervalMs: 5 }))
    }
  }
  const total = (): number => ackedTotal(acked)
  const applied = (): number => clouds.reduce((s, c) => s + (c.aggregator?.stats().applied ?? 0), 0)
  await waitFor(() => applied() > 500, 'events to reach the views through the first replica', 30000)

  // Join: 1 -> 3 under load.
  await startReplica()
  await startReplica()
  const owned = (): string[][] => clouds.filter((c) => !c.isClosing).map((c) => c.aggregator!.partitions().owned)
  const balanced = (n: number): boolean => {
    const o = owned()
    return o.length === n && o.flat().length === IDS.length && new Set(o.flat()).size === IDS.length && Math.max(...o.map((x) => x.length)) <= Math.ceil(P / n) + 1 && o.every((x) => x.length > 0)
  }
  await waitFor(() => balanced(3), 'three replicas to share the partitions', 30000, 50)
  t.diagnostic(`after the join: ${JSON.stringify(owned())}`)
  const ready = await (await apiFetch(`${apis[1]}/readyz`)).json() as any
  assert.equal(ready.partitions.mapping, 'mapped')
  assert.deepEqual(ready.partitions.owned, clouds[1].aggregator!.partitions().owned, '/readyz reports the partitions the replica owns')
  assert.equal(ready.partitions.liveReplicas.length, 3, '/readyz: three live replicas')
  const metrics = await (await apiFetch(`${apis[1]}/metrics`)).text()
  assert.match(metrics, new RegExp(`cloud_aggregator_partitions_owned ${ready.partitions.owned.length}\\b`))
  assert.match(metrics, /cloud_aggregator_partition_handovers\{kind="acquired"\} [1-9]/)

  // Steady state: a window with no handover anywhere has no compare-and-set conflict.
  const handovers = (): string => JSON.stringify(clouds.map((c) => c.aggregator!.partitions().handovers))
  const conflicts = (): number => clouds.reduce((s, c) => s + c.aggregator!.stats().conflicts, 0)
  let steady: { conflicts: number, applied: number } | null = null
  for (let attempt = 0; attempt < 5 && !steady; attempt++) {
    const before = { h: handovers(), c: conflicts(), a: applied() }
    await new Promise((resolve) => setTimeout(resolve, 3000))
    if (handovers() === before.h) steady = { conflicts: conflicts() - before.c, applied: applied() - before.a }
  }
  assert.ok(steady, 'no window of 3 s without a handover')
  assert.ok(steady.applied > 0, 'the steady window applied events')
  assert.equal(steady.conflicts, 0, `compare-and-set conflicts in steady state (${steady.applied} events applied)`)

  // Leave: 3 -> 1 under load, each replica handing its partitions over as it closes.
  const beforeLeave = total()
  await clouds[2].close()
  await waitFor(() => balanced(2), 'two replicas to share the partitions', 30000, 50)
  await clouds[1].close()
  await waitFor(() => balanced(1), 'the last replica to own every partition', 30000, 50)
  await waitFor(() => total() > beforeLeave + 500, 'load to go on after the leaves', 30000)
  for (const l of loads) l.stop()

  // Every acknowledged event, once: in the streams by identity, in the views by count and seq.
  const { duplicates } = await assertViewsAccount(first.views!, acked)
  const stream = mergeAccounts(await readStream(cluster.urls[0], 'TELEMETRY'), await readStream(cluster.urls[0], 'EVENTS'))
  for (const [gw, devices] of acked) assertExactlyOnce(stream, gw, devices)
  assert.deepEqual(overlaps(windows), [], 'two replicas applied one partition at the same time')
  const replicas = new Set(windows.map((w) => w.replicaId))
  assert.equal(replicas.size, 3, 'all three replicas applied groups')
  t.diagnostic(`${total()} events acknowledged by ${gwIds.length} gateways; ${windows.length} apply windows by ${replicas.size} replicas; duplicates (redeliveries) ${duplicates}; handovers ${handovers()}`)
})
