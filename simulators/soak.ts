// The chaos soak of promise 2 (nothing lost, nothing doubled):
//   npm run soak -- --minutes N [--seed S] [--gateways G] [--devices D] [--interval MS] [--replicas R]
// G gateways (child processes) with D simulated devices each publishing QoS 1 readings, the cloud on
// a 3-node NATS cluster with R aggregator replicas (child processes, default 2), and random faults from a
// seeded schedule (soak-schedule.ts): kill -9 of a gateway, a NATS node, a replica; uplink cut,
// slowed, black-holed (a proxy in front of every node, per gateway); a disk budget reached; reconnect
// storms; bad payloads. A progress line every 10 s; after the faults, a settle period (links
// restored, backlog drained), then the identity accounting (soak-account.ts) and a summary. Exit 0
// when the accounting is exact, 1 otherwise (with the seed that reproduces it), 2 on a usage error.
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { hashPassword } from '../cloud/http/password-hash.ts'
import { consoleLogin, freePorts, mergeAccounts, natsServerMissing, readStream, startNatsCluster, startProxy, type NatsCluster, type Proxy } from '../devkit/index.ts'
import { openDb } from '../gateway/store/db.ts'
import { STREAMS, partitionMappingsConfig } from '../proto/index.ts'
import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { soakAccounting } from './soak-account.ts'
import { BadClient, SoakDevice } from './soak-device.ts'
import { FaultRunner } from './soak-faults.ts'
import { GatewayProc, killAllTracked, ReplicaProc } from './soak-procs.ts'
import { buildSchedule, describeFault, FAULT_KINDS } from './soak-schedule.ts'
import { isMain } from '../lib/is-main.ts'

const USAGE = 'usage: npm run soak -- --minutes N [--seed S] [--gateways G] [--devices D] [--interval MS] [--replicas R]'
// The gateway whose outbox has a small disk budget (it sheds when its uplink is cut for long).
const BUDGET_GATEWAY = 0
const BUDGET_BYTES = 48 * 1024
const SETTLE_TIMEOUT_MS = 5 * 60_000
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

interface SoakOptions { minutes: number, seed: number, gateways: number, devices: number, intervalMs: number, replicas: number }

/** The API of whichever replica answers, logged in (again) as needed. */
class CloudApi {
  private readonly cookies = new Map<string, string>()
  constructor (private readonly replicas: ReplicaProc[], private readonly password: string) {}

  async get (path: string): Promise<unknown> {
    let last: unknown = null
    for (const r of this.replicas) {
      if (!r.running) continue
      try {
        let cookie = this.cookies.get(r.api) ?? await consoleLogin(r.api, 'admin', this.password)
        this.cookies.set(r.api, cookie)
        let res = await fetch(`${r.api}${path}`, { headers: { cookie }, signal: AbortSignal.timeout(10000) })
        if (res.status === 401) {
          cookie = await consoleLogin(r.api, 'admin', this.password)
          this.cookies.set(r.api, cookie)
          res = await fetch(`${r.api}${path}`, { headers: { cookie }, signal: AbortSignal.timeout(10000) })
        }
        if (res.ok) return await res.json()
        last = new Error(`GET ${path} on ${r.name}: HTTP ${res.status} ${await res.text()}`)
      } catch (err) { last = err }
    }
    throw last ?? new Error(`GET ${path}: no replica is running`)
  }
}

export async function runSoak (o: SoakOptions, log: (line: string) => void = console.log): Promise<number> {
  const missing = natsServerMissing()
  if (missing) { log(`soak: ${missing}`); return 2 }
  const t0 = Date.now()
  const stamp = (): string => { const s = Math.floor((Date.now() - t0) / 1000); return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}` }
  const say = (line: string): void => log(`[${stamp()}] ${line}`)
  const reproduce = `npm run soak -- --minutes ${o.minutes} --seed ${o.seed} --gateways ${o.gateways} --devices ${o.devices} --interval ${o.intervalMs} --replicas ${o.replicas}`
  const tmp = mkdtempSync(join(tmpdir(), 'soak-'))
  let cluster: NatsCluster | null = null
  const proxies: Proxy[] = []
  const gateways: GatewayProc[] = []
  const replicas: ReplicaProc[] = []
  const devices: SoakDevice[][] = []
  const bad: BadClient[] = []
  let ok = false
  let ticker: NodeJS.Timeout | null = null
  let runner: FaultRunner | null = null
  try {
    say(`soak: seed ${o.seed}, ${o.minutes} min of faults, ${o.gateways} gateways x ${o.devices} devices every ${o.intervalMs} ms; data in ${tmp}`)
    // The servers partition the gateways (README "Scaling out"): P as the replicas' default.
    cluster = await startNatsCluster({ noAdvertise: true, config: partitionMappingsConfig(8) })
    say(`NATS cluster up: ${cluster.urls.join(' ')}`)
    const password = randomBytes(12).toString('base64url')
    const passwordHash = await hashPassword(password)
    const ports = await freePorts(o.replicas)
    for (let i = 0; i < o.replicas; i++) {
      const r = new ReplicaProc(`r${i + 1}`, ports[i], cluster.urls, passwordHash)
      replicas.push(r)
      await r.start()
    }
    const api = new CloudApi(replicas, password)
    say(`aggregator replicas up: ${replicas.map((r) => `${r.name} ${r.api}`).join(', ')}`)

    const uplinks: Proxy[][] = []
    for (let g = 0; g < o.gateways; g++) {
      // One proxy per node: the gateway knows only these (the nodes do not advertise themselves).
      const ps = await Promise.all(cluster.nodes.map((n) => startProxy({ host: '127.0.0.1', port: n.port })))
      proxies.push(...ps)
      uplinks.push(ps)
      const dir = join(tmp, `gw-${g + 1}`)
      mkdirSync(dir)
      const sets = [`uplink.servers=${ps.map((p) => `nats://127.0.0.1:${p.port}`).join(',')}`, 'uplink.heartbeatMs=1000',
        'uplink.reconnectMinMs=100', 'uplink.reconnectMaxMs=2000', 'uplink.pingIntervalMs=2000', 'uplink.maxPingOut=2',
        'uplink.publishTimeoutMs=3000', 'uplink.liveLingerMs=200', 'uplink.channelVerifyMs=2000', 'mqtt.allowAnonymous=true',
        ...(g === BUDGET_GATEWAY ? [`outbox.budgetBytes=${BUDGET_BYTES}`] : [])]
      const gw = new GatewayProc(`gw-${g + 1}`, dir, sets)
      gateways.push(gw)
      await gw.start()
      const url = `mqtt://127.0.0.1:${gw.mqtt}`
      const ds = Array.from({ length: o.devices }, (_, j) => new SoakDevice(url, `sensor-${j + 1}`, o.intervalMs, Math.floor((j / o.devices) * o.intervalMs)))
      await Promise.all(ds.map((d) => d.connect()))
      devices.push(ds)
      const b = new BadClient(url, 'bad-1')
      await b.connect()
      bad.push(b)
    }
    say(`gateways up: ${gateways.map((g) => `${g.gatewayId} mqtt ${g.mqtt}`).join(', ')} (${gateways[BUDGET_GATEWAY].gatewayId}: disk budget ${BUDGET_BYTES} bytes)`)

    const faultMs = Math.round(o.minutes * 60_000)
    const schedule = buildSchedule({ seed: o.seed, firstMs: 5000, endMs: faultMs, gateways: o.gateways, natsNodes: cluster.nodes.length, replicas: o.replicas, budgetGateway: BUDGET_GATEWAY })
    say(`schedule: ${schedule.length} faults over ${o.minutes} min`)
    runner = new FaultRunner({ gateways, uplinks, natsNodes: cluster.nodes, replicas, devices, bad }, say)
    const crashes: string[] = []
    const all = devices.flat()
    const sum = (k: 'sent' | 'acked' | 'failed'): number => all.reduce((a, d) => a + d.counters[k], 0)
    let applied = 0
    const progress = async (): Promise<void> => {
      try { applied = ((await api.get('/api/accounting')) as { totals: { received: number } }).totals.received } catch { /* no replica answered now */ }
      // A component down that no fault holds crashed by itself: a finding, restarted.
      for (const c of [...gateways, ...replicas]) {
        const name = c instanceof GatewayProc ? c.gatewayId : c.name
        if (!c.running && !runner!.expectedDown.has(name)) {
          crashes.push(`${name} exited by itself: ${c.output().slice(-1500)}`)
          say(`${name} exited by itself; restarting it`)
          runner!.expectedDown.add(name)
          c.start().catch((err) => crashes.push(`${name} failed to restart: ${(err as Error).message}`)).finally(() => runner!.expectedDown.delete(name))
        }
      }
      say(`faults ${runner!.total}${runner!.active.size ? ` (now: ${[...runner!.active].map((a) => a.split(' ')[0]).join(' ')})` : ''} | sent ${sum('sent')} acked ${sum('acked')} in flight ${sum('sent') - sum('acked') - sum('failed')} | cloud applied ${applied}`)
    }
    for (const d of all) d.start()
    runner.start(schedule)
    ticker = setInterval(() => { void progress() }, 10_000)
    await sleep(faultMs)
    say('faults over: waiting for those under way to end, then settling (links restored, backlog drained)')
    await runner.stop()
    for (const p of proxies) { p.restore(); p.setLatency(0); p.setBandwidth(null) }
    // Everything up again (a fault undoes itself; this is the check).
    for (const n of cluster.nodes) if (n.pid === null) await n.restart()
    for (const c of [...gateways, ...replicas]) if (!c.running) await c.start()
    for (const d of all) d.stop()
    await Promise.all([...all, ...bad].map((d) => d.settle(60_000)))
    const sent = sum('sent')
    const acked = sum('acked')
    say(`devices stopped: sent ${sent}, acked ${acked}, failed ${sum('failed')}, still in flight ${sent - acked - sum('failed')}`)

    // The backlog drains: every outbox empty, every partition's consumer with nothing pending or
    // unacknowledged, and the cloud's count steady (an open gap then stays open: the verdict says so).
    const admin = await connect({ servers: cluster.urls })
    const jsm = await jetstreamManager(admin)
    const consumerIdle = async (): Promise<boolean> => {
      try {
        for (const stream of [STREAMS.telemetry.name, STREAMS.events.name]) {
          for await (const ci of jsm.consumers.list(stream)) {
            if (ci.name.startsWith('aggregator-') && (ci.num_pending > 0 || ci.num_ack_pending > 0)) return false
          }
        }
        return true
      } catch { return false }
    }
    const settleStart = Date.now()
    let last = -1
    let steadySince = Date.now()
    for (;;) {
      const backlogs = await Promise.all(gateways.map((g) => g.backlog()))
      let totals: { received: number, gapsOpen: number } | null = null
      try { totals = ((await api.get('/api/accounting')) as { totals: { received: number, gapsOpen: number } }).totals } catch { /* retry */ }
      if (totals && totals.received !== last) { last = totals.received; steadySince = Date.now() }
      if (backlogs.every((b) => b === 0) && totals && Date.now() - steadySince >= 5000 && (totals.gapsOpen === 0 || (await consumerIdle() && Date.now() - steadySince >= 30_000))) break
      if (Date.now() - settleStart > SETTLE_TIMEOUT_MS) { say(`settle: gave up after ${SETTLE_TIMEOUT_MS / 1000} s (backlogs ${backlogs.join(',')}, cloud ${JSON.stringify(totals)})`); break }
      await sleep(1000)
    }
    await admin.close()
    clearInterval(ticker)
    ticker = null
    say(`settled in ${((Date.now() - settleStart) / 1000).toFixed(0)} s; reading the stream`)

    // Readings go to TELEMETRY, gap records (priority lane) to EVENTS.
    const acc = mergeAccounts(await readStream(cluster.urls[0], STREAMS.telemetry.name), await readStream(cluster.urls[0], STREAMS.events.name))
    const records = gateways.map((g, i) => ({ gatewayId: g.gatewayId, devices: devices[i], badDeviceIds: ['bad-1'], mayShed: i === BUDGET_GATEWAY }))
    const { problems, streamProblems, cloudProblems, totals } = await soakAccounting(acc, records, (p) => api.get(p), { fromMs: t0, toMs: Date.now() })
    // Quarantine: every bad payload acknowledged is in a dead-letter table (read once the gateways stopped).
    for (const g of gateways) await g.stop()
    let quarantined = 0
    for (const g of gateways) {
      const db = openDb(g.dataDir)
      try { quarantined += (db.prepare("SELECT count(*) AS c FROM dead_letters WHERE device_id = 'bad-1'").get() as { c: number }).c } finally { db.close() }
    }
    const badAcked = bad.reduce((a, b) => a + b.counters.acked, 0)
    if (quarantined < badAcked || quarantined > runner.badSent) problems.push(`bad payloads: ${runner.badSent} sent, ${badAcked} acknowledged, ${quarantined} in the dead-letter tables`)
    problems.push(...crashes, ...runner.errors)

    log('')
    log(`soak summary (seed ${o.seed}, ${((Date.now() - t0) / 60_000).toFixed(1)} min in all, ${o.minutes} min of faults)`)
    log(`  faults injected: ${runner.total}`)
    for (const k of FAULT_KINDS) log(`    ${k.padEnd(18)} ${runner.counts.get(k)}`)
    log(`  readings: sent ${sent}, acknowledged ${totals.acked}, in the stream ${totals.inStream} (distinct seqs), applied by the cloud ${totals.applied}`)
    log(`  shed (acknowledged, explained by gap records): ${totals.shed} in ${totals.gapRecords} gap records; stored without a PUBACK seen: ${totals.unackedStored}; redeliveries dropped by the cloud: ${totals.cloudDuplicates}`)
    log(`  bad payloads: sent ${runner.badSent}, acknowledged ${badAcked}, quarantined ${quarantined}; none may reach the stream or the views`)
    log(`  lives: ${gateways.map((g) => `${g.gatewayId} ${g.lives}`).join(', ')}; ${replicas.map((r) => `${r.name} ${r.lives}`).join(', ')}`)
    const failedStarts = replicas.flatMap((r) => r.failedStarts.map((m) => `${r.name}: ${m}`))
    if (failedStarts.length) log(`  replica starts that failed and were retried (as a supervisor would): ${failedStarts.length}; first: ${failedStarts[0]}`)
    ok = problems.length === 0
    log(`  stream: ${streamProblems.length === 0 ? 'exact: every acknowledged reading is in the stream exactly once, or shed with its gap record' : `${streamProblems.length} problems`}`)
    log(`  views: ${cloudProblems.length === 0 ? 'exact: every reading of the stream applied exactly once (accounting and 1-minute history of every device)' : `${cloudProblems.length} problems`}`)
    const other = problems.length - streamProblems.length - cloudProblems.length
    if (other > 0) log(`  other: ${other} problems (quarantine, crashes, faults that failed)`)
    if (ok) {
      log('  accounting: EXACT')
    } else {
      log(`  accounting: ${problems.length} PROBLEMS`)
      for (const p of problems.slice(0, 40)) log(`    - ${p}`)
      log(`  reproduce: ${reproduce}`)
      for (const c of [...gateways, ...replicas]) log(`--- ${c instanceof GatewayProc ? c.gatewayId : c.name} output (tail) ---\n${c.output().slice(-2000)}`)
    }
    return ok ? 0 : 1
  } catch (err) {
    log(`soak failed: ${(err as Error).stack ?? String(err)}`)
    log(`reproduce: ${reproduce}`)
    if (runner) for (const k of FAULT_KINDS) log(`    ${k.padEnd(18)} ${runner.counts.get(k)}`)
    return 1
  } finally {
    if (ticker) clearInterval(ticker)
    await runner?.stop().catch(() => {})
    await Promise.all([...devices.flat(), ...bad].map((d) => d.close()))
    for (const g of gateways) await g.stop().catch(() => {})
    for (const r of replicas) await r.stop().catch(() => {})
    for (const p of proxies) await p.close().catch(() => {})
    await cluster?.cleanup().catch(() => {})
    killAllTracked()
    if (ok) rmSync(tmp, { recursive: true, force: true })
    else log(`data kept in ${tmp}`)
  }
}

function parseOptions (argv: string[]): SoakOptions | string {
  let values
  try {
    values = parseArgs({ args: argv, options: { minutes: { type: 'string' }, seed: { type: 'string' }, gateways: { type: 'string' }, devices: { type: 'string' }, interval: { type: 'string' }, replicas: { type: 'string' }, help: { type: 'boolean' } } }).values
  } catch (err) { return (err as Error).message }
  if (values.help) return ''
  const num = (v: string | undefined, dflt: number): number => v === undefined ? dflt : Number(v)
  const o: SoakOptions = {
    minutes: num(values.minutes, NaN),
    seed: num(values.seed, Date.now() % 1_000_000),
    gateways: num(values.gateways, 3),
    devices: num(values.devices, 6),
    intervalMs: num(values.interval, 250),
    replicas: num(values.replicas, 2),
  }
  if (!(o.minutes > 0)) return '--minutes must be a number > 0'
  if (!Number.isInteger(o.seed) || o.seed < 0) return '--seed must be a whole number >= 0'
  if (!Number.isInteger(o.gateways) || o.gateways < 1 || o.gateways > 8) return '--gateways must be 1..8'
  if (!Number.isInteger(o.devices) || o.devices < 1 || o.devices > 200) return '--devices must be 1..200'
  if (!Number.isInteger(o.intervalMs) || o.intervalMs < 10) return '--interval must be a whole number of ms >= 10'
  if (!Number.isInteger(o.replicas) || o.replicas < 1 || o.replicas > 3) return '--replicas must be 1..3'
  return o
}

if (isMain(import.meta.url)) {
  const o = parseOptions(process.argv.slice(2))
  if (typeof o === 'string') {
    if (o) console.error(o)
    console.error(USAGE)
    process.exit(o ? 2 : 0)
  }
  // Never leave a child behind: on SIGINT/SIGTERM, and when this process exits whatever the reason.
  process.once('exit', killAllTracked)
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { console.error(`soak: ${sig}: stopping every process it started`); killAllTracked(); process.exit(130) })
  runSoak(o).then((code) => process.exit(code), (err) => { console.error('soak failed:', err); process.exit(1) })
}
