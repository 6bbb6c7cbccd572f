// Dead letters reach the cloud (issue: operators see trouble): a payload the gateway quarantines is
// reported in its priority lane (at most outbox.deadLetterReportsPerSec, the rest only counted),
// lands in the gateway's and the device's dead-letter views with its reason, detail and first bytes,
// and the console shows them (payload as text or hex) with the counts by reason. Real gateway,
// nats-server, cloud and Chromium.
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { test } from 'node:test'
import { connectDevice, provision, scrapeMetric, startGateway, startNats, waitFor } from '../devkit/index.ts'
import { telemetryTopic } from '../proto/topics.ts'
import { apiFetch, deferrer, startCloud, TEST_CONSOLE } from './harness/cloud.ts'
import { CHROMIUM, consolePage } from './harness/browser.ts'

const GW = 'gw-dead'
const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }
const UI_TIMEOUT = 20000

interface DeadLetterView { seq: number, deviceId: string, reason: string, detail: string, topic: string, payloadBytes: number, payloadBase64: string }

test('dead letters: quarantined payloads are reported to the cloud (bounded by rate, all counted), listed per gateway and device, and shown in the console as text or hex', { timeout: 120000 }, async (t) => {
  assert.ok(existsSync(CHROMIUM), `no browser at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM_PATH)`)
  const defer = deferrer(t)
  const nats = await startNats()
  defer(() => nats.cleanup())
  await provision(nats.url)
  const { cloud, api } = await startCloud(nats)
  defer(() => cloud.close())
  // A burst of 10 reports (1/s for 10 s); the test sends more than that at once.
  const gw = await startGateway({ gatewayId: GW, mqtt: ANON, outbox: { deadLetterReportsPerSec: 1 }, uplink: { servers: [nats.url], heartbeatMs: 300 } })
  defer(() => gw.close())
  const bad = await connectDevice(gw.ports.mqtt, { clientId: 'bad-1' })
  const good = await connectDevice(gw.ports.mqtt, { clientId: 'good-1' })
  defer(() => { bad.end(true); good.end(true) })

  // Each is quarantined and still acknowledged (durable first); a good reading alongside is stored.
  const junk = Buffer.from([0x00, 0xff, 0x10, 0x80, 0x7f])
  await bad.publishAsync(telemetryTopic('bad-1'), '{"temperature": 21', { qos: 1 })
  await bad.publishAsync(telemetryTopic('bad-1'), junk, { qos: 1 })
  await bad.publishAsync(telemetryTopic('bad-1'), JSON.stringify({ temperature: 'hot' }), { qos: 1 })
  for (let i = 0; i < 27; i++) await bad.publishAsync(telemetryTopic('bad-1'), `{"n": ${i},`, { qos: 1 })
  await good.publishAsync(telemetryTopic('good-1'), JSON.stringify({ temperature: 20 }), { qos: 1 })

  const sent = await scrapeMetric(gw.ports.http!, 'gateway_dead_letter_reports_total', { result: 'sent' })
  const suppressed = await scrapeMetric(gw.ports.http!, 'gateway_dead_letter_reports_total', { result: 'suppressed' })
  assert.equal(sent + suppressed, 30, 'every quarantined payload is either reported or counted as suppressed')
  assert.ok(sent >= 10 && sent < 30, `the rate bounds the reports: ${sent} sent`)

  // The cloud: exactly the reported ones, once each, and the counts by reason of all 30.
  let body: { deadLetters: DeadLetterView[], byReason: Record<string, number>, quarantinedTotal: number } = { deadLetters: [], byReason: {}, quarantinedTotal: 0 }
  await waitFor(async () => {
    const r = await apiFetch(`${api}/api/gateways/${GW}/dead-letters`)
    if (r.status !== 200) return false
    body = await r.json() as typeof body
    return body.deadLetters.length === sent && body.quarantinedTotal === 30
  }, 'the reported dead letters and the counts to reach the cloud', 30000)
  assert.equal(new Set(body.deadLetters.map((d) => d.seq)).size, sent, 'a dead letter listed twice')
  assert.deepEqual(body.byReason, { malformed_json: 28, malformed_protobuf: 1, unknown_field: 1 })
  const first = body.deadLetters.at(-1)!
  assert.deepEqual({ deviceId: first.deviceId, reason: first.reason, topic: first.topic, payloadBytes: first.payloadBytes, payload: Buffer.from(first.payloadBase64, 'base64').toString() },
    { deviceId: 'bad-1', reason: 'malformed_json', topic: telemetryTopic('bad-1'), payloadBytes: 18, payload: '{"temperature": 21' })
  assert.ok(first.detail.length > 0, 'the parser\'s detail is kept')
  const binary = body.deadLetters.find((d) => d.reason === 'malformed_protobuf')!
  assert.deepEqual(Buffer.from(binary.payloadBase64, 'base64'), junk)
  const device = await (await apiFetch(`${api}/api/devices/${GW}/bad-1/control`)).json() as { deadLetters: DeadLetterView[] }
  assert.deepEqual(device.deadLetters.map((d) => d.seq), body.deadLetters.map((d) => d.seq).slice(0, device.deadLetters.length))
  assert.deepEqual((await (await apiFetch(`${api}/api/devices/${GW}/good-1/control`)).json() as { deadLetters: unknown[] }).deadLetters, [])

  // The console: the gateway page lists them with the counts; the device page too.
  const { page, errors, close } = await consolePage(api, TEST_CONSOLE)
  defer(close)
  await page.goto(`${api}/console/#/gateways/${GW}`)
  await page.locator(`#dead-letters-table tr[data-dead-letter="${first.seq}"]`).waitFor({ timeout: UI_TIMEOUT })
  assert.equal(await page.locator('#dead-letters-table tbody tr').count(), sent)
  assert.equal(await page.locator(`#dead-letters-table tr[data-dead-letter="${first.seq}"] [data-payload="text"]`).textContent(), '{"temperature": 21')
  assert.equal(await page.locator(`#dead-letters-table tr[data-dead-letter="${binary.seq}"] [data-payload="hex"]`).textContent(), '00 ff 10 80 7f')
  assert.match(await page.locator('[data-dead-letter-counts]').first().textContent() ?? '', /malformed_json: 28/)
  await page.goto(`${api}/console/#/devices/${GW}/bad-1`)
  await page.locator(`#device-dead-letters-table tr[data-dead-letter="${first.seq}"]`).waitFor({ timeout: UI_TIMEOUT })
  await page.goto(`${api}/console/#/devices/${GW}/good-1`)
  await page.locator('text=None: every payload of this device was accepted.').waitFor({ timeout: UI_TIMEOUT })
  assert.deepEqual(errors, [])
})
