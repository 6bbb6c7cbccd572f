// The per-device delivery ledger end to end (issue 15, item 3: "where is my data" has one answer):
// a real gateway, nats-server, TCP proxy and cloud (aggregator and API). During an uplink cut the
// gateway's ledger shows accepted above replicated and an oldest unsent age; once the link is back
// the cloud's answer per device has accepted = replicated = applied, and the stream holds every
// acknowledged reading exactly once by identity. After a disk-budget shed, the device's shed ranges
// in the API are the gap records the gateway wrote.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { assertExactlyOnce, connectDevice, readStream, scrapeMetric, waitFor } from '../devkit/index.ts'
import { telemetryTopic } from '../proto/topics.ts'
import { apiFetch } from './harness/cloud.ts'
import { startProxiedSystem } from './harness/proxied-system.ts'
import { queryOutbox } from './harness/outbox-reader.ts'


interface DeviceDelivery { acceptedSeq: number | null, replicatedSeq: number | null, appliedSeq: number | null, oldestUnsentAgeMs: number | null, shed: Array<[number, number]>, shedSettled: number, stale: boolean }
interface GatewayDelivery { devices: number, acceptedSeqSum: number, replicatedSeqSum: number, appliedSeqSum: number, devicesBehind: number, oldestUnsentAgeMs: number, shedSeqs: number, perDevice: Array<DeviceDelivery & { deviceId: string }> }
interface Totals { devices: number, devicesBehind: number, acceptedSeqSum: number, replicatedSeqSum: number, oldestUnsentAgeMs: number }

const getJson = async <T>(url: string): Promise<T | null> => {
  const r = await apiFetch(url)
  return r.status === 200 ? await r.json() as T : null
}

test('delivery ledger: during an uplink cut accepted > replicated at the gateway; after it accepted = replicated = applied per device and summed, and every acknowledged reading is in the stream once', { timeout: 90000 }, async (t) => {
  const { defer, nats, api, proxy, gw } = await startProxiedSystem(t, 'gw-ledger')
  const devices = ['led-0', 'led-1']
  const acked = new Map<string, number[]>(devices.map((d) => [d, []]))
  const clients = await Promise.all(devices.map(async (d) => await connectDevice(gw.ports.mqtt, { clientId: d })))
  defer(() => { for (const c of clients) c.end(true) })
  let next = 0
  const publish = async (count: number): Promise<void> => {
    for (let i = 0; i < count; i++) {
      const n = ++next
      await Promise.all(devices.map(async (d, k) => {
        await clients[k].publishAsync(telemetryTopic(d), JSON.stringify({ n, temperature: 20 }), { qos: 1 })
        acked.get(d)!.push(n)
      }))
    }
  }
  const device = (d: string): Promise<DeviceDelivery | null> => getJson<DeviceDelivery>(`${api}/api/devices/gw-ledger/${d}/delivery`)
  const agree = async (seq: number): Promise<boolean> => {
    for (const d of devices) {
      const v = await device(d)
      if (!v || v.acceptedSeq !== seq || v.replicatedSeq !== seq || v.appliedSeq !== seq || v.oldestUnsentAgeMs !== 0) return false
    }
    return true
  }
  await publish(50)
  await waitFor(() => agree(50), 'the three marks to agree at 50', 30000)

  proxy.cut()
  await waitFor(() => gw.gateway.uplink.state !== 'up', 'the uplink to notice the cut')
  await publish(30)
  const readyz = async (): Promise<Totals> => ((await (await fetch(`http://127.0.0.1:${gw.ports.http}/readyz`)).json()) as { delivery: Totals }).delivery
  await waitFor(async () => (await readyz()).acceptedSeqSum === 160, 'the gateway ledger to read the accepted marks')
  const cut = await readyz()
  assert.equal(cut.devices, 2)
  assert.equal(cut.replicatedSeqSum, 100, 'replicated stays at what was acknowledged before the cut')
  assert.equal(cut.devicesBehind, 2)
  assert.ok(cut.oldestUnsentAgeMs > 0)
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_delivery_unreplicated_seqs'), 60)
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_delivery_devices_behind'), 2)

  proxy.restore()
  await waitFor(() => agree(80), 'the three marks to agree at 80 after the cut', 30000)
  const g = (await getJson<GatewayDelivery>(`${api}/api/gateways/gw-ledger/delivery`))!
  assert.deepEqual([g.devices, g.acceptedSeqSum, g.replicatedSeqSum, g.appliedSeqSum, g.devicesBehind, g.shedSeqs], [2, 160, 160, 160, 0, 0])
  assert.deepEqual(g.perDevice.map((d) => [d.deviceId, d.acceptedSeq, d.replicatedSeq, d.appliedSeq, d.stale]), devices.map((d) => [d, 80, 80, 80, false]))
  // The gateway page's answer carries the same sum (from the same read of the device documents).
  const page = (await getJson<{ delivery: GatewayDelivery }>(`${api}/api/gateways/gw-ledger`))!
  assert.equal(page.delivery.appliedSeqSum, 160)
  assert.ok(await scrapeMetric(Number(new URL(api).port), 'cloud_aggregator_delivery_marks_total') > 0)
  assertExactlyOnce(await readStream(nats.url, 'TELEMETRY'), 'gw-ledger', acked)
})

test('delivery ledger: after a disk-budget shed during a cut, the device\'s shed ranges in the API are the gateway\'s gap records, and kept plus shed is every seq once', { timeout: 90000 }, async (t) => {
  const { defer, nats, api, proxy, gw } = await startProxiedSystem(t, 'gw-shed-ledger', { budgetBytes: 20000 }, { cut: true })
  const client = await connectDevice(gw.ports.mqtt, { clientId: 'shed-0' })
  defer(() => client.end(true))
  const total = 600
  for (let n = 1; n <= total; n++) await client.publishAsync(telemetryTopic('shed-0'), JSON.stringify({ n, temperature: 20.5 }), { qos: 1 })
  const gaps = queryOutbox<{ from_seq: number, to_seq: number }>(gw.dataDir, 'SELECT from_seq, to_seq FROM gaps WHERE device_id = ? ORDER BY id', 'shed-0')
  assert.ok(gaps.length > 0, 'nothing was shed: the test would prove nothing')

  proxy.restore()
  let v: DeviceDelivery | null = null
  await waitFor(async () => { v = await getJson<DeviceDelivery>(`${api}/api/devices/gw-shed-ledger/shed-0/delivery`); return v?.acceptedSeq === total && v.replicatedSeq === total && v.appliedSeq === total && v.oldestUnsentAgeMs === 0 }, 'the marks to agree after the shed', 30000)
  const shedSeqs = gaps.reduce((s, g) => s + g.to_seq - g.from_seq + 1, 0)
  // Shed ranges above the settled mark are listed, those below it are counted: together the gap records.
  const listed = v!.shed.reduce((s, [a, b]) => s + b - a + 1, 0)
  assert.equal(listed + v!.shedSettled, shedSeqs)
  const isShed = (s: number): boolean => gaps.some((gp) => s >= gp.from_seq && s <= gp.to_seq)
  for (const [a, b] of v!.shed) for (let s = a; s <= b; s++) assert.ok(isShed(s), `seq ${s} of shed range ${a}-${b} is in no gap record`)
  const g = (await getJson<GatewayDelivery>(`${api}/api/gateways/gw-shed-ledger/delivery`))!
  assert.equal(g.shedSeqs, shedSeqs)
  // By identity in the stream: every seq 1..total once, or named by a gap record, never both.
  const acc = await readStream(nats.url, 'TELEMETRY')
  const seen = acc.events.get('gw-shed-ledger/shed-0') ?? new Map<number, number>()
  for (let s = 1; s <= total; s++) {
    const shed = isShed(s)
    assert.equal(seen.get(s) ?? 0, shed ? 0 : 1, `seq ${s}${shed ? ' was shed' : ''}`)
  }
})
