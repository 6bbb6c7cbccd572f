// Cloud aggregator (#5): idempotent apply, event-time rollups, heartbeat status, end-to-end accounting.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { jetstream, type JetStreamClient } from '@nats-io/jetstream'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { subjects, v1 } from '../proto/index.ts'
import { Aggregator } from '../cloud/apply/aggregator.ts'
import { accountingOf, applyToDevice, newDeviceDoc, type ApplyEvent } from '../cloud/apply/apply.ts'
import { openFleetStore } from '../cloud/apply/tiers/tier-store.ts'
import type { TierRetention } from '../cloud/apply/tiers/tiers.ts'
import { createLogger } from '../cloud/log.ts'
import { createCloudMetrics } from '../cloud/metrics.ts'
import { provisionStreams } from '../cloud/provision.ts'
import { provisionViews } from '../cloud/provision.ts'
import { MemoryViewStore, type ViewStore } from '../cloud/store/view-store.ts'
import { FleetViews } from '../cloud/views/views.ts'
import { connectDevice, startGateway, startNats, type NatsServer, waitFor, startProxy } from '../devkit/index.ts'
import { loadDevice } from './harness/load.ts'
import { apiFetch, deferrer, startCloud, rng, shuffle } from './harness/cloud.ts'


// The tests below replay history of 2026-11: every tier keeps a year, so that none of it is too old for a tier.
const YEAR_MS = 365 * 24 * 3600_000
const LONG: TierRetention = { '1m': YEAR_MS, '5m': YEAR_MS, '1h': YEAR_MS }
const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }
const silent = createLogger(process.env.TEST_LOG ?? 'silent')

interface Rig { nc: NatsConnection, js: JetStreamClient, store: ViewStore, views: FleetViews, aggregator: Aggregator, close: () => Promise<void> }

/** An aggregator on a real nats-server with the given store (a KV bucket unless memory). */
async function startRig (nats: NatsServer, opts: { memory?: boolean, durablePrefix?: string, store?: ViewStore, retention?: TierRetention } = {}): Promise<Rig> {
  const nc = await connect({ servers: nats.url })
  await provisionStreams(nc)
  await provisionViews(nc, { retention: opts.retention })
  const store = opts.store ?? (opts.memory ? new MemoryViewStore() : (await openFleetStore(nc, 'VIEWS')).store)
  const aggregator = new Aggregator(nc, store, createCloudMetrics({ defaultMetrics: false }), silent, { durablePrefix: opts.durablePrefix, retention: opts.retention })
  await aggregator.start()
  return {
    nc, js: jetstream(nc), store, aggregator, views: new FleetViews(store, { offlineTimeoutMs: 5000 }),
    close: async () => { await aggregator.close(); await nc.close() },
  }
}


const getJson = async <T = any>(url: string): Promise<T> => {
  const r = await apiFetch(url)
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status} ${await r.text()}`)
  return await r.json() as T
}

function event (deviceId: string, seq: number, eventTsMs: number, value: number): ApplyEvent {
  return { deviceId, seq, eventTsMs, ingestTsMs: Date.now(), readings: [{ name: 'temperature', value }, { name: 'n', value: seq }] }
}

function encodeBatch (gatewayId: string, batchId: string, events: ApplyEvent[], gaps: Array<{ deviceId: string, fromSeq: number, toSeq: number }> = []): Uint8Array {
  return v1.ReplicationBatch.encode({
    gatewayId,
    batchId,
    sentTsMs: Date.now(),
    events: events.map((e) => ({ deviceId: e.deviceId, seq: e.seq, eventTsMs: e.eventTsMs, ingestTsMs: e.ingestTsMs, readings: e.readings })),
    gaps: gaps.map((g) => ({ gatewayId, deviceId: g.deviceId, fromSeq: g.fromSeq, toSeq: g.toSeq, count: g.toSeq - g.fromSeq + 1, reason: 'shed', recordedTsMs: Date.now() })),
  }).finish()
}



/** Everything a reader can see of the views, with `duplicates` and volatile fields left out. */
async function snapshot (views: FleetViews, gatewayId: string, devices: string[], from: number, to: number): Promise<unknown> {
  const out: Record<string, unknown> = {}
  for (const d of devices) {
    const dv = await views.device(gatewayId, d)
    assert.ok(dv, `device ${d} has a view`)
    const { duplicates: _, gapRecordDuplicates: __, ...acct } = dv.accounting
    out[d] = {
      latest: dv.latest && { ...dv.latest, appliedMs: 0 },
      acct,
      updatedMs: dv.updatedMs,
      m1: await views.history(gatewayId, d, from, to, '1m'),
      m5: await views.history(gatewayId, d, from, to, '5m'),
      h1: await views.history(gatewayId, d, from, to, '1h'),
    }
  }
  return out
}

test('cloud apply: device dedupe state stays bounded and counts holes, late fills and explained gaps', () => {
  const doc = newDeviceDoc('gw', 'd')
  const ev = (seq: number): ApplyEvent => event('d', seq, 1000 + seq, seq)
  applyToDevice(doc, [1, 2, 3, 7, 8].map(ev), [], 0)
  assert.deepEqual({ hwm: doc.hwm, recv: doc.recv }, { hwm: 3, recv: [[7, 8]] })
  let a = accountingOf(doc)
  assert.equal(a.gapsOpen, 3)
  assert.equal(a.gapRangesOpen, 1)
  applyToDevice(doc, [], [{ deviceId: 'd', fromSeq: 4, toSeq: 5, reason: 'shed' }], 0)
  a = accountingOf(doc)
  assert.deepEqual([a.gapsOpen, a.gapsExplained], [1, 2])
  const s = applyToDevice(doc, [ev(6), ev(6), ev(2)], [], 0)
  assert.deepEqual([s.applied, s.duplicates, s.lateFilled], [1, 2, 1])
  a = accountingOf(doc)
  assert.deepEqual([a.received, a.duplicates, a.gapsOpen, a.gapsExplained, a.gapsClosed], [6, 2, 0, 2, 1])
  // The bound: with at most 2 ranges, the lowest holes are folded into the high-water mark and counted.
  const b = newDeviceDoc('gw', 'd')
  applyToDevice(b, [1, 3, 5, 7, 9].map(ev), [], 0, 2)
  assert.ok(b.recv.length <= 2)
  assert.equal(b.acct.abandoned, 2)
  assert.equal(applyToDevice(b, [ev(2)], [], 0, 2).duplicates, 1, 'a folded hole is settled')
})

for (const memory of [true, false]) {
  test(`cloud aggregator (${memory ? 'memory' : 'KV'} store): replaying every batch with new msg ids changes nothing but duplicates`, { timeout: 60000 }, async (t) => {
    const defer = deferrer(t)
    const nats = await startNats()
    defer(() => nats.cleanup())
    const rig = await startRig(nats, { memory, retention: LONG })
    defer(() => rig.close())
    const gw = 'gw-a'
    const devices = ['d-0', 'd-1', 'dev.dotted']
    const base = Date.UTC(2026, 10, 1, 10, 58)
    const rand = rng(7)
    const payloads: Array<{ subject: string, data: Uint8Array }> = []
    let total = 0
    for (let b = 0; b < 6; b++) {
      const events: ApplyEvent[] = []
      for (const d of devices) {
        for (let i = 1; i <= 50; i++) {
          const seq = b * 50 + i
          if (d === 'd-1' && seq >= 101 && seq <= 110) continue // shed at the gateway
          events.push(event(d, seq, base + seq * 1500 + Math.floor(rand() * 4000), Math.round(rand() * 1000) / 10))
        }
      }
      total += events.length
      payloads.push({ subject: subjects.telemetry(gw), data: encodeBatch(gw, `b${b}`, events) })
    }
    payloads.push({ subject: subjects.events(gw), data: encodeBatch(gw, 'gaps', [], [{ deviceId: 'd-1', fromSeq: 101, toSeq: 110 }]) })
    for (const p of payloads) await rig.js.publish(p.subject, p.data, { msgID: `first-${payloads.indexOf(p)}` })
    await waitFor(async () => (await rig.views.accounting()).totals.received === total, 'every event applied')
    await waitFor(async () => (await rig.views.accounting()).totals.gapRecords === 1, 'the gap record applied')
    const from = base - 3600_000
    const to = base + 3 * 3600_000
    const before = await snapshot(rig.views, gw, devices, from, to)
    const acct = (await rig.views.accounting()).totals
    assert.deepEqual([acct.received, acct.duplicates, acct.gapsOpen, acct.gapsExplained], [total, 0, 0, 10])

    // The same batches again, with msg ids JetStream has never seen: beyond its de-duplication window.
    for (const p of payloads) await rig.js.publish(p.subject, p.data, { msgID: `again-${payloads.indexOf(p)}` })
    await waitFor(async () => (await rig.views.accounting()).totals.duplicates === total, 'every replayed event counted as a duplicate')
    await waitFor(async () => (await rig.views.accounting()).totals.gapRecordDuplicates === 1, 'the replayed gap record seen')
    assert.deepEqual(await snapshot(rig.views, gw, devices, from, to), before)

    if (!memory) {
      // A new aggregator (a fresh durable consumer: the whole stream again) on the same KV state.
      await rig.aggregator.close()
      const second = await startRig(nats, { durablePrefix: 'second', retention: LONG })
      defer(() => second.close())
      await waitFor(async () => (await second.views.accounting()).totals.duplicates === 3 * total, 'a restarted aggregator drops what it already applied')
      assert.deepEqual(await snapshot(second.views, gw, devices, from, to), before)
      assert.equal((await second.views.accounting()).totals.received, total)
    }
  })
}

test('cloud aggregator: a shuffled, delayed backfill gives the same 1-min rollups as an in-order reference', { timeout: 60000 }, async (t) => {
  const defer = deferrer(t)
  const nats = await startNats()
  defer(() => nats.cleanup())
  const rig = await startRig(nats, { retention: LONG })
  defer(() => rig.close())
  const gw = 'gw-b'
  const rand = rng(42)
  const base = Date.UTC(2026, 10, 2, 0, 0) // six hours of history, as after an outage
  const events: ApplyEvent[] = []
  for (let seq = 1; seq <= 3000; seq++) {
    // Event time mostly follows seq, with devices' clocks jittering by up to ±40 s.
    events.push(event('s-1', seq, base + seq * 7200 + Math.floor((rand() - 0.5) * 80_000), Math.round((rand() * 50 - 10) * 100) / 100))
  }
  // The reference, computed here independently, in seq order.
  type Ref = { count: number, min: number, max: number, sum: number, last: number, lastTs: number, lastSeq: number }
  const ref = new Map<number, Ref>()
  for (const e of events) {
    const start = Math.floor(e.eventTsMs / 60_000) * 60_000
    const v = e.readings[0].value
    const r = ref.get(start)
    if (!r) { ref.set(start, { count: 1, min: v, max: v, sum: v, last: v, lastTs: e.eventTsMs, lastSeq: e.seq }); continue }
    r.count++
    r.min = Math.min(r.min, v)
    r.max = Math.max(r.max, v)
    r.sum += v
    if (e.eventTsMs > r.lastTs || (e.eventTsMs === r.lastTs && e.seq > r.lastSeq)) { r.last = v; r.lastTs = e.eventTsMs; r.lastSeq = e.seq }
  }
  // Batches of 37 in random order, events shuffled inside each, published in three delayed waves.
  const batches: ApplyEvent[][] = []
  for (let i = 0; i < events.length; i += 37) batches.push(shuffle(events.slice(i, i + 37), rand))
  const order = shuffle(batches.map((_, i) => i), rand)
  const waves = [order.slice(0, 20), order.slice(20, 50), order.slice(50)]
  let sent = 0
  for (const wave of waves) {
    for (const i of wave) {
      await rig.js.publish(subjects.telemetry(gw), encodeBatch(gw, `bf-${i}`, batches[i]), { msgID: `bf-${i}` })
      sent += batches[i].length
    }
    await waitFor(async () => (await rig.views.device(gw, 's-1'))?.accounting.received === sent, `wave applied (${sent} events)`)
  }
  const buckets = await rig.views.history(gw, 's-1', base - 3600_000, base + 8 * 3600_000, '1m')
  assert.equal(buckets.length, ref.size)
  for (const b of buckets) {
    const r = ref.get(b.start)
    assert.ok(r, `unexpected bucket ${new Date(b.start).toISOString()}`)
    const got = b.readings.temperature
    assert.deepEqual([got.count, got.min, got.max, got.last, got.lastTs], [r.count, r.min, r.max, r.last, r.lastTs], `bucket ${new Date(b.start).toISOString()}`)
    assert.ok(Math.abs(got.sum - r.sum) < 1e-6 && Math.abs(got.avg - r.sum / r.count) < 1e-9)
  }
  const hours = await rig.views.history(gw, 's-1', base - 3600_000, base + 8 * 3600_000, '1h')
  assert.equal(hours.reduce((s, h) => s + h.readings.temperature.count, 0), events.length)
  const acct = (await rig.views.device(gw, 's-1'))!.accounting
  assert.deepEqual([acct.received, acct.duplicates, acct.gapsOpen], [3000, 0, 0])
  assert.ok(acct.gapsClosed > 0, 'out-of-order batches filled holes late')
})

test('cloud aggregator: a gateway whose heartbeats stop is shown offline within the timeout', { timeout: 60000 }, async (t) => {
  const defer = deferrer(t)
  const nats = await startNats()
  defer(() => nats.cleanup())
  const offlineTimeoutMs = 1000
  const { cloud, api } = await startCloud(nats, { offlineTimeoutMs })
  defer(() => cloud.close())
  const gw = await startGateway({ gatewayId: 'gw-hb', mqtt: ANON, uplink: { servers: [nats.url], heartbeatMs: 200 } })
  let closed = false
  defer(() => closed ? undefined : gw.close())
  const online = await waitFor(async () => {
    const f = await getJson(`${api}/api/fleet`)
    return f.gateways.find((g: any) => g.gatewayId === 'gw-hb' && g.online)
  }, 'the gateway to show online')
  assert.equal(online.linkState, 'up')
  const single = await getJson(`${api}/api/gateways/gw-hb`)
  assert.equal(single.status.online, true)
  await gw.close()
  closed = true
  const stoppedAt = Date.now()
  const offline = await waitFor(async () => {
    const s = (await getJson(`${api}/api/gateways/gw-hb`)).status
    return s.online === false ? s : undefined
  }, 'the gateway to show offline', 5000)
  // Offline because its heartbeats stopped, not for another reason: the last heartbeat shown was
  // sent before the gateway closed, and the fleet view agrees.
  assert.ok(offline.heartbeatTsMs > 0 && offline.heartbeatTsMs <= stoppedAt, `last heartbeat ${offline.heartbeatTsMs}, gateway closed at ${stoppedAt}`)
  const fleet = await getJson(`${api}/api/fleet`)
  assert.deepEqual(fleet.gateways.filter((g: any) => g.gatewayId === 'gw-hb').map((g: any) => [g.online, g.heartbeatTsMs]), [[false, offline.heartbeatTsMs]])
})

test('cloud end to end: gateway + devices -> aggregator -> API, received == acknowledged at the edge, no duplicates, no gaps', { timeout: 90000 }, async (t) => {
  const defer = deferrer(t)
  const nats = await startNats()
  defer(() => nats.cleanup())
  const { cloud, api } = await startCloud(nats)
  defer(() => cloud.close())
  const gw = await startGateway({ gatewayId: 'gw-e2e', mqtt: ANON, uplink: { servers: [nats.url], heartbeatMs: 200 } })
  defer(() => gw.close())
  const acked = new Map<string, Set<number>>()
  const loads = []
  for (let d = 0; d < 3; d++) {
    const id = `e2e-${d}`
    acked.set(id, new Set())
    const c = await connectDevice(gw.ports.mqtt, { clientId: id })
    defer(() => c.end(true))
    loads.push(loadDevice(c, id, { n: 0 }, acked.get(id)!, { window: 10, intervalMs: 1 }))
  }
  await waitFor(() => [...acked.values()].every((s) => s.size > 300), 'devices to publish', 30000)
  for (const l of loads) l.stop()
  await waitFor(() => gw.gateway.outbox.stats().events === 0 && gw.gateway.uplink.stats().inFlight === 0, 'the gateway to drain', 30000)
  for (const [id, set] of acked) {
    const dev = await waitFor(async () => {
      const d = await getJson(`${api}/api/devices/gw-e2e/${id}`).catch(() => null)
      return d && d.accounting.received === set.size ? d : null
    }, `${id}: the cloud to receive all ${set.size} acknowledged events`, 20000)
    assert.equal(dev.accounting.duplicates, 0)
    assert.equal(dev.accounting.gapsOpen, 0)
    assert.equal(dev.accounting.highestSeq, set.size)
    assert.equal(dev.latest.seq, set.size)
    assert.equal(dev.latest.readings.temperature.value, 21.5)
  }
  const accounting = await getJson(`${api}/api/accounting?gateway=gw-e2e`)
  const total = [...acked.values()].reduce((s, a) => s + a.size, 0)
  assert.deepEqual([accounting.totals.received, accounting.totals.duplicates, accounting.totals.gapsOpen], [total, 0, 0])
  const hist = await getJson(`${api}/api/devices/gw-e2e/e2e-0/history?from=${Date.now() - 3600_000}&to=${Date.now() + 60_000}&res=1m`)
  assert.equal(hist.buckets.reduce((s: number, b: any) => s + b.readings.temperature.count, 0), acked.get('e2e-0')!.size)
  const metrics = await (await fetch(`${api}/metrics`)).text()
  assert.match(metrics, /cloud_aggregator_applied_events_total\{stream="TELEMETRY"\} \d+/)
  // No partition mapping on this server: every batch is in the unmapped partition, applied in full.
  assert.match(metrics, /cloud_aggregator_consumer_lag_messages\{partition="u"\} 0/)
  assert.equal((await fetch(`${api}/readyz`)).status, 200)
  assert.equal((await apiFetch(`${api}/api/devices/gw-e2e/nope`)).status, 404)
  assert.equal((await apiFetch(`${api}/api/devices/gw-e2e/e2e-0/history?res=2m`)).status, 400)
})

test('cloud end to end: events shed at the gateway (outbox over budget) show up as explained gaps', { timeout: 90000 }, async (t) => {
  const defer = deferrer(t)
  const nats = await startNats()
  defer(() => nats.cleanup())
  const { cloud, api } = await startCloud(nats)
  defer(() => cloud.close())
  const proxy = await startProxy({ host: '127.0.0.1', port: nats.port })
  defer(() => proxy.close())
  proxy.cut() // the uplink is down from the start: the outbox fills and sheds
  const gw = await startGateway({ gatewayId: 'gw-shed', mqtt: ANON, outbox: { budgetBytes: 20000 }, uplink: { servers: [`nats://127.0.0.1:${proxy.port}`], reconnectMinMs: 50, reconnectMaxMs: 200 } })
  defer(() => gw.close())
  const devices = ['shed-a', 'shed-b']
  const clients = await Promise.all(devices.map((id) => connectDevice(gw.ports.mqtt, { clientId: id })))
  defer(() => { for (const c of clients) c.end(true) })
  const perDevice = 300
  for (let i = 0; i < perDevice; i++) {
    await Promise.all(clients.map((c, k) => c.publishAsync(`devices/${devices[k]}/telemetry`, JSON.stringify({ i, temperature: 20 + i / 100 }), { qos: 1 })))
  }
  const shed = gw.gateway.outbox.stats().shedEvents
  assert.ok(shed > 0, 'nothing was shed')
  proxy.restore()
  await waitFor(() => gw.gateway.outbox.stats().events === 0 && gw.gateway.uplink.stats().inFlight === 0, 'the gateway to drain', 30000)
  const acct = await waitFor(async () => {
    const a = await getJson(`${api}/api/accounting?gateway=gw-shed`)
    return a.totals.received + a.totals.gapsExplained === devices.length * perDevice ? a : null
  }, 'every seq received or explained', 20000)
  assert.equal(acct.totals.gapsExplained, shed)
  assert.equal(acct.totals.gapsOpen, 0)
  assert.equal(acct.totals.duplicates, 0)
  for (const d of acct.devices) assert.equal(d.highestSeq, perDevice)
})
