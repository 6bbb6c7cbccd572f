// Runs a scenario file against the real system: a nats-server (JetStream), the cloud aggregator
// (in process), one gateway child (SIGKILL-able, restarted on the same data dir) and the scenario's
// devices with credentials from the gateway's device registry, over a TCP proxy when the scenario
// gives the links a latency. A one-line progress every second, a summary at the end; exit 0 when
// the summary adds up, 1 when it does not, 2 on a usage error.
//   npm run simulate -- simulators/scenarios/outage.yaml [--quick]
import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Cloud } from '../cloud/cloud.ts'
import { parseCloudConfig } from '../cloud/config.ts'
import { accountingProblems, consoleLogin, scrapeMetrics, natsServerMissing, readStream, startNats, type NatsServer, spawnGateway, type ChildGateway, startProxy, type Proxy, withSession } from '../devkit/index.ts'
import { STREAMS } from '../proto/index.ts'
import { createLogger as createCloudLogger } from '../cloud/log.ts'
import { openDb } from '../gateway/store/db.ts'
import { DeviceRegistry } from '../gateway/store/device-registry.ts'
import { loadScenario, quickScenario, ScenarioError, type Scenario, type ScenarioStep } from './scenario.ts'
import { ScenarioDevice } from './scenario-device.ts'
import { isMain } from '../lib/is-main.ts'

const GATEWAY_ID = 'scenario-gw'
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

interface Totals { received: number, duplicates: number, gapsOpen: number }

/** Gateway counters summed over its lives: a power cut resets them. */
const COUNTERS = ['gateway_rejected_total', 'gateway_resends_dropped_total'] as const
type CounterName = typeof COUNTERS[number]

/** The gateway as a child process; kill() is a power cut, start() brings it back on the same data dir and ports. */
class GatewayChild {
  child: ChildProcess | null = null
  mqtt = 0
  http = 0
  private gw: ChildGateway | null = null
  /** Each counter over the lives before the current one, and its last value in this life. */
  private readonly before = new Map<CounterName, number>(COUNTERS.map((n) => [n, 0]))
  private readonly now = new Map<CounterName, number>(COUNTERS.map((n) => [n, 0]))

  constructor (private readonly dataDir: string, private readonly natsUrl: string) {}

  output (): string { return this.gw?.stderr() ?? '' }

  async start (): Promise<void> {
    const deadline = Date.now() + 20000
    for (;;) {
      try { return await this.spawnOnce() } catch (err) {
        // After a power cut the old ports may be held for a moment: retry that case only.
        if (!/EADDRINUSE/.test((err as Error).message) || Date.now() > deadline) throw err
        await sleep(200)
      }
    }
  }

  private async spawnOnce (): Promise<void> {
    // The same ports after a restart, so that devices reconnect to the address they know.
    this.gw = await spawnGateway(this.dataDir, [`gatewayId=${GATEWAY_ID}`, `uplink.servers=${this.natsUrl}`, 'uplink.heartbeatMs=1000'], { mqttPort: this.mqtt, httpPort: this.http })
    this.child = this.gw.child
    this.mqtt = this.gw.ports.mqtt
    this.http = this.gw.ports.http ?? 0
    for (const n of COUNTERS) this.now.set(n, 0)
  }

  /** Reads the counters of this life (each summed over its label sets); false while the gateway is down. */
  async scrapeCounters (): Promise<boolean> {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return false
    const values = await scrapeMetrics(this.http, COUNTERS)
    if (values === null) return false
    for (const n of COUNTERS) this.now.set(n, values.get(n) ?? 0)
    return true
  }

  /** A counter summed over every life of the gateway, as of the last scrape. */
  total (name: CounterName): number { return this.before.get(name)! + this.now.get(name)! }

  /** Events still buffered in the outbox (committed or pending); null while down. */
  async backlog (): Promise<number | null> {
    const v = await scrapeMetrics(this.http, ['gateway_outbox_events', 'gateway_outbox_pending'])
    return v === null ? null : v.get('gateway_outbox_events')! + v.get('gateway_outbox_pending')!
  }

  /** Stops the gateway; `atCut` runs right after a SIGKILL is sent (what the power cut takes with it). */
  async kill (signal: NodeJS.Signals = 'SIGKILL', atCut?: () => void): Promise<void> {
    const c = this.child
    if (!c || c.exitCode !== null || c.signalCode !== null) return
    // The last look at this life's counters: what happens between it and the kill is not seen.
    if (signal === 'SIGKILL') await this.scrapeCounters()
    for (const n of COUNTERS) { this.before.set(n, this.total(n)); this.now.set(n, 0) }
    c.kill(signal)
    if (signal === 'SIGKILL') atCut?.()
    const timer = setTimeout(() => c.kill('SIGKILL'), 10000)
    await this.gw?.exited
    clearTimeout(timer)
  }
}

/** The identity accounting of the good devices' readings against the TELEMETRY stream. */
async function identityProblems (natsUrl: string, devices: ScenarioDevice[]): Promise<{ problems: string[], streamEvents: number }> {
  const acc = await readStream(natsUrl, STREAMS.telemetry.name)
  const acked = new Map(devices.map((d) => [d.id, d.ackedTs]))
  const problems = accountingProblems(acc, GATEWAY_ID, acked, 'ts')
  let streamEvents = 0
  for (const d of devices) {
    const key = `${GATEWAY_ID}/${d.id}`
    streamEvents += acc.events.get(key)?.size ?? 0
    const ackedSet = new Set(d.ackedTs)
    for (const t of acc.times.get(key)?.keys() ?? []) if (!ackedSet.has(t)) problems.push(`${key}: reading ts=${t} is in the stream but was never acknowledged`)
  }
  return { problems, streamEvents }
}

function percentile (sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
}

const fmtS = (ms: number): string => `${(ms / 1000).toFixed(ms % 1000 === 0 ? 0 : 1)}s`

function describe (st: ScenarioStep): string {
  switch (st.do) {
    case 'burst': return `burst every ${st.interval}ms for ${fmtS(st.for)}`
    case 'outage': return `uplink outage (nats-server stopped) for ${fmtS(st.for)}`
    case 'power-cut': return `gateway power cut (SIGKILL), back after ${fmtS(st.for)}`
    case 'reconnect-storm': return `reconnect storm: every device drops its link, all reconnect after ${st.after}ms`
  }
}

export async function runScenario (scenario: Scenario, log: (line: string) => void = console.log): Promise<number> {
  const missing = natsServerMissing()
  if (missing) { log(`simulate: ${missing}`); return 2 }
  const tmp = mkdtempSync(join(tmpdir(), 'scenario-'))
  const gwDir = join(tmp, 'gateway')
  let nats: NatsServer | null = null
  let cloud: Cloud | null = null
  let gateway: GatewayChild | null = null
  let proxy: Proxy | null = null
  const devices: ScenarioDevice[] = []
  try {
    nats = await startNats()
    // The console always requires a login: a throw-away password for this run.
    const password = randomBytes(12).toString('base64url')
    cloud = new Cloud(parseCloudConfig({ logLevel: 'silent', nats: { servers: [nats.url] }, http: { host: '127.0.0.1', port: 0 }, console: { password } }), createCloudLogger('silent'), { defaultMetrics: false })
    const api = `http://127.0.0.1:${(await cloud.start()).http}`
    const apiFetch = withSession(await consoleLogin(api, 'admin', password))

    // Real credentials from the gateway's device registry (the code behind `npm run devices -- add`).
    const good = Array.from({ length: scenario.devices.count }, (_, i) => `dev-${i + 1}`)
    const bad = Array.from({ length: scenario.badDevices?.count ?? 0 }, (_, i) => `bad-${i + 1}`)
    const secrets = new Map<string, string>()
    const db = openDb(gwDir)
    try {
      const registry = new DeviceRegistry(db)
      for (const id of [...good, ...bad]) secrets.set(id, registry.add(id))
    } finally { db.close() }

    gateway = new GatewayChild(gwDir, nats.url)
    await gateway.start()
    if (scenario.linkLatency > 0) {
      // The gateway comes back on the same port after a power cut, so the proxy's target stays valid.
      proxy = await startProxy({ host: '127.0.0.1', port: gateway.mqtt })
      proxy.setLatency(scenario.linkLatency)
    }
    const url = `mqtt://127.0.0.1:${proxy?.port ?? gateway.mqtt}`
    for (const id of good) devices.push(new ScenarioDevice({ url, deviceId: id, secret: secrets.get(id)!, sensors: scenario.devices.sensors, intervalMs: scenario.devices.interval }))
    for (const id of bad) devices.push(new ScenarioDevice({ url, deviceId: id, secret: secrets.get(id)!, sensors: ['temperature'], intervalMs: scenario.badDevices!.interval, bad: scenario.badDevices!.kinds }))
    for (let i = 0; i < devices.length; i += 100) await Promise.all(devices.slice(i, i + 100).map((d) => d.start()))
    const goodDevices = devices.filter((d) => !d.isBad)
    const badDevices = devices.filter((d) => d.isBad)
    log(`scenario ${scenario.name}: ${good.length} devices (${scenario.devices.sensors.join(', ')} every ${scenario.devices.interval}ms)${bad.length ? ` + ${bad.length} bad-payload clients every ${scenario.badDevices!.interval}ms` : ''} for ${fmtS(scenario.duration)}; nats ${nats.url}, gateway mqtt ${url}${proxy ? ` (link latency ${scenario.linkLatency}ms each way, via a proxy to port ${gateway.mqtt})` : ''}, cloud ${api}`)
    for (const st of scenario.timeline) log(`  at ${fmtS(st.at)}: ${describe(st)}`)

    let cloudTotals: Totals = { received: 0, duplicates: 0, gapsOpen: 0 }
    const readCloud = async (): Promise<Totals | null> => {
      try {
        const r = await apiFetch(`${api}/api/accounting?gateway=${GATEWAY_ID}`, { signal: AbortSignal.timeout(3000) })
        if (!r.ok) return null
        cloudTotals = ((await r.json()) as { totals: Totals }).totals
        return cloudTotals
      } catch { return null }
    }
    const sum = (ds: ScenarioDevice[], k: keyof ScenarioDevice['counters']): number => ds.reduce((a, d) => a + d.counters[k], 0)

    // The timeline: each step runs at its time; `active` is shown in the progress line.
    const started = Date.now()
    const active = new Set<string>()
    let faults = 0
    const runStep = async (st: ScenarioStep): Promise<void> => {
      const label = describe(st)
      active.add(label)
      log(`[${fmtS(Date.now() - started).padStart(5)}] step: ${label}`)
      try {
        switch (st.do) {
          case 'burst':
            for (const d of goodDevices) d.setInterval(st.interval)
            await sleep(st.for)
            for (const d of goodDevices) d.setInterval(scenario.devices.interval)
            break
          case 'outage':
            faults++
            await nats!.stop()
            await sleep(st.for)
            await nats!.restart()
            break
          case 'power-cut':
            faults++
            // What is unacknowledged now may already be committed: the device will resend it. The
            // cut also drops what the links hold, PUBACKs already sent included.
            await gateway!.kill('SIGKILL', () => proxy?.cut())
            proxy?.restore()
            await sleep(st.for)
            await gateway!.start()
            break
          case 'reconnect-storm':
            faults++
            for (const d of devices) d.drop(st.after)
            await sleep(st.after)
            break
        }
      } finally { active.delete(label) }
    }
    const steps = scenario.timeline.map((st) => sleep(st.at).then(() => runStep(st)))
    const stepErrors: Error[] = []
    const stepsDone = Promise.allSettled(steps).then((rs) => { for (const r of rs) if (r.status === 'rejected') stepErrors.push(r.reason as Error) })

    const progress = async (): Promise<void> => {
      const up = await gateway!.scrapeCounters()
      void readCloud()
      const t = Date.now() - started
      const connected = devices.filter((d) => d.connected).length
      log(`[${fmtS(Math.floor(t / 1000) * 1000).padStart(5)}] connected ${connected}/${devices.length}  sent ${sum(devices, 'sent')}  acked ${sum(devices, 'acked')}  in-flight ${devices.reduce((a, d) => a + d.inFlight, 0)}  refused ${gateway!.total('gateway_rejected_total')}  resends dropped ${gateway!.total('gateway_resends_dropped_total')}${up ? '' : ' (gateway down)'}  cloud received ${cloudTotals.received}${active.size ? `  | ${[...active].join('; ')}` : ''}`)
    }
    const ticker = setInterval(() => { void progress() }, 1000)
    await sleep(scenario.duration)
    await stepsDone
    clearInterval(ticker)

    // Stop publishing; every publish sent gets its PUBACK (or is counted as failed).
    await Promise.all(devices.map((d) => d.stopPublishing(15000)))
    await Promise.all(devices.map((d) => d.close()))
    const goodSent = sum(goodDevices, 'sent')
    const goodAcked = sum(goodDevices, 'acked')
    const goodFailed = sum(goodDevices, 'failed')
    const badSent = sum(badDevices, 'sent')
    const badAcked = sum(badDevices, 'acked')
    const unackedAtCut = sum(goodDevices, 'unackedAtCut')

    // Let the backlog drain: the outbox empty, then the cloud's count steady for a second.
    const drainStart = Date.now()
    let last = -1
    let steadySince = Date.now()
    for (;;) {
      const backlog = await gateway.backlog()
      const totals = await readCloud()
      if (totals && totals.received !== last) { last = totals.received; steadySince = Date.now() }
      if (backlog === 0 && totals && totals.received >= goodAcked && totals.gapsOpen === 0 && Date.now() - steadySince >= 1000) break
      if (Date.now() - drainStart > scenario.drainTimeout) { log(`drain: gave up after ${fmtS(scenario.drainTimeout)} (gateway backlog ${backlog ?? 'unknown'}, cloud received ${totals?.received ?? 'unknown'})`); break }
      await sleep(200)
    }
    const drainMs = Date.now() - drainStart
    await gateway.scrapeCounters()
    const refused = gateway.total('gateway_rejected_total')
    const resendsDropped = gateway.total('gateway_resends_dropped_total')
    const lat = goodDevices.flatMap((d) => d.latencies).sort((a, b) => a - b)
    const c = cloudTotals
    // Identities, not counts (one lost plus one doubled adds up too): every acknowledged reading of a
    // good device, named by (gateway, device, device ts), is in the stream exactly once; every seq
    // is there once or covered by a gap record; the stream holds nothing that was not acknowledged.
    const identities = await identityProblems(nats.url, goodDevices)

    // The checks.
    const checks: Array<{ ok: boolean, text: string }> = []
    checks.push({ ok: goodFailed === 0 && goodAcked === goodSent, text: `good traffic: every publish acknowledged (sent ${goodSent}, acked ${goodAcked}, failed ${goodFailed})` })
    if (badDevices.length) {
      const powerCut = scenario.timeline.some((s) => s.do === 'power-cut')
      checks.push({ ok: badAcked === badSent && (powerCut ? refused <= badAcked : refused === badAcked), text: `bad payloads: every one quarantined and acknowledged, none applied (sent ${badSent}, acked ${badAcked}, gateway_rejected_total ${refused})` })
    } else {
      checks.push({ ok: refused === 0, text: `nothing refused (gateway_rejected_total ${refused})` })
    }
    // Exact: a resend of a committed reading is dropped at the edge, so nothing is counted twice.
    checks.push({ ok: c.received === goodAcked, text: `cloud received == acknowledged good events (${c.received} == ${goodAcked})` })
    checks.push({ ok: identities.problems.length === 0, text: `identity check: ${goodAcked} acknowledged readings, ${identities.problems.length} problems${identities.problems.length ? ` (${identities.problems.slice(0, 5).join('; ')})` : ''}` })
    checks.push({ ok: c.received === identities.streamEvents, text: `cloud received == distinct (device, seq) in the stream (${c.received} == ${identities.streamEvents})` })
    checks.push({ ok: resendsDropped <= unackedAtCut, text: `resends dropped by the gateway <= publishes unacknowledged when a link closed (${resendsDropped} <= ${unackedAtCut})` })
    checks.push({ ok: c.gapsOpen === 0, text: `no open gaps (${c.gapsOpen})` })
    checks.push({ ok: faults > 0 || c.duplicates === 0, text: `cloud duplicates dropped: ${c.duplicates}${faults > 0 ? ' (allowed: redelivered batches after a fault are dropped by seq, never counted as received)' : ' (none expected without a fault)'}` })
    checks.push({ ok: stepErrors.length === 0, text: `timeline ran${stepErrors.length ? `: ${stepErrors.map((e) => e.message).join('; ')}` : ''}` })
    const ok = checks.every((x) => x.ok)

    log('')
    log(`summary (${scenario.name}): sent ${goodSent + badSent} (good ${goodSent}, bad ${badSent}), acknowledged ${goodAcked + badAcked} (good ${goodAcked}, bad ${badAcked}), refused ${refused} (quarantined), skipped while disconnected ${sum(devices, 'skipped')}, reconnects ${sum(devices, 'connects') - devices.length}`)
    log(`  PUBACK latency (good): p50 ${percentile(lat, 50).toFixed(1)} ms, p99 ${percentile(lat, 99).toFixed(1)} ms, max ${(lat.at(-1) ?? NaN).toFixed(1)} ms over ${lat.length} publishes`)
    log(`  cloud accounted for: received ${c.received}, duplicates ${c.duplicates}, open gaps ${c.gapsOpen} (backlog drained in ${fmtS(drainMs)})`)
    log(`  resends: ${unackedAtCut} publishes were unacknowledged when their link or gateway was cut, and resent by the clients after reconnecting; the gateway had already committed ${resendsDropped} of them and dropped those resends (gateway_resends_dropped_total over all its lives), storing the rest once`)
    log(`  how it is counted: a device's publish counts as sent once, acknowledged when its PUBACK arrives (the event is committed at the edge). A resend of a reading the gateway already committed (same device ts and payload) is acknowledged but not stored again, so the cloud receives exactly the acknowledged events. Cloud duplicates are redeliveries of the same seq, dropped and not counted as received.`)
    for (const x of checks) log(`  ${x.ok ? 'ok  ' : 'FAIL'} ${x.text}`)
    log(ok ? 'result: the summary adds up' : 'result: the summary does NOT add up')
    if (!ok && gateway.output()) log(`gateway log tail:\n${gateway.output().slice(-3000)}`)
    return ok ? 0 : 1
  } finally {
    await Promise.all(devices.map((d) => d.close().catch(() => {})))
    await gateway?.kill('SIGTERM').catch(() => {})
    await proxy?.close().catch(() => {})
    await cloud?.close().catch(() => {})
    await nats?.cleanup().catch(() => {})
    rmSync(tmp, { recursive: true, force: true })
  }
}

async function main (): Promise<number> {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { quick: { type: 'boolean', default: false } } })
  if (positionals.length !== 1) { console.error('usage: run-scenario <scenario.yaml> [--quick]'); return 2 }
  let scenario: Scenario
  try {
    scenario = loadScenario(positionals[0])
  } catch (err) {
    if (err instanceof ScenarioError) { console.error(err.message); return 2 }
    throw err
  }
  if (values.quick) scenario = quickScenario(scenario)
  return runScenario(scenario)
}

if (isMain(import.meta.url)) {
  main().then((code) => process.exit(code), (err) => { console.error('simulate failed:', err); process.exit(1) })
}
