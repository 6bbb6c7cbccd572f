// The one-command demo: a nats-server (JetStream), the cloud (aggregator, API and console), two
// gateways (child processes, real credentials from the device registry) reaching NATS through a TCP
// proxy, and simulated devices, among them a cold room that the demo's rule set keeps cool. A live
// table reads each gateway's own /readyz; one uplink outage (the proxy cut) shows the backlog grow
// and drain while the console stays up. At the end: a summary and an accounting by identity of
// every acknowledged reading. Ctrl-C stops everything.
//   npm run demo [-- --duration 60 --devices 5 --interval-ms 500 --outage-at 20 --outage-for 15 --console-port 8080 --data-dir .data/demo]
import { randomBytes } from 'node:crypto'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { accountingProblems, consoleLogin, mergeAccounts, natsServerMissing, readStream, scrapeMetrics, startNats, startProxy, withSession, type Proxy } from '../devkit/index.ts'
import { Cloud } from '../cloud/cloud.ts'
import { parseCloudConfig } from '../cloud/config.ts'
import { createLogger as createCloudLogger } from '../cloud/log.ts'
import { provisionStreams } from '../cloud/provision.ts'
import { v1 } from '../proto/index.ts'
import { DEMO_RULES, DEMO_RULES_VERSION, startSite, stopGateway, type DemoGateway } from './demo-fleet.ts'
import { DemoTable, readEdge, type CloudGateway } from './demo-table.ts'
import { SOURCE_ROOT } from '../lib/node-entry.ts'

const ROOT = SOURCE_ROOT
const SITES = ['site-a', 'site-b']
const TICK_MS = 2000
// After the devices stop, how long the demo waits for the gateways to drain and the cloud to apply.
const SETTLE_MS = 30_000

interface Totals { received: number, duplicates: number, gapsOpen: number }

async function main (): Promise<number> {
  const { values } = parseArgs({ options: {
    duration: { type: 'string' }, devices: { type: 'string', default: '5' }, 'interval-ms': { type: 'string', default: '500' },
    'outage-at': { type: 'string', default: '20' }, 'outage-for': { type: 'string', default: '15' }, 'console-port': { type: 'string', default: '8080' },
    'data-dir': { type: 'string', default: join(ROOT, '.data', 'demo') },
  } })
  const missing = natsServerMissing()
  if (missing) { console.error(`demo: ${missing}`); return 2 }
  const dataDir = resolve(values['data-dir'])
  rmSync(dataDir, { recursive: true, force: true })
  mkdirSync(dataDir, { recursive: true })

  const nats = await startNats({ storeDir: join(dataDir, 'nats') })
  const gateways: DemoGateway[] = []
  let proxy: Proxy | null = null
  let nc: NatsConnection | null = null
  let cloud: Cloud | null = null
  let stopping = false
  const stop = async (): Promise<void> => {
    if (stopping) return
    stopping = true
    for (const g of gateways) await Promise.all(g.devices.map((d) => d.close().catch(() => {})))
    await Promise.all(gateways.map(stopGateway))
    await proxy?.close()
    await nc?.drain().catch(() => {})
    await cloud?.close().catch(() => {})
    await nats.stop()
  }
  // Until everything is up, a signal just stops what has started.
  const early = (): void => { void stop().then(() => process.exit(130)) }
  process.once('SIGINT', early)
  process.once('SIGTERM', early)

  let cloudEvents = 0
  let api = ''
  let apiFetch: ReturnType<typeof withSession> = fetch
  try {
    // The gateways' uplinks go through this proxy: the outage cuts it, the cloud's own NATS link stays.
    proxy = await startProxy({ host: '127.0.0.1', port: nats.port })
    nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 250 })
    await provisionStreams(nc)
    const seen = new Set<string>()
    nc.subscribe('iot.*.telemetry', { callback: (_e, m) => {
      const b = v1.ReplicationBatch.decode(m.data)
      for (const ev of b.events) { const k = `${b.gatewayId}/${ev.deviceId}/${ev.seq}`; if (!seen.has(k)) { seen.add(k); cloudEvents++ } }
    } })
    // The cloud tier: aggregator (fleet views in NATS KV), API and console, behind a one-time password.
    const password = randomBytes(9).toString('base64url')
    cloud = new Cloud(parseCloudConfig({ logLevel: 'warn', nats: { servers: [nats.url] }, http: { host: '127.0.0.1', port: Number(values['console-port']) }, offlineTimeoutMs: 6000, console: { user: 'operator', password } }), createCloudLogger('warn'), { defaultMetrics: false })
    api = `http://127.0.0.1:${(await cloud.start()).http}`
    apiFetch = withSession(await consoleLogin(api, 'operator', password))
    // The rule set goes down the product's path: stored in the cloud, picked up by each gateway.
    for (const id of SITES) {
      const r = await apiFetch(`${api}/api/rules/${id}`, { method: 'PUT', headers: { 'content-type': 'application/yaml' }, body: DEMO_RULES })
      if (!r.ok) throw new Error(`cannot push the demo rules to ${id}: HTTP ${r.status} ${await r.text()}`)
    }
    const site = { dataRoot: dataDir, uplink: `nats://127.0.0.1:${proxy.port}`, devices: Number(values.devices), intervalMs: Number(values['interval-ms']), recordAcks: true }
    for (const id of SITES) await startSite(id, site, (g) => gateways.push(g))
    console.log(`demo: nats ${nats.url} (JetStream, monitoring ${nats.monitorUrl}); gateways reach it through a proxy on port ${proxy.port}`)
    for (const g of gateways) console.log(`demo: gateway ${g.id}: mqtt://127.0.0.1:${g.mqtt}  http://127.0.0.1:${g.http}/readyz  ${g.devices.length} devices (${g.devices.length > 0 ? 'a cold room with its cooler, ' : ''}rules ${DEMO_RULES_VERSION})`)
    console.log(`demo: console ${api}/console/  login: operator / ${password}`)
    console.log(`demo: cloud JSON API ${api}/api/fleet (same login), metrics ${api}/metrics`)
  } catch (err) {
    // Never leave a gateway or nats-server behind.
    await stop()
    throw err
  }

  const outageAt = Number(values['outage-at']) * 1000
  const outageFor = Number(values['outage-for']) * 1000
  const durationMs = values.duration ? Number(values.duration) * 1000 : null
  console.log(`demo: the table reads each gateway's own /readyz; "cloud:" is what the console shows. ${outageFor > 0 ? `At ${outageAt / 1000}s the gateways' uplinks are cut for ${outageFor / 1000}s (--outage-for 0: none). ` : ''}Ctrl-C stops everything.`)
  const link = proxy!
  let outage: 'before' | 'during' | 'after' = outageFor > 0 ? 'before' : 'after'
  const endOutage = (): void => { if (outage === 'during') { outage = 'after'; link.restore(); console.log('demo: uplinks restored: the backlogs drain') } }

  const readTotals = async (): Promise<{ totals: Totals, control: number } | null> => {
    try {
      const r = await (await apiFetch(`${api}/api/accounting`)).json() as { totals: Totals, control?: Array<{ received: number }> }
      return { totals: r.totals, control: (r.control ?? []).reduce((a, c) => a + c.received, 0) }
    } catch { return null }
  }
  const readCloudFleet = async (): Promise<Map<string, CloudGateway> | null> => {
    try {
      const r = await apiFetch(`${api}/api/fleet`, { signal: AbortSignal.timeout(2000) })
      if (!r.ok) return null
      return new Map(((await r.json()) as { gateways: CloudGateway[] }).gateways.map((g) => [g.gatewayId, g]))
    } catch { return null }
  }

  // Devices stop; the gateways drain (the link is restored if cut) and the cloud applies; then the
  // accounting by identity, while nats-server still runs; then everything stops.
  const finish = async (): Promise<number> => {
    endOutage()
    for (const g of gateways) await Promise.all(g.devices.map((d) => d.close().catch(() => {})))
    const devices = gateways.flatMap((g) => g.devices)
    const sent = devices.reduce((a, d) => a + d.counters.sent, 0)
    const acked = devices.reduce((a, d) => a + d.counters.acked, 0)
    const obeyed = devices.reduce((a, d) => a + d.counters.commands, 0)
    let applied: Awaited<ReturnType<typeof readTotals>> = null
    const deadline = Date.now() + SETTLE_MS
    for (;;) {
      applied = await readTotals() ?? applied
      const backlog = (await Promise.all(gateways.map(readEdge))).reduce((a, e) => a + (e?.backlogEvents ?? 1), 0)
      if ((applied && applied.totals.received >= acked && backlog === 0) || Date.now() > deadline) break
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    const decisions = (await Promise.all(gateways.map((g) => scrapeMetrics(g.http, ['gateway_decisions_total'])))).reduce((a, m) => a + (m?.get('gateway_decisions_total') ?? 0), 0)
    const problems = await checkByIdentity(nats.url, gateways, dataDir)
    await stop()
    console.log(`\nsummary: devices sent ${sent}, gateways acknowledged ${acked}, cloud received ${cloudEvents} unique events${acked > cloudEvents ? ` (${acked - cloudEvents} still buffered at the edge when stopped)` : ''}`)
    if (applied) console.log(`cloud accounting: applied ${applied.totals.received}, duplicates dropped ${applied.totals.duplicates}, open gaps ${applied.totals.gapsOpen}`)
    console.log(`control: rules ${DEMO_RULES_VERSION}: ${decisions} decisions at the edge, ${obeyed} commands obeyed by devices, ${applied?.control ?? 0} control events (decisions, alerts, command results) in the cloud`)
    if (problems.length === 0) console.log(`accounting by identity: exact: each of the ${acked} acknowledged readings is in the streams once, no seq missing or doubled`)
    else console.log(`accounting by identity: ${problems.length} problems:\n  ${problems.slice(0, 20).join('\n  ')}`)
    return problems.length === 0 ? 0 : 1
  }

  process.off('SIGINT', early)
  process.off('SIGTERM', early)
  let finishing: Promise<number> | null = null
  const onSignal = (): void => { console.log('\nstopping…'); finishing ??= finish(); void finishing.then((code) => process.exit(code)) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const table = new DemoTable()
  const started = Date.now()
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, TICK_MS))
    if (finishing) return finishing
    const t = Date.now() - started
    if (outage === 'before' && t >= outageAt) { outage = 'during'; link.cut(); console.log(`demo: uplink outage: the gateways' links to NATS are cut for ${outageFor / 1000}s (devices keep publishing; the console stays up)`) }
    if (outage === 'during' && t >= outageAt + outageFor) endOutage()
    const [edge, fleet] = await Promise.all([Promise.all(gateways.map(readEdge)), readCloudFleet()])
    if (finishing) return finishing
    console.log(table.render(t, outage === 'during' ? 'OUTAGE: uplinks cut' : 'uplinks connected', gateways, edge, fleet, cloudEvents))
    if (durationMs !== null && t >= durationMs) {
      finishing = finish()
      return finishing
    }
  }
}

/**
 * Every acknowledged reading of every device, by its event time, in the TELEMETRY stream exactly
 * once (gap records, in EVENTS, explain any seq shed): the problems as sentences, empty when exact.
 * The identities are also written to <data-dir>/acked.json, so that anyone can check them again.
 */
async function checkByIdentity (url: string, gateways: DemoGateway[], dataDir: string): Promise<string[]> {
  const acked: Record<string, Record<string, number[]>> = {}
  for (const g of gateways) acked[g.id] = Object.fromEntries(g.devices.map((d) => [d.deviceId, d.ackedTs]))
  writeFileSync(join(dataDir, 'acked.json'), JSON.stringify({ by: 'ts', gateways: acked }))
  try {
    const acc = mergeAccounts(await readStream(url, 'TELEMETRY'), await readStream(url, 'EVENTS'))
    return gateways.flatMap((g) => accountingProblems(acc, g.id, new Map(Object.entries(acked[g.id])), 'ts'))
  } catch (err) {
    return [`cannot read the streams: ${(err as Error).message}`]
  }
}

main().then((code) => process.exit(code), (err) => { console.error('demo failed:', err); process.exit(1) })
