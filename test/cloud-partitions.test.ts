// Partitioning the cloud's work by gateway (issue 19), piece by piece: the partition function against
// nats-server's own mapping, the start-up check of the mapping, the balance rule, and the leases of
// two replicas on a real server (handed over on close, taken over when the owner dies).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { connect } from '@nats-io/transport-node'
import { Kvm } from '@nats-io/kv'
import { partitionIds, partitionMappingsConfig, partitionOf } from '../proto/index.ts'
import { balance, fairShare, type LeaseView } from '../cloud/partitions/balance.ts'
import { LeaseTable } from '../cloud/partitions/lease-table.ts'
import { checkPartitionMapping } from '../cloud/partitions/mapping-check.ts'
import { PartitionOwner } from '../cloud/partitions/partition-owner.ts'
import { createLogger } from '../cloud/log.ts'
import { startNats, waitFor } from '../devkit/index.ts'
import { deferrer } from './harness/cloud.ts'

const silent = createLogger(process.env.TEST_LOG ?? 'silent')

test('partitions: partitionOf agrees with nats-server\'s {{partition(P,1)}} mapping for every gateway tried', async (t) => {
  const defer = deferrer(t)
  const P = 7
  const nats = await startNats({ config: partitionMappingsConfig(P) })
  defer(() => nats.cleanup())
  const nc = await connect({ servers: nats.url })
  defer(() => nc.close())
  const seen = new Map<string, string>()
  nc.subscribe('iot.*.telemetry.*', { callback: (_e, m) => { seen.set(m.subject.split('.')[1], m.subject.split('.')[3]) } })
  nc.subscribe('iot.*.events.*', { callback: (_e, m) => { seen.set(`${m.subject.split('.')[1]}/events`, m.subject.split('.')[3]) } })
  await nc.flush()
  const ids = Array.from({ length: 60 }, (_, i) => i % 3 === 0 ? `site-${i}` : `gw_${i * 7919}-x`)
  for (const id of ids) { nc.publish(`iot.${id}.telemetry`); nc.publish(`iot.${id}.events`) }
  await waitFor(() => seen.size === 2 * ids.length, 'every mapped subject', 5000)
  for (const id of ids) {
    assert.equal(seen.get(id), String(partitionOf(id, P)), `telemetry of ${id}`)
    assert.equal(seen.get(`${id}/events`), String(partitionOf(id, P)), `events of ${id}`)
  }
  // Spread: 60 gateways over 7 partitions leave none empty.
  assert.equal(new Set(seen.values()).size, P)
})

test('partitions: the start-up check finds the mapping, its absence, and a P that differs from the server\'s', async (t) => {
  const defer = deferrer(t)
  const mapped = await startNats({ config: partitionMappingsConfig(4) })
  defer(() => mapped.cleanup())
  const bare = await startNats()
  defer(() => bare.cleanup())
  const a = await connect({ servers: mapped.url })
  defer(() => a.close())
  const b = await connect({ servers: bare.url })
  defer(() => b.close())
  assert.deepEqual(await checkPartitionMapping(a, 4), { state: 'mapped', partitions: 4 })
  assert.deepEqual(await checkPartitionMapping(b, 4), { state: 'unmapped' })
  await assert.rejects(checkPartitionMapping(a, 8), (err: any) => err.code === 'CLOUD_ERR_CONFIG' && /aggregator\.partitions is 8 but the NATS server maps the gateways into 4 partitions/.test(err.message))
})

/** Runs the balance rule for every replica in turn (each sees the others' last moves) until nothing changes. */
function settle (ids: string[], spare: string[], members: string[], owners: Map<string, string>): number {
  const all = [...ids, ...spare]
  for (let round = 1; round <= 20; round++) {
    let moved = 0
    for (const me of members) {
      const leases = new Map<string, LeaseView>(all.map((id) => [id, { owner: owners.get(id) ?? '', lapsed: !members.includes(owners.get(id) ?? '') && owners.has(id) }]))
      const owned = new Set(all.filter((id) => owners.get(id) === me))
      const plan = balance({ me, ids, spare, members, leases, owned })
      for (const id of plan.release) { owners.delete(id); moved++ }
      for (const id of plan.take) { owners.set(id, me); moved++ }
    }
    if (moved === 0) return round
  }
  throw new Error('the balance did not settle in 20 rounds')
}

for (const P of [8, 4]) test(`partitions: balance gives every one of ${P} partitions one owner, and every replica floor(P/N) or ceil(P/N) of them (the unmapped one aside), through joins and leaves`, () => {
  const ids = partitionIds(P).filter((id) => id !== 'u')
  const spare = ['u']
  const owners = new Map<string, string>()
  const live: string[] = []
  for (const step of ['+a', '+b', '+c', '+d', '-b', '+e', '-a', '-c', '-d', '+f', '+g', '+h']) {
    const name = step.slice(1)
    if (step[0] === '+') live.push(name)
    else live.splice(live.indexOf(name), 1)
    settle(ids, spare, live, owners)
    for (const id of [...ids, ...spare]) assert.ok(live.includes(owners.get(id) ?? ''), `${step}: partition ${id} owned by a live replica (owner ${owners.get(id)})`)
    const counts = live.map((m) => ids.filter((id) => owners.get(id) === m).length)
    assert.ok(Math.max(...counts) <= fairShare(P, live.length), `${step}: shares ${counts} over fair share ${fairShare(P, live.length)}`)
    assert.ok(Math.min(...counts) >= Math.floor(P / live.length), `${step}: shares ${counts} below floor(${P}/${live.length})`)
    const totals = live.map((m) => [...ids, ...spare].filter((id) => owners.get(id) === m).length)
    assert.ok(Math.max(...totals) <= Math.ceil(P / live.length) + 1, `${step}: holdings ${totals}`)
  }
})

test('partitions: two replicas on one lease table share the partitions, hand them over on close, and take over a dead one\'s after the TTL', { timeout: 60000 }, async (t) => {
  const defer = deferrer(t)
  const nats = await startNats()
  defer(() => nats.cleanup())
  const nc = await connect({ servers: nats.url })
  defer(() => nc.close())
  await new Kvm(nc).create('LEASES_TEST', { history: 1 })
  const ids = partitionIds(4)
  // The graceful part runs with a TTL far beyond its deadline, so only a handover can pass it.
  const longTtlMs = 120_000
  const ttlMs = 1500
  // Who applies each partition now, by the handlers' own calls: never two at once.
  const applying = new Map<string, string>()
  const events: string[] = []
  const owner = async (name: string, group: string, ttlMs: number): Promise<PartitionOwner> => {
    const table = await LeaseTable.open(nc, { bucket: 'LEASES_TEST', group, ttlMs })
    const o = new PartitionOwner(nc, table, {
      acquire: async (id) => {
        assert.equal(applying.get(id), undefined, `${name} acquired ${id} while ${applying.get(id)} applies it`)
        applying.set(id, name)
        events.push(`${name}+${id}`)
      },
      release: async (id) => {
        assert.equal(applying.get(id), name, `${name} released ${id} it did not apply`)
        applying.delete(id)
        events.push(`${name}-${id}`)
      },
      lag: async () => ({}),
    }, silent, { replicaId: name, ids, ttlMs })
    await o.start()
    return o
  }
  const a = await owner('a', 'g1', longTtlMs)
  assert.deepEqual(a.owned(), ids, 'alone, a owns every partition')
  const b = await owner('b', 'g1', longTtlMs)
  defer(() => b.destroy())
  await waitFor(() => a.owned().length + b.owned().length === ids.length && b.owned().length >= 2 && a.owned().length >= 2, 'a and b to share the partitions', 10000, 20)
  assert.deepEqual([...a.owned(), ...b.owned()].sort(), [...ids].sort())
  // Graceful: a hands over at close, b takes everything without waiting for a TTL.
  const closedAt = Date.now()
  await a.close()
  await waitFor(() => b.owned().length === ids.length, 'b to take a\'s partitions (handed over: the TTL is 120 s)', 10000, 20)
  const handoverMs = Date.now() - closedAt
  await b.close()
  // A dead owner (destroyed: no release, no renewal): c takes its partitions once its leases lapse.
  const b2 = await owner('b', 'g2', ttlMs)
  defer(() => b2.destroy())
  const c = await owner('c', 'g2', ttlMs)
  defer(() => c.destroy())
  await waitFor(() => c.owned().length >= 2 && b2.owned().length + c.owned().length === ids.length, 'b and c to share', 10000, 20)
  const bHad = b2.owned()
  b2.destroy()
  for (const id of bHad) applying.delete(id) // b is dead: it applies nothing any more
  const killedAt = Date.now()
  await waitFor(() => c.owned().length === ids.length, 'c to take over the dead replica\'s partitions', 15000, 20)
  const takeoverMs = Date.now() - killedAt
  t.diagnostic(`handover on close ${handoverMs} ms; takeover after a dead owner ${takeoverMs} ms (TTL ${ttlMs} ms); ${events.join(' ')}`)
  await c.close()
  for (const group of ['g1', 'g2']) {
    const table = await LeaseTable.open(nc, { bucket: 'LEASES_TEST', group, ttlMs })
    for (const [id, l] of await table.leases(ids)) assert.equal(l.value?.owner, '', `${group}: lease ${id} free after every replica closed`)
  }
})
