// Console (#6) in a real Chromium (playwright-core) against a real cloud, nats-server and gateway fed
// by simulated devices: login, fleet, live values, an uplink outage (backlog grows, then drains),
// rules and commands when the cloud offers them. Saves a screenshot of each page to
// test-artifacts/console/. Needs /usr/bin/chromium (Debian package `chromium`, installed by .ci/run).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { Browser, Page } from 'playwright-core'
import { Cloud } from '../cloud/cloud.ts'
import { parseCloudConfig } from '../cloud/config.ts'
import { createLogger } from '../cloud/log.ts'
import { SimulatedDevice } from '../simulators/device.ts'
import { connectDevice, startGateway, startNats, waitFor, startProxy } from '../devkit/index.ts'
import { loadDevice } from './harness/load.ts'
import { deferrer } from './harness/cloud.ts'
import { launchChromium, shot } from './harness/browser.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }
const GW = 'gw-console'
const USER = 'operator'
const PASSWORD = 'correct horse battery staple'
const UI_TIMEOUT = 20000
const silent = createLogger(process.env.TEST_LOG ?? 'silent')


/** The number shown in a tile (e.g. data-tile="backlog"), or NaN. */
async function tileNumber (page: Page, tile: string): Promise<number> {
  const text = await page.locator(`[data-tile="${tile}"] .value`).textContent({ timeout: 2000 })
  return Number((text ?? '').replace(/[^\d.-]/g, ''))
}

test('console: login, live fleet, gateway and device pages, backlog through an uplink outage, rules and commands', { timeout: 180000 }, async (t) => {
  const defer = deferrer(t)
  const nats = await startNats()
  defer(() => nats.cleanup())
  const proxy = await startProxy({ host: '127.0.0.1', port: nats.port })
  defer(() => proxy.close())
  const cloud = new Cloud(parseCloudConfig({
    logLevel: 'silent', nats: { servers: [nats.url] }, http: { host: '127.0.0.1', port: 0 }, offlineTimeoutMs: 2500,
    console: { user: USER, password: PASSWORD },
  }), silent, { defaultMetrics: false })
  const { http } = await cloud.start()
  defer(() => cloud.close())
  const base = `http://127.0.0.1:${http}`
  // The drain cap (small batches, 300 events/s) makes the backlog take seconds to drain, long enough to watch.
  const gw = await startGateway({ gatewayId: GW, mqtt: ANON, uplink: { servers: [`nats://127.0.0.1:${proxy.port}`], heartbeatMs: 300, reconnectMinMs: 50, reconnectMaxMs: 200, drainEventsPerSec: 300, batchMaxEvents: 100 } })
  defer(() => gw.close())
  const mqttUrl = `mqtt://127.0.0.1:${gw.ports.mqtt}`
  const sims = [
    new SimulatedDevice({ url: mqttUrl, deviceId: 'room-1', sensors: ['temperature', 'humidity'], intervalMs: 500 }),
    new SimulatedDevice({ url: mqttUrl, deviceId: 'cooler-1', sensors: ['power'], intervalMs: 1000 }),
  ]
  for (const s of sims) { await s.start(); defer(() => s.close()) }
  // A device whose values the test chooses; it speaks MQTT 5, so its publishes can carry user properties.
  const probe = await connectDevice(gw.ports.mqtt, { clientId: 'probe-1', protocolVersion: 5 })
  defer(() => probe.end(true))
  const publish = (doc: Record<string, number>, userProperties?: Record<string, string>): Promise<unknown> => probe.publishAsync('devices/probe-1/telemetry', JSON.stringify({ ts: Date.now(), ...doc }), { qos: 1, properties: userProperties ? { userProperties } : undefined })
  await publish({ temperature: 20, humidity: 40 })

  // The API is behind the login; operations endpoints are not.
  assert.equal((await fetch(`${base}/api/fleet`)).status, 401)
  assert.equal((await fetch(`${base}/healthz`)).status, 200)
  assert.equal((await fetch(`${base}/metrics`)).status, 200)

  const browser: Browser = await launchChromium()
  defer(() => browser.close())
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } })
  const page = await context.newPage()
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))

  await t.test('login: a wrong password is refused, the right one opens the console with an HttpOnly SameSite=Strict cookie', async () => {
    await page.goto(`${base}/console/`)
    await page.waitForURL(/\/login/)
    await page.fill('input[name=user]', USER)
    await page.fill('input[name=password]', 'wrong')
    await page.click('button[type=submit]')
    await page.locator('#login-error').waitFor({ state: 'visible', timeout: UI_TIMEOUT })
    await page.fill('input[name=password]', PASSWORD)
    await shot(page, '01-login')
    await page.click('button[type=submit]')
    await page.waitForURL(/\/console\//, { timeout: UI_TIMEOUT })
    const cookie = (await context.cookies()).find((c) => c.name === 'iot_console')
    assert.ok(cookie, 'session cookie set')
    assert.equal(cookie.httpOnly, true)
    assert.equal(cookie.sameSite, 'Strict')
    assert.equal(await page.evaluate(() => document.cookie.includes('iot_console')), false, 'scripts cannot read the session')
    const metrics = await (await fetch(`${base}/metrics`)).text()
    assert.match(metrics, /cloud_console_logins_total\{result="failed"\} 1/)
  })

  await t.test('fleet: the gateway appears online with its numbers', async () => {
    const row = page.locator(`#fleet-table tr[data-gw="${GW}"]`)
    await row.locator('[data-field="online"] .chip.ok').waitFor({ timeout: UI_TIMEOUT })
    await shot(page, '02-fleet')
  })

  // Marks the document: if the page reloaded, the mark is gone.
  await page.evaluate(() => { (window as unknown as { mark: number }).mark = 42 })
  const notReloaded = async (): Promise<void> => assert.equal(await page.evaluate(() => (window as unknown as { mark?: number }).mark), 42, 'the page did not reload')

  await t.test('gateway page: its devices appear', async () => {
    await page.click(`#fleet-table tr[data-gw="${GW}"] a`)
    for (const d of ['room-1', 'cooler-1', 'probe-1']) await page.locator(`#devices-table tr[data-device="${d}"]`).waitFor({ timeout: UI_TIMEOUT })
    await shot(page, '03-gateway')
  })

  await t.test('device page: a new value shows up live, without reloading', async () => {
    await page.click('#devices-table tr[data-device="probe-1"] a')
    await page.locator('[data-reading="temperature"][data-value="20"]').waitFor({ timeout: UI_TIMEOUT })
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
    await publish({ temperature: 23.25, humidity: 41 }, { traceparent })
    await page.locator('[data-reading="temperature"][data-value="23.25"]').waitFor({ timeout: UI_TIMEOUT })
    // The MQTT 5 user property travelled with the event through the uplink and the views.
    assert.equal(await page.locator('[data-property="traceparent"]').textContent({ timeout: UI_TIMEOUT }), `traceparent=${traceparent}`)
    await notReloaded()
    await page.locator('[data-chart="temperature"]').waitFor({ timeout: UI_TIMEOUT })
    await page.locator('#history-res[data-res="1m"]').waitFor({ timeout: UI_TIMEOUT })
    await page.click('[data-range="15m"]')
    await page.locator('[data-range="15m"].active').waitFor()
    // A short range shows the raw events, says so, and offers them for download.
    await page.locator('#history-res[data-res="raw"]').waitFor({ timeout: UI_TIMEOUT })
    await page.locator('[data-chart="temperature"]').waitFor({ timeout: UI_TIMEOUT })
    const csvHref = await page.locator('[data-export="csv"]').getAttribute('href')
    assert.ok(csvHref?.includes('format=csv'), String(csvHref))
    const csv = await page.evaluate(async (href) => await (await fetch(href!)).text(), csvHref)
    assert.match(csv.split('\n')[0], /^seq,eventTsMs,eventTime,ingestTsMs,.*temperature/)
    assert.ok(csv.split('\n').some((l) => l.split(',').includes('23.25')), csv)
    await page.click('[data-range="90d"]')
    await page.locator('#history-res[data-res="1h"]').waitFor({ timeout: UI_TIMEOUT })
    await page.click('[data-range="15m"]')
    await page.locator('#history-res[data-res="raw"]').waitFor({ timeout: UI_TIMEOUT })
    await shot(page, '04-device')
  })

  await t.test('uplink outage: the gateway turns offline, its backlog shows once the link is back and drains to 0', async () => {
    await page.goto(`${base}/console/#/fleet`)
    await page.locator(`#fleet-table tr[data-gw="${GW}"] [data-field="online"] .chip.ok`).waitFor({ timeout: UI_TIMEOUT })
    proxy.cut()
    // A burst while the cloud is unreachable: every event goes to the outbox.
    const burst = await connectDevice(gw.ports.mqtt, { clientId: 'burst-1' })
    const acked = new Set<number>()
    const load = loadDevice(burst, 'burst-1', { n: 0 }, acked, { window: 50 })
    await waitFor(() => acked.size >= 3000, 'the burst to be accepted at the edge', 30000)
    load.stop()
    burst.end(true)
    const row = page.locator(`#fleet-table tr[data-gw="${GW}"]`)
    await row.locator('[data-field="online"] .chip.bad').waitFor({ timeout: UI_TIMEOUT })
    assert.equal(await row.getAttribute('data-severity'), '2', 'offline gateway highlighted as a problem')
    assert.equal(await page.locator('#fleet-table tbody tr').first().getAttribute('data-gw'), GW, 'problems first')
    await shot(page, '05-fleet-outage')
    await page.click(`#fleet-table tr[data-gw="${GW}"] a`)
    await page.locator('[data-tile="backlog"]').waitFor({ timeout: UI_TIMEOUT })
    proxy.restore()
    // The first heartbeats after the outage carry the backlog; the drain cap keeps it visible for seconds.
    let peak = 0
    await waitFor(async () => { peak = Math.max(peak, await tileNumber(page, 'backlog')); return peak >= 1000 }, 'the backlog to show on the gateway page', UI_TIMEOUT, 100)
    await shot(page, '06-gateway-draining')
    await waitFor(async () => await tileNumber(page, 'backlog') === 0, 'the backlog to drain to 0', 60000, 200)
    await page.locator('[data-tile="heartbeat"]:not(.bad)').waitFor({ timeout: UI_TIMEOUT })
    await notReloaded()
    await shot(page, '07-gateway-drained')
  })

  await t.test('rules: push a rule set, see the gateway run it, and the resulting decision and alert', async () => {
    await page.goto(`${base}/console/#/rules/${GW}`)
    await page.locator('#rules-text').waitFor({ timeout: UI_TIMEOUT })
    await page.fill('#rules-text', [
      'version: console-1',
      'rules:',
      '  - id: probe-hot',
      '    devices: [probe-1]',
      '    when: { reading: temperature, above: 30 }',
      '    then:',
      '      - command: { device: cooler-1, name: cooler, args: { on: true } }',
      '      - raiseAlert: { id: probe-hot, severity: critical, message: "probe above 30 C" }',
      '',
    ].join('\n'))
    await page.click('#rules-push')
    await page.locator(`tr[data-gw="${GW}"] [data-running="console-1"]`).waitFor({ timeout: UI_TIMEOUT })
    await page.locator('#rules-message', { hasText: 'runs console-1' }).waitFor({ timeout: UI_TIMEOUT })
    await shot(page, '09-rules')
    await page.goto(`${base}/console/#/devices/${GW}/probe-1`)
    await page.locator('[data-reading="temperature"]').waitFor({ timeout: UI_TIMEOUT })
    await publish({ temperature: 35 })
    await page.locator('tr[data-decision="probe-hot"]').waitFor({ timeout: UI_TIMEOUT })
    await page.locator('tr[data-alert="probe-hot"]').waitFor({ timeout: UI_TIMEOUT })
    await shot(page, '10-device-decision')
  })

  await t.test('alerts: the raised alert is in the feed and can be acknowledged', async () => {
    await page.goto(`${base}/console/#/alerts`)
    const row = page.locator(`#alerts-table tr[data-alert="probe-hot"][data-gw="${GW}"]`)
    await row.locator('[data-field="state"] .chip', { hasText: 'active' }).waitFor({ timeout: UI_TIMEOUT })
    await shot(page, '08-alerts')
    await row.locator('button', { hasText: 'Acknowledge' }).click()
    await row.locator('[data-field="state"] .chip', { hasText: 'acknowledged' }).waitFor({ timeout: UI_TIMEOUT })
    await shot(page, '08-alerts-acknowledged')
  })

  await t.test('commands: send a command to a device and see it acknowledged', async () => {
    await page.goto(`${base}/console/#/commands/${GW}/cooler-1`)
    await page.locator('#cmd-device option[value="cooler-1"]').waitFor({ state: 'attached', timeout: UI_TIMEOUT })
    await page.selectOption('#cmd-device', 'cooler-1')
    await page.fill('#cmd-name', 'cooler')
    await page.fill('#cmd-args', '{"on": false}')
    await page.click('#command-form button[type=submit]')
    await page.locator('#cmd-message').filter({ hasText: /queued|not available|Refused/ }).waitFor({ timeout: UI_TIMEOUT })
    const text = await page.locator('#cmd-message').textContent()
    const id = (text ?? '').match(/Command (\S+) queued/)?.[1]
    assert.ok(id, `a command id in "${text}"`)
    await page.locator(`#commands-table tr[data-command="${id}"] [data-field="status"] .chip`, { hasText: 'acknowledged' }).waitFor({ timeout: 30000 })
    await shot(page, '11-commands')
  })

  await t.test('replicas: this cloud\'s aggregator is listed live with the partitions it holds', async () => {
    await page.goto(`${base}/console/#/replicas`)
    const id = cloud.aggregator!.replicaId
    const row = page.locator(`#replicas-table tr[data-replica="${id}"]`)
    await row.locator('.chip', { hasText: 'live' }).waitFor({ timeout: UI_TIMEOUT })
    // A lone replica holds every partition (8 mapped and the unmapped one, which this server's traffic goes to).
    assert.equal(await row.locator('[data-field="partitions"]').textContent(), cloud.aggregator!.partitions().owned.join(' '))
    assert.equal(cloud.aggregator!.partitions().owned.length, 9)
    assert.equal(await page.locator('#leases-table tbody tr').count(), 9)
    await shot(page, '11b-replicas')
  })

  await t.test('tablet: the fleet reflows to a portrait tablet', async () => {
    const tablet = await context.newPage()
    await tablet.setViewportSize({ width: 768, height: 1024 })
    await tablet.goto(`${base}/console/#/fleet`)
    await tablet.locator(`#fleet-table tr[data-gw="${GW}"]`).waitFor({ timeout: UI_TIMEOUT })
    const overflow = await tablet.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth)
    assert.ok(overflow <= 1, `the page itself does not scroll sideways (${overflow}px); wide tables scroll in their box`)
    await shot(tablet, '12-fleet-tablet')
    await tablet.close()
  })

  await t.test('logout ends the session', async () => {
    await page.goto(`${base}/console/#/fleet`)
    await page.click('.session button[type=submit]')
    await page.waitForURL(/\/login/, { timeout: UI_TIMEOUT })
    const r = await page.evaluate(async () => (await fetch('/api/fleet')).status)
    assert.equal(r, 401)
  })

  assert.deepEqual(errors, [], 'no script errors in the page')
})
