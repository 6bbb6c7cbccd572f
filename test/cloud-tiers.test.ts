// Rollup retention tiers (#17): the compact tier codec, retention enforced by NATS (max_age of each
// tier's bucket) with the device's latest state and accounting kept, events too old for a tier
// counted once and never applied, and the three tiers agreeing on count/min/max/sum.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { jetstreamManager } from '@nats-io/jetstream'
import { subjects, v1 } from '../proto/index.ts'
import type { Agg, ApplyEvent } from '../cloud/apply/apply.ts'
import { decodeTierDoc, encodeTierDoc } from '../cloud/apply/tiers/tier-codec.ts'
import { applyToTier, newTierDoc, spanStart, TIERS, type TierDoc, type TierName, type TierRetention } from '../cloud/apply/tiers/tiers.ts'
import { waitFor } from '../devkit/index.ts'
import { rng, shuffle } from './harness/cloud.ts'
import { startViewsRig } from './harness/views-rig.ts'

const HOUR = 3_600_000
const DAY = 24 * HOUR

function ev (seq: number, eventTsMs: number, values: number[]): ApplyEvent {
  const names = ['temperature', 'humidity', 'pressure']
  return { deviceId: 'd-1', seq, eventTsMs, ingestTsMs: eventTsMs, readings: values.map((value, i) => ({ name: names[i], value })) }
}

function batch (gatewayId: string, batchId: string, events: ApplyEvent[]): Uint8Array {
  return v1.ReplicationBatch.encode({ gatewayId, batchId, sentTsMs: Date.now(), events: events.map((e) => ({ deviceId: e.deviceId, seq: e.seq, eventTsMs: e.eventTsMs, ingestTsMs: e.ingestTsMs, readings: e.readings })) }).finish()
}

/** Asserts a decoded document equals the original: exactly, but sums to 1e-13 relative (the codec keeps a sum of decimals as the decimal it rounds to). */
function assertSameDoc (got: TierDoc, want: TierDoc): void {
  const sums: Array<[number, number]> = []
  const strip = (d: TierDoc, into: number[]): unknown => JSON.parse(JSON.stringify(d), (k, v) => { if (k === 'sum') { into.push(v); return 0 } return v })
  const a: number[] = []
  const b: number[] = []
  assert.deepEqual(strip(got, a), strip(want, b))
  for (let i = 0; i < a.length; i++) sums.push([a[i], b[i]])
  for (const [x, y] of sums) assert.ok(Math.abs(x - y) <= Math.abs(y) * 1e-13, `sum ${x} vs ${y}`)
}

test('tier codec: documents come back exactly (decimals, floats, negatives, gaps in seqs, many readings; sums to 1e-13) and a device-hour of the 1m tier fits 2 KB', (t) => {
  const rand = rng(3)
  const start = spanStart('1m', Date.UTC(2026, 11, 1, 10, 0))
  // A device with 3 readings at 6 events/min for an hour (the yardstick).
  const doc = newTierDoc('1m', 'gw-1', 'dev.with.dots', start)
  const events: ApplyEvent[] = []
  for (let i = 0; i < 360; i++) {
    events.push(ev(i + 1, start + i * 10_000 + Math.floor(rand() * 900), [Math.round((20 + rand() * 5) * 100) / 100, Math.round((40 + rand() * 20) * 10) / 10, Math.round((1000 + rand() * 30) * 10) / 10]))
  }
  assert.equal(applyToTier(doc, shuffle(events, rand)), 360)
  const bytes = encodeTierDoc(doc)
  assert.ok(bytes.length <= 2048, `1m tier, 3 readings, 6 events/min: ${bytes.length} B per device-hour`)
  t.diagnostic(`1m tier, 3 readings, 6 events/min: ${bytes.length} B per device-hour`)
  assertSameDoc(decodeTierDoc(bytes), doc)
  // Values no decimal scale represents, negatives, huge and tiny ones, a reading in some slots only, holes in the seqs.
  const odd = newTierDoc('5m', 'gw-2', 'd', spanStart('5m', Date.UTC(2026, 11, 1, 13, 0)))
  const oddEvents: ApplyEvent[] = []
  for (let i = 0; i < 200; i++) {
    const v = [Math.PI * (rand() - 0.5) * 1e6, -rand() * 1e-9, i % 7 === 0 ? 1e300 : -12.5]
    const e = ev(3 * i + 1 + (i % 3), odd.startMs + Math.floor(rand() * TIERS['5m'].spanMs), v)
    if (i % 5 === 0) e.readings.push({ name: `extra-${i % 40}`, value: i })
    oddEvents.push(e)
  }
  applyToTier(odd, oddEvents)
  assertSameDoc(decodeTierDoc(encodeTierDoc(odd)), odd)
  assert.throws(() => decodeTierDoc(encodeTierDoc(odd).subarray(0, 40)), /truncated/)
})

test('tiers: a short 1m retention expires old rollups while latest state and accounting stay; an event too old for a tier is counted once, not applied, and never brings its document back', { timeout: 60000 }, async (t) => {
  const retention: TierRetention = { '1m': 2000, '5m': 90 * DAY, '1h': 730 * DAY }
  // The aggregator's clock: at first just after the span's start, so that nothing is too old yet.
  const hour = spanStart('1m', Date.now())
  let now = hour + 1000
  const { nc, js, store, metrics, agg, views } = await startViewsRig(t, { retention, now: () => now })
  // The bucket's max_age is the tier's retention: NATS ages the documents out, not a sweeper of ours.
  const jsm = await jetstreamManager(nc)
  assert.equal((await jsm.streams.info(`KV_${TIERS['1m'].bucket}`)).config.max_age, 2000 * 1e6)
  assert.equal((await jsm.streams.info(`KV_${TIERS['1h'].bucket}`)).config.max_age, 730 * DAY * 1e6)
  const gw = 'gw-ret'
  const first = Array.from({ length: 10 }, (_, i) => ev(i + 1, hour + i * 50, [20 + i, 50, 1000]))
  await js.publish(subjects.telemetry(gw), batch(gw, 'b1', first), { msgID: 'b1' })
  await waitFor(async () => (await views.device(gw, 'd-1'))?.accounting.received === 10, 'first batch applied')
  const count = async (res: TierName): Promise<number> => (await views.history(gw, 'd-1', hour, hour + HOUR, res)).reduce((s, b) => s + (b.readings.temperature?.count ?? 0), 0)
  assert.deepEqual([await count('1m'), await count('5m'), await count('1h')], [10, 10, 10])
  // NATS expires the 1m document; the other tiers, the latest state and the accounting stay.
  await waitFor(async () => (await count('1m')) === 0, 'the 1m rollup aged out of its bucket', 20000, 200)
  assert.deepEqual([await count('5m'), await count('1h')], [10, 10])
  const dev = (await views.device(gw, 'd-1'))!
  assert.deepEqual([dev.accounting.received, dev.accounting.duplicates, dev.accounting.gapsOpen, dev.latest?.seq, dev.latest?.readings.temperature.value], [10, 0, 0, 10, 29])

  // Later: the span is now older than the 1m retention. Late events of that hour reach the device
  // view and the coarser tiers, but not the 1m tier: counted there, its document not recreated.
  now = hour + 60_000
  const late = Array.from({ length: 5 }, (_, i) => ev(11 + i, hour + 600 + i, [5, 50, 1000]))
  await js.publish(subjects.telemetry(gw), batch(gw, 'b2', late), { msgID: 'b2' })
  await waitFor(async () => (await views.device(gw, 'd-1'))?.accounting.received === 15, 'late batch applied')
  assert.deepEqual([await count('1m'), await count('5m'), await count('1h')], [0, 15, 15])
  assert.equal(await store.get(`${TIERS['1m'].keyPrefix}.${gw}.d-1.${hour}`), null, 'the expired 1m document stays gone')
  const tooOld = async (): Promise<number> => (await metrics.rollupTooOld.get()).values.find((v) => v.labels.tier === '1m')?.value ?? 0
  assert.equal(await tooOld(), 5)
  // A redelivery (new msg id, past JetStream's de-duplication) counts as duplicates, not as too old again.
  await js.publish(subjects.telemetry(gw), batch(gw, 'b2-again', late), { msgID: 'b2-again' })
  await waitFor(async () => (await views.device(gw, 'd-1'))?.accounting.duplicates === 5, 'redelivery seen as duplicates')
  assert.equal(await tooOld(), 5)
  assert.equal(agg.stats().rollupTooOld, 5)
  assert.deepEqual([await count('1m'), await count('5m'), await count('1h')], [0, 15, 15])
})

/** Merges aggregates (count, min, max, sum) of finer buckets. */
function merge (aggs: Array<Pick<Agg, 'count' | 'min' | 'max' | 'sum'>>): { count: number, min: number, max: number, sum: number } {
  return { count: aggs.reduce((s, a) => s + a.count, 0), min: Math.min(...aggs.map((a) => a.min)), max: Math.max(...aggs.map((a) => a.max)), sum: aggs.reduce((s, a) => s + a.sum, 0) }
}

test('tiers: count/min/max/sum of the 1m rollups equal the 5m and 1h ones for the same windows, with late and out-of-order events', { timeout: 60000 }, async (t) => {
  const { js, views } = await startViewsRig(t)
  const gw = 'gw-agree'
  const rand = rng(11)
  // Three hours (crossing a day boundary for the 1h tier's documents), ending an hour ago.
  const from = spanStart('1h', Date.now()) - 3 * HOUR
  const events: ApplyEvent[] = []
  for (let seq = 1; seq <= 2000; seq++) {
    // Device clocks jitter by up to ±3 minutes around an even spread: out of order in event time.
    const ts = Math.max(from, Math.min(from + 3 * HOUR - 1, from + Math.floor(seq * 3 * HOUR / 2000 + (rand() - 0.5) * 360_000)))
    events.push(ev(seq, ts, [Math.round((rand() * 40 - 10) * 100) / 100, Math.round(rand() * 1000) / 10, rand() * 1000]))
  }
  // Batches in random order, a late tail sent last (an outage backfill), one batch sent twice.
  const batches: ApplyEvent[][] = []
  for (let i = 0; i < events.length; i += 50) batches.push(shuffle(events.slice(i, i + 50), rand))
  const order = [...shuffle(batches.map((_, i) => i).slice(0, -8), rand), ...batches.map((_, i) => i).slice(-8).reverse(), 3]
  for (const [n, i] of order.entries()) await js.publish(subjects.telemetry(gw), batch(gw, `a-${n}`, batches[i]), { msgID: `a-${n}` })
  await waitFor(async () => (await views.device(gw, 'd-1'))?.accounting.received === 2000, 'all applied')
  const [m1, m5, h1] = await Promise.all((['1m', '5m', '1h'] as const).map((r) => views.history(gw, 'd-1', from, from + 3 * HOUR, r)))
  const close = (a: number, b: number): boolean => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a))
  for (const name of ['temperature', 'humidity', 'pressure']) {
    assert.equal(h1.reduce((s, b) => s + b.readings[name].count, 0), 2000)
    for (const [coarse, width] of [[m5, 5 * 60_000], [h1, HOUR]] as const) {
      for (const b of coarse) {
        const fine = merge(m1.filter((x) => x.start >= b.start && x.start < b.start + width).map((x) => x.readings[name]))
        const got = b.readings[name]
        assert.deepEqual([got.count, got.min, got.max], [fine.count, fine.min, fine.max], `${name} ${new Date(b.start).toISOString()} (${width / 60_000} min)`)
        assert.ok(close(got.sum, fine.sum), `${name} ${new Date(b.start).toISOString()}: sum ${got.sum} vs ${fine.sum}`)
      }
    }
    // The 1m buckets against the events themselves.
    for (const b of m1) {
      const inside = events.filter((e) => e.eventTsMs >= b.start && e.eventTsMs < b.start + 60_000).map((e) => e.readings.find((r) => r.name === name)!.value)
      assert.deepEqual([b.readings[name].count, b.readings[name].min, b.readings[name].max], [inside.length, Math.min(...inside), Math.max(...inside)])
    }
  }
})
