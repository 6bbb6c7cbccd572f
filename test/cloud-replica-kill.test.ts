// Failover of a partition's owner (issue 19): two aggregator replicas as child processes
// (cloud/main.ts) on a nats-server that maps the gateways onto 4 partitions; real gateways under
// load; the replica that owns partitions is SIGKILLed. The survivor takes its partitions over once
// their leases lapse, nothing acknowledged is lost, and nothing is doubled in the views: per device,
// the device document and the rollups each count every acknowledged event exactly once.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { connect } from '@nats-io/transport-node'
import { LeaseTable } from '../cloud/partitions/lease-table.ts'
import { hashPassword } from '../cloud/http/password-hash.ts'
import { openFleetStore } from '../cloud/apply/tiers/tier-store.ts'
import { FleetViews } from '../cloud/views/views.ts'
import { partitionIds, partitionMappingsConfig, partitionOf } from '../proto/index.ts'
import { assertExactlyOnce, connectDevice, freePorts, mergeAccounts, readStream, startGateway, startNats, waitFor } from '../devkit/index.ts'
import { ReplicaProc } from '../simulators/soak-procs.ts'
import { loadDevice } from './harness/load.ts'
import { deferrer } from './harness/cloud.ts'
import { ackedTotal, assertViewsAccount } from './harness/views-account.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }
const P = 4
const TTL_MS = 3000

test('cloud failover: a SIGKILLed replica\'s partitions are taken over under load; nothing lost, nothing doubled in device views or rollups', { timeout: 240000 }, async (t) => {
  const defer = deferrer(t)
  const nats = await startNats({ config: partitionMappingsConfig(P) })
  defer(() => nats.cleanup())
  const nc = await connect({ servers: nats.url })
  defer(() => nc.close())

  const ports = await freePorts(2)
  const hash = await hashPassword('test-console-password')
  const sets = [`aggregator.partitions=${P}`, `aggregator.leaseTtlMs=${TTL_MS}`, 'replicas=1', `console.stateDir=${nats.storeDir}/console`]
  const replicas = [new ReplicaProc('a', ports[0], [nats.url], hash, [...sets, 'aggregator.replicaId=replica-a']), new ReplicaProc('b', ports[1], [nats.url], hash, [...sets, 'aggregator.replicaId=replica-b'])]
  for (const r of replicas) {
    await r.start()
    defer(() => r.kill())
  }
  const table = await LeaseTable.open(nc, { bucket: 'AGGREGATOR', group: 'aggregator', ttlMs: TTL_MS })
  const owners = async (): Promise<Map<string, string>> => new Map([...await table.leases(partitionIds(P))].map(([id, l]) => [id, l.value?.owner ?? '']))
  await waitFor(async () => new Set((await owners()).values()).size === 2 && ![...(await owners()).values()].includes(''), 'the two replicas to share the partitions', 30000, 100)

  const gwIds = Array.from({ length: 6 }, (_, i) => `gw-kill-${i}`)
  const acked = new Map<string, Map<string, Set<number>>>()
  const loads: Array<{ stop: () => void }> = []
  for (const gatewayId of gwIds) {
    const gw = await startGateway({ gatewayId, mqtt: ANON, uplink: { servers: [nats.url], reconnectMinMs: 50, reconnectMaxMs: 500, publishTimeoutMs: 2000, heartbeatMs: 500 } })
    defer(() => gw.close())
    const id = 'dev-0'
    const set = new Set<number>()
    acked.set(gatewayId, new Map([[id, set]]))
    const c = await connectDevice(gw.ports.mqtt, { clientId: id })
    defer(() => c.end(true))
    loads.push(loadDevice(c, id, { n: 0 }, set, { window: 4, intervalMs: 5 }))
  }
  const store = (await openFleetStore(nc, 'VIEWS')).store
  const views = new FleetViews(store, { offlineTimeoutMs: 5000 })
  const total = (): number => ackedTotal(acked)
  await waitFor(async () => (await views.accounting()).totals.received > 1000, 'events to reach the views', 30000, 200)

  // The victim: replica a, with the gateways of its partitions under load.
  const before = await owners()
  const victimPartitions = [...before].filter(([, o]) => o === 'replica-a').map(([id]) => id)
  assert.ok(victimPartitions.length > 0, 'replica a owns partitions')
  const victimGateways = gwIds.filter((g) => victimPartitions.includes(String(partitionOf(g, P))))
  const ackedAtKill = total()
  const killedAt = Date.now()
  await replicas[0].kill()
  await waitFor(async () => [...(await owners()).values()].every((o) => o === 'replica-b'), 'replica b to take over every partition', 30000, 50)
  const takenMs = Date.now() - killedAt
  await waitFor(() => total() > ackedAtKill + 1000, 'load to go on after the kill', 30000)
  for (const l of loads) l.stop()

  const { duplicates } = await assertViewsAccount(views, acked)
  // The rollups (by event time) count each event once too, whoever applied it.
  for (const [gw, devices] of acked) {
    for (const [dev, set] of devices) {
      const hours = await views.history(gw, dev, Date.now() - 3 * 3600_000, Date.now() + 3600_000, '1h')
      assert.equal(hours.reduce((s, h) => s + (h.readings.temperature?.count ?? 0), 0), set.size, `${gw}/${dev}: rollup count (${JSON.stringify(hours.map((h) => [new Date(h.start).toISOString(), h.readings.temperature?.count]))})`)
    }
  }
  const stream = mergeAccounts(await readStream(nats.url, 'TELEMETRY'), await readStream(nats.url, 'EVENTS'))
  for (const [gw, devices] of acked) assertExactlyOnce(stream, gw, devices)
  t.diagnostic(`replica a owned ${victimPartitions.join(',')} (gateways ${victimGateways.join(', ')}); all its leases with b ${takenMs} ms after SIGKILL (TTL ${TTL_MS} ms); ${total()} events acknowledged, ${total() - ackedAtKill} after the kill; duplicates (redeliveries) ${duplicates}`)
})
