// The one-command demo: a nats-server (JetStream), the cloud's streams, two gateways (child
// processes, real credentials from the device registry) and simulated devices; a live status
// table from the gateways' heartbeats, and a summary at the end. Ctrl-C stops everything.
//   npm run demo [-- --duration 60 --devices 5 --interval-ms 500 --outage-at 20 --outage-for 10 --console-port 8080]
import { spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { consoleLogin, spawnGateway, natsServerMissing, startNats, type NatsServer, withSession } from '../devkit/index.ts'
import { Cloud } from '../cloud/cloud.ts'
import { parseCloudConfig } from '../cloud/config.ts'
import { createLogger as createCloudLogger } from '../cloud/log.ts'
import { provisionStreams } from '../cloud/provision.ts'
import { v1, type GatewayStatusProps } from '../proto/index.ts'
import { SimulatedDevice } from './device.ts'
import type { SensorKind } from './signals.ts'
import { nodeArgsFor, SOURCE_ROOT } from '../lib/node-entry.ts'

const ROOT = SOURCE_ROOT
const DATA = join(ROOT, '.data', 'demo')
const GATEWAYS = ['site-a', 'site-b']
const SENSORS: SensorKind[][] = [['temperature', 'humidity'], ['temperature', 'door'], ['vibration', 'power'], ['humidity'], ['temperature']]

interface RunningGateway { id: string, child: ChildProcess, mqtt: number, http: number, devices: SimulatedDevice[] }

async function main (): Promise<number> {
  const { values } = parseArgs({ options: {
    duration: { type: 'string' }, devices: { type: 'string', default: '5' }, 'interval-ms': { type: 'string', default: '500' },
    'outage-at': { type: 'string' }, 'outage-for': { type: 'string', default: '10' }, 'console-port': { type: 'string', default: '8080' },
  } })
  const missing = natsServerMissing()
  if (missing) { console.error(`demo: ${missing}`); return 2 }
  rmSync(DATA, { recursive: true, force: true })
  mkdirSync(DATA, { recursive: true })

  const nats = await startNats({ storeDir: join(DATA, 'nats') })
  const gateways: RunningGateway[] = []
  let nc: NatsConnection | null = null
  let cloud: Cloud | null = null
  let stopping = false
  const stop = async (): Promise<void> => {
    if (stopping) return
    stopping = true
    for (const g of gateways) await Promise.all(g.devices.map((d) => d.close().catch(() => {})))
    await Promise.all(gateways.map((g) => new Promise<void>((resolve) => {
      if (g.child.exitCode !== null) return resolve()
      g.child.once('exit', () => resolve())
      g.child.kill('SIGTERM')
    })))
    await nc?.drain().catch(() => {})
    await cloud?.close().catch(() => {})
    await nats.stop()
  }
  // Until everything is up, a signal just stops what has started.
  const early = (): void => { void stop().then(() => process.exit(130)) }
  process.once('SIGINT', early)
  process.once('SIGTERM', early)

  nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 250 })
  await provisionStreams(nc)
  const status = new Map<string, GatewayStatusProps>()
  const seen = new Set<string>()
  let cloudEvents = 0
  nc.subscribe(`iot.*.status`, { callback: (_e, m) => { const s = v1.GatewayStatus.decode(m.data); status.set(s.gatewayId, s) } })
  nc.subscribe(`iot.*.telemetry`, { callback: (_e, m) => {
    const b = v1.ReplicationBatch.decode(m.data)
    for (const ev of b.events) { const k = `${b.gatewayId}/${ev.deviceId}/${ev.seq}`; if (!seen.has(k)) { seen.add(k); cloudEvents++ } }
  } })

  // The cloud tier: aggregator (fleet views in NATS KV) and its JSON API.
  // The console requires a login: a one-time password for this demo run, printed below.
  const password = randomBytes(9).toString('base64url')
  cloud = new Cloud(parseCloudConfig({ logLevel: 'warn', nats: { servers: [nats.url] }, http: { host: '127.0.0.1', port: Number(values['console-port']) }, offlineTimeoutMs: 6000, console: { user: 'operator', password } }), createCloudLogger('warn'), { defaultMetrics: false })
  const cloudPorts = await cloud.start()
  const api = `http://127.0.0.1:${cloudPorts.http}`
  const apiFetch = withSession(await consoleLogin(api, 'operator', password))
  const perGateway = Number(values.devices)
  const intervalMs = Number(values['interval-ms'])
  try {
    for (const id of GATEWAYS) gateways.push(await startGateway(id, nats, perGateway, intervalMs, (g) => gateways.push(g)))
  } catch (err) {
    // Never leave a gateway or nats-server behind.
    await stop()
    throw err
  }
  console.log(`demo: nats ${nats.url} (JetStream, monitoring ${nats.monitorUrl})`)
  for (const g of gateways) console.log(`demo: gateway ${g.id}: mqtt://127.0.0.1:${g.mqtt}  metrics http://127.0.0.1:${g.http}/metrics  ${g.devices.length} devices`)
  console.log(`demo: console ${api}/console/  login: operator / ${password}`)
  console.log(`demo: cloud JSON API ${api}/api/fleet (same login), metrics ${api}/metrics`)
  console.log('demo: the table below is read from the gateways\' heartbeats. Ctrl-C stops everything.')

  const started = Date.now()
  const outageAt = values['outage-at'] ? Number(values['outage-at']) * 1000 : null
  const outageFor = Number(values['outage-for']) * 1000
  let outage: 'before' | 'during' | 'after' = 'before'
  let applied: { received: number, duplicates: number, gapsOpen: number } | null = null
  const readAccounting = async (): Promise<void> => {
    try {
      const r = await (await apiFetch(`${api}/api/accounting`)).json() as { totals: { received: number, duplicates: number, gapsOpen: number } }
      applied = r.totals
    } catch { /* the API is gone: keep the last reading */ }
  }
  // Devices stop first; then the cloud gets a few seconds to apply what the gateways still hold.
  const settle = async (): Promise<void> => {
    for (const g of gateways) await Promise.all(g.devices.map((d) => d.close().catch(() => {})))
    const acked = gateways.flatMap((g) => g.devices).reduce((a, d) => a + d.counters.acked, 0)
    const deadline = Date.now() + 5000
    do {
      await readAccounting()
      if (applied && applied.received >= acked) return
      await new Promise((resolve) => setTimeout(resolve, 200))
    } while (Date.now() < deadline)
  }
  const summaryAndExit = (code: number): void => {
    const sent = gateways.flatMap((g) => g.devices).reduce((a, d) => a + d.counters.sent, 0)
    const acked = gateways.flatMap((g) => g.devices).reduce((a, d) => a + d.counters.acked, 0)
    console.log(`\nsummary: devices sent ${sent}, gateways acknowledged ${acked}, cloud received ${cloudEvents} unique events${acked > cloudEvents ? ` (${acked - cloudEvents} still buffered at the edge when stopped)` : ''}`)
    if (applied) console.log(`cloud accounting: applied ${applied.received}, duplicates dropped ${applied.duplicates}, open gaps ${applied.gapsOpen}`)
    process.exit(code)
  }
  process.off('SIGINT', early)
  process.off('SIGTERM', early)
  process.once('SIGINT', () => { console.log('\nstopping…'); void settle().then(stop).then(() => summaryAndExit(0)) })
  process.once('SIGTERM', () => { void stop().then(() => summaryAndExit(0)) })
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 2000))
    if (stopping) return 0
    const t = Date.now() - started
    if (outageAt !== null && outage === 'before' && t >= outageAt) { outage = 'during'; console.log(`demo: uplink outage: stopping nats-server for ${outageFor / 1000}s`); await nats.stop() }
    if (outage === 'during' && t >= (outageAt ?? 0) + outageFor) { outage = 'after'; console.log('demo: uplink back: restarting nats-server'); await nats.restart() }
    printTable(gateways, status, cloudEvents, t)
    if (values.duration && t >= Number(values.duration) * 1000) {
      await settle()
      await stop()
      summaryAndExit(0)
      return 0
    }
  }
}

function printTable (gateways: RunningGateway[], status: Map<string, GatewayStatusProps>, cloudEvents: number, t: number): void {
  const rows = gateways.map((g) => {
    const s = status.get(g.id)
    const acked = g.devices.reduce((a, d) => a + d.counters.acked, 0)
    const age = s ? Math.max(0, Math.round((Date.now() - Number(s.tsMs)) / 1000)) : null
    const link = age === null ? 'no heartbeat' : `${s!.linkState} (hb ${age}s)`
    return `${g.id.padEnd(8)} ${link.padEnd(14)} devices ${String(s?.connectedDevices ?? '-').padStart(3)}  acked ${String(acked).padStart(7)}  backlog ${String(s?.backlogEvents ?? '-').padStart(6)}  oldest unsent ${((Number(s?.oldestUnsentAgeMs ?? 0)) / 1000).toFixed(1).padStart(5)}s  ingest ${(s?.ingestEventsPerSec ?? 0).toFixed(0).padStart(5)}/s  uplink ${(s?.uplinkEventsPerSec ?? 0).toFixed(0).padStart(6)}/s`
  })
  console.log(`[${(t / 1000).toFixed(0).padStart(4)}s] cloud received ${cloudEvents} events\n  ${rows.join('\n  ')}`)
}

async function startGateway (id: string, nats: NatsServer, devices: number, intervalMs: number, started: (g: RunningGateway) => void): Promise<RunningGateway> {
  const dataDir = join(DATA, id)
  mkdirSync(dataDir, { recursive: true })
  // Devices get real credentials from the registry, exactly as an operator would add them.
  const deviceIds = Array.from({ length: devices }, (_, i) => `${id}-dev-${i + 1}`)
  const secrets = new Map<string, string>()
  for (const deviceId of deviceIds) {
    const r = spawnSync(process.execPath, [...nodeArgsFor('gateway/cli.ts'), 'add', deviceId, '--data-dir', dataDir, '--json'], { cwd: ROOT, encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`cannot register ${deviceId}: ${r.stderr}`)
    secrets.set(deviceId, (JSON.parse(r.stdout) as { secret: string }).secret)
  }
  const { child, ports } = await spawnGateway(dataDir, [`gatewayId=${id}`, `uplink.servers=${nats.url}`, 'uplink.heartbeatMs=2000'], { output: 'inherit' })
  const g: RunningGateway = { id, child, mqtt: ports.mqtt, http: ports.http ?? 0, devices: [] }
  g.devices = deviceIds.map((deviceId, i) => new SimulatedDevice({ url: `mqtt://127.0.0.1:${ports.mqtt}`, deviceId, secret: secrets.get(deviceId), sensors: SENSORS[i % SENSORS.length], intervalMs }))
  try {
    await Promise.all(g.devices.map((d) => d.start()))
  } catch (err) {
    started(g) // so that stop() takes it down
    throw err
  }
  return g
}

main().then((code) => { if (code) process.exit(code) }, (err) => { console.error('demo failed:', err); process.exit(1) })
