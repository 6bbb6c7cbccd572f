// Raw history and export (#17): a device's events for a range read from the TELEMETRY stream, paged
// by seq, as JSON, NDJSON and CSV, checked by identity (gateway, device, n) against what the edge
// acknowledged, across an uplink outage whose backlog drains beside live data; and the history's
// choice of raw or a rollup tier by range.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { connectDevice, waitFor } from '../devkit/index.ts'
import type { RawEvent } from '../cloud/views/raw-events.ts'
import { apiFetch } from './harness/cloud.ts'
import { startProxiedSystem } from './harness/proxied-system.ts'
import { loadDevice } from './harness/load.ts'


const getJson = async <T = any>(url: string): Promise<T> => {
  const r = await apiFetch(url)
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status} ${await r.text()}`)
  return await r.json() as T
}

/** Every page of a device's raw events for [from, to), following `next`. */
async function allPages (base: string, from: number, to: number, limit: number): Promise<{ events: RawEvent[], pages: number }> {
  const events: RawEvent[] = []
  let after = 0
  let pages = 0
  for (;;) {
    const page = await getJson(`${base}/events?from=${from}&to=${to}&limit=${limit}&after=${after}`)
    pages++
    events.push(...page.events)
    if (page.next === null) return { events, pages }
    assert.equal(page.events.length, limit, 'a page with a next cursor is full')
    after = page.next
  }
}

test('raw history: exactly the events of a range, in seq order per device, across an outage backfill; pages, NDJSON and CSV agree', { timeout: 120000 }, async (t) => {
  const { defer, api, proxy, gw } = await startProxiedSystem(t, 'gw-raw')
  const t0 = Date.now()
  const devices = ['raw-a', 'raw-b']
  const acked = new Map(devices.map((d) => [d, new Set<number>()]))
  const next = new Map(devices.map((d) => [d, { n: 0 }]))
  const clients = await Promise.all(devices.map((id) => connectDevice(gw.ports.mqtt, { clientId: id })))
  defer(() => { for (const c of clients) c.end(true) })
  const loads = devices.map((d, i) => loadDevice(clients[i], d, next.get(d)!, acked.get(d)!, { window: 5, intervalMs: 2 }))
  await waitFor(() => [...acked.values()].every((s) => s.size > 100), 'devices to publish online')
  // The outage: the gateway keeps accepting into its outbox, then drains it beside live data.
  proxy.cut()
  const before = [...acked.values()].map((s) => s.size)
  await waitFor(() => [...acked.values()].every((s, i) => s.size > before[i] + 300), 'devices to publish during the outage', 30000)
  proxy.restore()
  await waitFor(() => [...acked.values()].every((s, i) => s.size > before[i] + 500), 'devices to publish after the outage', 30000)
  for (const l of loads) l.stop()
  await waitFor(() => gw.gateway.outbox.stats().events === 0 && gw.gateway.uplink.stats().inFlight === 0, 'the gateway to drain', 60000)
  for (const [d, set] of acked) {
    await waitFor(async () => (await getJson(`${api}/api/devices/gw-raw/${d}`).catch(() => null))?.accounting.received === set.size, `${d}: all ${set.size} applied`, 30000)
  }
  const to = Date.now() + 60_000

  for (const [d, set] of acked) {
    const base = `${api}/api/devices/gw-raw/${d}`
    // Paged JSON: every acknowledged event once (identity by n), seqs strictly ascending.
    const { events, pages } = await allPages(base, t0 - 60_000, to, 97)
    assert.ok(pages > 5, `${pages} pages`)
    const ns = events.map((e) => e.readings.n)
    assert.equal(new Set(ns).size, ns.length, `${d}: an event twice`)
    assert.deepEqual(new Set(ns), set, `${d}: raw history != acknowledged at the edge`)
    for (let i = 1; i < events.length; i++) assert.ok(events[i].seq > events[i - 1].seq, `${d}: seq order at ${i}`)
    assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1), `${d}: seqs 1..n, none missing`)

    // NDJSON and CSV exports of the whole range: the same events.
    const nd = await apiFetch(`${base}/events?from=${t0 - 60_000}&to=${to}&limit=100000&format=ndjson`)
    assert.match(nd.headers.get('content-type') ?? '', /application\/x-ndjson/)
    assert.match(nd.headers.get('content-disposition') ?? '', /attachment; filename="gw-raw_raw-.*\.ndjson"/)
    assert.equal(nd.headers.get('x-next-after'), null)
    assert.deepEqual((await nd.text()).trim().split('\n').map((l) => JSON.parse(l)), events)
    const csv = (await (await apiFetch(`${base}/events?from=${t0 - 60_000}&to=${to}&limit=100000&format=csv`)).text()).trim().split('\n')
    const head = csv[0].split(',')
    assert.deepEqual(head, ['seq', 'eventTsMs', 'eventTime', 'ingestTsMs', 'n', 'temperature'])
    assert.deepEqual(csv.slice(1).map((l) => l.split(',')).map((c) => [Number(c[0]), Number(c[1]), Number(c[4]), Number(c[5])]), events.map((e) => [e.seq, e.eventTsMs, e.readings.n, e.readings.temperature]))
    // A partial export says where the next page starts.
    const part = await apiFetch(`${base}/events?from=${t0 - 60_000}&to=${to}&limit=10&format=csv`)
    assert.equal(part.headers.get('x-next-after'), String(events[9].seq))

    // A sub-range (the outage's part): exactly the events whose event time lies in it.
    const a = events[Math.floor(events.length / 3)].eventTsMs
    const b = events[Math.floor(2 * events.length / 3)].eventTsMs
    const sub = await allPages(base, a, b, 1000)
    assert.deepEqual(sub.events, events.filter((e) => e.eventTsMs >= a && e.eventTsMs < b))
    assert.ok(sub.events.length > 0)

    // history: raw for a short range (auto), a rollup tier for a long one, counts agreeing.
    const short = await getJson(`${base}/history?from=${a}&to=${Math.min(b, a + 10 * 60_000)}`)
    assert.equal(short.res, 'raw')
    assert.deepEqual(short.events, events.filter((e) => e.eventTsMs >= a && e.eventTsMs < Math.min(b, a + 10 * 60_000)))
    const long = await getJson(`${base}/history?from=${t0 - 3600_000}&to=${to}`)
    assert.equal(long.res, '1m')
    assert.equal(long.buckets.reduce((s: number, x: any) => s + x.readings.n.count, 0), set.size)
    const days = await getJson(`${base}/history?from=${t0 - 2 * 24 * 3600_000}&to=${to}`)
    assert.equal(days.res, '5m')
    assert.equal(days.buckets.reduce((s: number, x: any) => s + x.readings.n.count, 0), set.size)
  }
  // Bounds: a page size beyond the limit and an empty range are refused.
  assert.equal((await apiFetch(`${api}/api/devices/gw-raw/raw-a/events?limit=100001`)).status, 400)
  assert.equal((await apiFetch(`${api}/api/devices/gw-raw/raw-a/events?from=5&to=5`)).status, 400)
  // A device without events: an empty page, not an error.
  assert.deepEqual((await getJson(`${api}/api/devices/gw-raw/nobody/events?from=${t0}&to=${to}`)).events, [])
})
