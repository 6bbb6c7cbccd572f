// An existing fleet moves to partitioned aggregation (issue 19; README "Scaling out: migrating"):
// streams and durable consumers made by a cloud from before partitioning, a backlog half applied by
// it, then the NATS server restarted with the partition mapping and the new cloud started. The new
// cloud widens the streams' subjects, takes the old consumers' position over in the unmapped
// partition (and deletes them), and applies new traffic by partition: every acknowledged event
// is applied exactly once, the half applied before the move included.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { Aggregator } from '../cloud/apply/aggregator.ts'
import { PartitionConsumer } from '../cloud/apply/partition-consumer.ts'
import { createCloudMetrics } from '../cloud/metrics.ts'
import { createLogger } from '../cloud/log.ts'
import { provisionViews } from '../cloud/provision.ts'
import { openFleetStore } from '../cloud/apply/tiers/tier-store.ts'
import { partitionMappingsConfig } from '../proto/index.ts'
import { assertExactlyOnce, connectDevice, mergeAccounts, readStream, startGateway, startNats, waitFor, type NatsServer } from '../devkit/index.ts'
import { loadDevice } from './harness/load.ts'
import { deferrer, startCloud } from './harness/cloud.ts'
import { ackedTotal, assertViewsAccount } from './harness/views-account.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }
const P = 4

test('cloud migration: a cloud from before partitioning, with a half-applied backlog, moves to partitions with no loss and nothing applied twice', { timeout: 180000 }, async (t) => {
  const defer = deferrer(t)
  const old = await startNats()
  let current: NatsServer = old
  defer(() => current.cleanup())

  // What the cloud before partitioning provisioned: streams on the bare subjects, one unfiltered durable per stream.
  const nc1 = await connect({ servers: old.url })
  const jsm1 = await jetstreamManager(nc1)
  for (const [name, subject, durable] of [['TELEMETRY', 'iot.*.telemetry', 'aggregator-telemetry'], ['EVENTS', 'iot.*.events', 'aggregator-events']]) {
    await jsm1.streams.add({ name, subjects: [subject], duplicate_window: 600e9 })
    await jsm1.consumers.add(name, { durable_name: durable, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All, ack_wait: 30e9, max_ack_pending: 128, max_deliver: -1 })
  }
  await provisionViews(nc1)

  const gwIds = ['gw-mig-a', 'gw-mig-b']
  const acked = new Map<string, Map<string, Set<number>>>()
  const loads: Array<{ stop: () => void }> = []
  for (const gatewayId of gwIds) {
    const gw = await startGateway({ gatewayId, mqtt: ANON, uplink: { servers: [old.url], reconnectMinMs: 50, reconnectMaxMs: 500, publishTimeoutMs: 2000, heartbeatMs: 500 } })
    defer(() => gw.close())
    const set = new Set<number>()
    acked.set(gatewayId, new Map([['dev-0', set]]))
    const c = await connectDevice(gw.ports.mqtt, { clientId: 'dev-0' })
    defer(() => c.end(true))
    loads.push(loadDevice(c, 'dev-0', { n: 0 }, set, { window: 4, intervalMs: 5 }))
  }
  const total = (): number => ackedTotal(acked)
  await waitFor(async () => (await jsm1.streams.info('TELEMETRY')).state.messages >= 20, 'a backlog on the bare subjects', 30000)

  // The old cloud applies the first part of the backlog through its durable, then stops.
  const store1 = (await openFleetStore(nc1, 'VIEWS')).store
  const oldApply = new Aggregator(nc1, store1, createCloudMetrics({ defaultMetrics: false }), createLogger('silent'))
  const legacy = await jetstream(nc1).consumers.get('TELEMETRY', 'aggregator-telemetry')
  const first = []
  for await (const m of await legacy.fetch({ max_messages: 10, expires: 2000 })) first.push(m)
  assert.equal(first.length, 10)
  await oldApply.applyGroup('TELEMETRY', first)
  await nc1.flush()
  const floorBefore = (await jsm1.consumers.info('TELEMETRY', 'aggregator-telemetry')).ack_floor.stream_seq
  assert.ok(floorBefore >= 10, `the old cloud acked what it applied (floor ${floorBefore})`)
  await nc1.close()

  // The server restarts with the partition mapping (same port, same store); the gateways buffer meanwhile.
  const port = old.port
  const storeDir = old.storeDir
  await old.stop()
  const deadline = Date.now() + 10000
  for (;;) {
    try { current = await startNats({ port, storeDir, config: partitionMappingsConfig(P) }); break } catch (err) {
      if (!/address already in use/i.test((err as Error).message) || Date.now() > deadline) throw err
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  defer(() => old.cleanup())
  const { cloud } = await startCloud(current, { aggregator: { partitions: P } })
  defer(() => cloud.close())
  assert.deepEqual(cloud.mapping, { state: 'mapped', partitions: P })
  const nc = await connect({ servers: current.url })
  defer(() => nc.close())
  const jsm = await jetstreamManager(nc)
  assert.deepEqual((await jsm.streams.info('TELEMETRY')).config.subjects, ['iot.*.telemetry', 'iot.*.telemetry.*'], 'the stream captures the partitioned subjects too')
  await waitFor(async () => {
    const names: string[] = []
    for await (const ci of jsm.consumers.list('TELEMETRY')) names.push(ci.name)
    return !names.includes('aggregator-telemetry') && names.includes('aggregator-telemetry-pu')
  }, 'the old durable to be taken over by the unmapped partition', 20000)
  const at = total()
  await waitFor(() => total() > at + 500, 'load to go on after the move', 30000)
  for (const l of loads) l.stop()

  const { duplicates } = await assertViewsAccount(cloud.views!, acked)
  assert.equal(duplicates, 0, 'nothing the old cloud acked was applied again')
  const stream = mergeAccounts(await readStream(current.url, 'TELEMETRY'), await readStream(current.url, 'EVENTS'))
  for (const [gw, devices] of acked) assertExactlyOnce(stream, gw, devices)
  const bySubject = (await jsm.streams.info('TELEMETRY', { subjects_filter: 'iot.>' })).state.subjects ?? {}
  t.diagnostic(`${total()} events acknowledged; stream subjects ${JSON.stringify(bySubject)}; the old cloud had acked up to stream seq ${floorBefore}`)
  assert.ok(Object.keys(bySubject).some((s) => s.split('.').length === 3) && Object.keys(bySubject).some((s) => s.split('.').length === 4), 'batches on both the bare (before) and the partitioned (after) subjects')
})

test('cloud migration: a takeover tried again after a first attempt made the new durable (and failed before deleting the old one) starts at the old consumer\'s floor', async (t) => {
  const defer = deferrer(t)
  const server = await startNats()
  defer(() => server.cleanup())
  const nc = await connect({ servers: server.url })
  defer(() => nc.close())
  const jsm = await jetstreamManager(nc)
  const js = jetstream(nc)
  await jsm.streams.add({ name: 'TELEMETRY', subjects: ['iot.*.telemetry'] })
  for (let i = 0; i < 20; i++) await js.publish('iot.gw-retry.telemetry', new Uint8Array([i]))
  // The old cloud's consumer applied (acked) the first 10.
  await jsm.consumers.add('TELEMETRY', { durable_name: 'aggregator-telemetry', ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All })
  const legacy = await js.consumers.get('TELEMETRY', 'aggregator-telemetry')
  for await (const m of await legacy.fetch({ max_messages: 10, expires: 2000 })) await m.ackAck()
  assert.equal((await jsm.consumers.info('TELEMETRY', 'aggregator-telemetry')).ack_floor.stream_seq, 10)
  // What a first takeover left: the new durable, at floor 0, beside the old one.
  await jsm.consumers.add('TELEMETRY', { durable_name: 'aggregator-telemetry-pu', filter_subject: 'iot.*.telemetry', ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All })
  const applied: number[] = []
  const consumer = new PartitionConsumer({ stream: 'TELEMETRY', durable: 'aggregator-telemetry-pu', filter: 'iot.*.telemetry', legacyDurable: 'aggregator-telemetry', maxBatchMessages: 5, ackWaitMs: 30000 }, {
    js,
    jsm,
    apply: async (msgs) => { for (const m of msgs) { applied.push(m.seq); m.ack() } },
    holds: () => true,
    metrics: createCloudMetrics({ defaultMetrics: false }),
    log: createLogger('silent'),
  })
  await consumer.start()
  defer(() => consumer.stop())
  await waitFor(() => applied.length >= 10, 'the unapplied half')
  assert.deepEqual(applied.sort((a, b) => a - b), [11, 12, 13, 14, 15, 16, 17, 18, 19, 20], 'only what the old cloud had not acked')
  await assert.rejects(jsm.consumers.info('TELEMETRY', 'aggregator-telemetry'), /not found/i, 'the old consumer is deleted')
})
