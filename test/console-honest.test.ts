// An honest console (#15), in a real Chromium against a real cloud, nats-server and gateway: the
// login offers the configured user; a gateway whose heartbeats stop reads "offline since …" on
// every page; and when the API itself fails, the live badge turns red and the old data is marked
// old (a gateway it last saw online turns "offline since …" once its heartbeat is overdue), until
// the API is back.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { Page } from 'playwright-core'
import { Cloud } from '../cloud/cloud.ts'
import { parseCloudConfig } from '../cloud/config.ts'
import { createLogger } from '../cloud/log.ts'
import { connectDevice, startGateway, startNats, startProxy } from '../devkit/index.ts'
import { deferrer } from './harness/cloud.ts'
import { launchChromium, shot } from './harness/browser.ts'

const GW = 'gw-honest'
const USER = 'night-shift'
const PASSWORD = 'a console password for the night shift'
const UI_TIMEOUT = 20000
const OFFLINE_TIMEOUT_MS = 2500

test('console: pre-filled user, "offline since" for a silent gateway, and a red live badge while the API is down', { timeout: 180000 }, async (t) => {
  const defer = deferrer(t)
  const nats = await startNats()
  defer(() => nats.cleanup())
  // The gateway's uplink goes through a proxy: cutting it silences its heartbeats, nothing else.
  const proxy = await startProxy({ host: '127.0.0.1', port: nats.port })
  defer(() => proxy.close())
  const config = (port: number): ReturnType<typeof parseCloudConfig> => parseCloudConfig({
    logLevel: 'silent', nats: { servers: [nats.url] }, http: { host: '127.0.0.1', port }, offlineTimeoutMs: OFFLINE_TIMEOUT_MS, console: { user: USER, password: PASSWORD },
  })
  const silent = createLogger(process.env.TEST_LOG ?? 'silent')
  let cloud = new Cloud(config(0), silent, { defaultMetrics: false })
  const http = (await cloud.start()).http!
  defer(() => cloud.close())
  const base = `http://127.0.0.1:${http}`
  const gw = await startGateway({ gatewayId: GW, mqtt: { allowAnonymous: true }, uplink: { servers: [`nats://127.0.0.1:${proxy.port}`], heartbeatMs: 300, reconnectMinMs: 50, reconnectMaxMs: 200 } })
  defer(() => gw.close())

  const browser = await launchChromium()
  defer(() => browser.close())
  const page = await (await browser.newContext({ viewport: { width: 1440, height: 900 } })).newPage()
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))
  const row = page.locator(`#fleet-table tr[data-gw="${GW}"]`)
  const statusText = async (p: Page, selector: string): Promise<string> => (await p.locator(selector).textContent({ timeout: UI_TIMEOUT })) ?? ''

  await t.test('login: the form offers the configured user; typing the password is enough', async () => {
    await page.goto(`${base}/console/`)
    await page.waitForURL(/\/login/)
    assert.equal(await page.inputValue('input[name=user]'), USER)
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('name')), 'password', 'the cursor waits in the password field')
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press('Enter')
    await page.waitForURL(/\/console\//, { timeout: UI_TIMEOUT })
    await shot(page, 'honest-01-after-login')
  })

  await t.test('a gateway whose heartbeats stop reads "offline since …" on the fleet, its page, its devices\' pages and the rules list, never "online"', async () => {
    const device = await connectDevice(gw.ports.mqtt, { clientId: 'probe-h' })
    defer(() => device.end(true))
    await device.publishAsync('devices/probe-h/telemetry', JSON.stringify({ ts: Date.now(), temperature: 4.5 }), { qos: 1 })
    await row.locator('[data-field="online"] .chip.ok', { hasText: 'online' }).waitFor({ timeout: UI_TIMEOUT })
    await page.locator('#live[data-state="live"]').waitFor({ timeout: UI_TIMEOUT })
    await page.goto(`${base}/console/#/devices/${GW}/probe-h`)
    await page.locator('[data-reading="temperature"][data-value="4.5"]').waitFor({ timeout: UI_TIMEOUT })
    assert.equal(await page.locator('[data-gateway-status] .chip').count(), 0, 'no gateway warning while it is online')
    await page.goto(`${base}/console/#/fleet`)
    proxy.cut()
    await row.locator('[data-field="online"] .chip.bad', { hasText: /^offline since \S+/ }).waitFor({ timeout: UI_TIMEOUT })
    assert.doesNotMatch(await statusText(page, `#fleet-table tr[data-gw="${GW}"] [data-field="online"]`), /\bonline\b/)
    assert.match(await statusText(page, `#fleet-table tr[data-gw="${GW}"] .reasons`), /offline since/)
    assert.equal(await page.locator('[data-tile="online"] .value').textContent(), '0 / 1')
    // The cloud itself is fine meanwhile: the badge says so.
    assert.equal(await page.locator('#live').getAttribute('data-state'), 'live')
    await shot(page, 'honest-02-fleet-offline')
    await page.click(`#fleet-table tr[data-gw="${GW}"] a`)
    await page.locator('.page-head .chip.bad', { hasText: /^offline since \S+/ }).waitFor({ timeout: UI_TIMEOUT })
    assert.doesNotMatch(await statusText(page, '.page-head'), /\bonline\b/)
    await page.locator('[data-tile="heartbeat"].bad', { hasText: 'offline since' }).waitFor({ timeout: UI_TIMEOUT })
    await shot(page, 'honest-03-gateway-offline')
    await page.goto(`${base}/console/#/devices/${GW}/probe-h`)
    await page.locator('[data-gateway-status] .chip.bad', { hasText: /^offline since \S+/ }).waitFor({ timeout: UI_TIMEOUT })
    await page.goto(`${base}/console/#/rules/${GW}`)
    await page.locator(`tr[data-gw="${GW}"] td`, { hasText: 'offline since' }).first().waitFor({ timeout: UI_TIMEOUT })
    await page.goto(`${base}/console/#/gateways/${GW}`)
    proxy.restore()
    await page.locator('.page-head .chip.ok', { hasText: 'online' }).waitFor({ timeout: UI_TIMEOUT })
  })

  await t.test('the API fails: the live badge turns red, old data is marked old and an overdue gateway turns offline; back when the API is', async () => {
    await page.goto(`${base}/console/#/fleet`)
    await row.locator('[data-field="online"] .chip.ok').waitFor({ timeout: UI_TIMEOUT })
    await page.locator('#live[data-state="live"].ok').waitFor({ timeout: UI_TIMEOUT })
    // The cloud process stops (API and live stream); the gateway keeps sending heartbeats to NATS.
    await cloud.close()
    await page.locator('#live[data-state="api-down"].down').waitFor({ timeout: UI_TIMEOUT })
    await page.locator('#stale:not([hidden])', { hasText: 'Cannot reach the API' }).waitFor({ timeout: UI_TIMEOUT })
    // Nobody can tell whether its heartbeats still arrive: once overdue, the last known one decides.
    await row.locator('[data-field="online"] .chip.bad', { hasText: /^offline since \S+/ }).waitFor({ timeout: UI_TIMEOUT })
    await shot(page, 'honest-04-api-down')
    // A new cloud process on the same port: same credentials, so the browser's session still holds.
    cloud = new Cloud(config(http), silent, { defaultMetrics: false })
    await cloud.start()
    await page.locator('#live[data-state="live"].ok').waitFor({ timeout: 45000 })
    await page.locator('#stale[hidden]').waitFor({ state: 'attached', timeout: UI_TIMEOUT })
    await row.locator('[data-field="online"] .chip.ok', { hasText: 'online' }).waitFor({ timeout: UI_TIMEOUT })
    await shot(page, 'honest-05-api-back')
  })

  assert.deepEqual(errors, [], 'no script errors in the page')
})
