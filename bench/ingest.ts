// Durable ingest benchmark: QoS 1 publishes acknowledged per second, and PUBACK latency, for the
// gateway as deployed (the example rule set loaded, the uplink live to a real nats-server) and bare
// (no rules, no uplink; durability full and normal, MQTT 3.1.1 and 5) against its peers — bare aedes
// 2 and 1.2, Mosquitto and nats-server's MQTT listener — at 1 and 8 publishers, same load client, same
// settings, same run. Every target is a fresh process on a fresh data directory. After each gateway
// run every PUBACK the client saw must be accounted for (accepted means durable): a committed row,
// or (deployed) a row already replicated and acknowledged by JetStream; after each nats-server run
// the JetStream message count is checked the same way (QoS 1 is durable there too). The gateway's
// GC pauses inside the measured interval are traced from its process (gc-trace.ts).
import { formatGc, type GcStats } from './gc-trace.ts'
import { EXAMPLE_RULES, exampleRuleDevices, runGatewayTarget, type GatewayTarget } from './ingest-gateway.ts'
import { runLoad, type LoadOptions, type LoadResult } from './load-client.ts'
import { AEDES_PEER_NAMES, startBareAedes } from './peers/aedes-bare.ts'
import type { PeerBroker } from './peers/external.ts'
import { MOSQUITTO, mosquittoConfig, startMosquitto } from './peers/mosquitto.ts'
import { NATS_MQTT, NATS_SINK, natsMqttConfig, startNatsMqtt, type NatsMqttPeer } from './peers/nats-mqtt.ts'
import type { BenchOptions, BenchReport } from './bench-types.ts'

/** Publisher counts measured; quick mode keeps only the 8-publisher case (the one the targets are read at). */
const PUBLISHER_COUNTS = [1, 8]
const QUICK_PUBLISHER_COUNTS = [8]
const AEDES = AEDES_PEER_NAMES.aedes
const AEDES_V1 = AEDES_PEER_NAMES['aedes-v1']
/** The peers, in table order; each gateway row gets a ratio against every one of them. */
const PEERS = [AEDES, AEDES_V1, MOSQUITTO, NATS_MQTT] as const
type PeerName = typeof PEERS[number]
/** DESIGN.md "Targets", for the deployed row: >= 0.9x bare aedes and >= 1.0x nats-server MQTT (8 publishers), >= 0.85x bare aedes with one. */
const TARGET_RATIOS: Partial<Record<PeerName, number>> = { [AEDES]: 0.9, [NATS_MQTT]: 1.0 }
const TARGET_RATIO_ONE_PUBLISHER: Partial<Record<PeerName, number>> = { [AEDES]: 0.85 }
const DEPLOYED = 'gateway (deployed)'
/** Busy CPU outside the target and the load client above which a row is flagged as skewed. */
const OTHER_CPU_WARN_PCT = 15
/** A single-threaded process at this share of a core is taken to be the bottleneck. */
const SATURATED_PCT = 90

type Target = { name: PeerName, durability: null, protocolVersion: 4 } | GatewayTarget
const TARGETS: Target[] = [
  ...PEERS.map((name) => ({ name, durability: null, protocolVersion: 4 as const })),
  // The product as an operator runs it: the headline row, the one the ratios are quoted for.
  { name: DEPLOYED, durability: 'full', protocolVersion: 4, deployed: true },
  // Bare: no rules, no uplink; what the broker + outbox alone cost.
  { name: 'gateway (bare, full)', durability: 'full', protocolVersion: 4, deployed: false },
  // The same with MQTT 5 publishers: the cost of the v5 path (properties, reason codes).
  { name: 'gateway (bare, full, MQTT 5)', durability: 'full', protocolVersion: 5, deployed: false },
  { name: 'gateway (bare, normal)', durability: 'normal', protocolVersion: 4, deployed: false },
]

export interface IngestRun {
  target: string
  publishers: number
  load: LoadResult
  /** Events accounted for after the run (see countedAs), or messages in JetStream (nats-server). */
  outboxRows: number | null
  countedAs: string
  countCheck: 'ok' | 'failed' | 'n/a'
  /** GC pauses of the gateway inside the measured interval (null for peers). */
  gc: GcStats | null
  /** What the target wrote to stderr (the gateway logs at warn), trimmed. */
  stderr: string
}

// Children still running; killed by PID if the bench itself dies, so none outlives it.
const live = new Set<number>()
process.on('exit', () => { for (const pid of live) { try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ } } })

/** Runs the ingest benchmark and returns its settings, results, ratios and table. */
export async function ingest (opts: BenchOptions): Promise<BenchReport> {
  const settings = {
    mode: opts.quick ? 'quick' : 'full',
    publisherCounts: opts.quick ? QUICK_PUBLISHER_COUNTS : PUBLISHER_COUNTS,
    windowPerPublisher: 100,
    // Quick: 5 runs (one per target) in about 13 s with start-up, so that the whole quick suite fits in a minute.
    warmupMs: opts.quick ? 500 : 3000,
    durationMs: opts.quick ? 1200 : 15000,
    drainTimeoutMs: 5000,
    qos: 1,
    subscribers: 0,
    gatewaySets: ['gatewayId=bench-ingest', 'mqtt.allowAnonymous=true', 'mqtt.ratePerDevice=1000000', 'mqtt.burstPerDevice=1000000', 'http.port=null'],
    deployed: {
      rules: EXAMPLE_RULES,
      // The load's publishers take these ids in order (the rest keep bench ids); with ~100-byte
      // readings carrying temperature, the temperature rules evaluate every reading (coldroom-cooling,
      // coldroom-drift, freezer-warm); the door and vibration rules see no reading of theirs.
      deviceIds: exampleRuleDevices(),
      uplink: 'a fresh nats-server with JetStream on 127.0.0.1 (ephemeral ports, temporary store), streams provisioned by cloud/provision.ts; gateway uplink defaults; http on (for /readyz)',
    },
    peerConfigs: {
      [AEDES]: 'aedes 2 (the gateway\'s, with its patch), default settings, in-memory persistence, no auth hooks (bench/peers/aedes-bare.ts)',
      [AEDES_V1]: 'aedes 1.2.0 (before the MQTT 5 move), same settings',
      [MOSQUITTO]: mosquittoConfig(0).replace('listener 0', 'listener <free port>'),
      [NATS_MQTT]: natsMqttConfig(0, 0, '<temp dir>/store').replace('port: 0', 'port: <free port>').replace('127.0.0.1:0', '127.0.0.1:<free port>'),
      natsDurableSink: `${JSON.stringify(NATS_SINK)}: an offline persistent QoS 1 session, so nats-server stores each telemetry publish in JetStream before its PUBACK (with no matching QoS 1 subscription it stores nothing)`,
    },
  }
  const runs: IngestRun[] = []
  for (const publishers of settings.publisherCounts) {
    for (const target of TARGETS) {
      const load: Omit<LoadOptions, 'port'> = {
        publishers,
        window: settings.windowPerPublisher,
        warmupMs: settings.warmupMs,
        durationMs: settings.durationMs,
        drainTimeoutMs: settings.drainTimeoutMs,
        clientIdPrefix: `bench-${publishers}p`,
        protocolVersion: target.protocolVersion,
      }
      process.stderr.write(`ingest: ${target.name}, ${publishers} publisher(s)...\n`)
      if (target.durability === null) {
        runs.push(await runPeer(target.name, load, publishers))
        continue
      }
      const g = await runGatewayTarget(target, load, settings.gatewaySets)
      runs.push({ target: target.name, publishers, load: g.load, outboxRows: g.counted, countedAs: g.countedAs, countCheck: g.counted >= g.load.totalAcked ? 'ok' : 'failed', gc: g.gc, stderr: g.stderr })
    }
  }
  return report(settings, runs)
}

async function runPeer (name: PeerName, load: Omit<LoadOptions, 'port'>, publishers: number): Promise<IngestRun> {
  const lifetimeMs = load.warmupMs + load.durationMs + load.drainTimeoutMs + 120000
  const peer: PeerBroker = name === AEDES || name === AEDES_V1
    ? await startBareAedes(lifetimeMs, name === AEDES ? 'aedes' : 'aedes-v1')
    : name === MOSQUITTO ? await startMosquitto(lifetimeMs) : await startNatsMqtt(lifetimeMs)
  live.add(peer.pid)
  try {
    // nats-server: messages already in JetStream (session state) before the load.
    const before = name === NATS_MQTT ? await (peer as NatsMqttPeer).storedMessages() : null
    const result = await runLoad({ ...load, port: peer.port, targetPid: peer.pid })
    if (name === NATS_MQTT) {
      const after = await (peer as NatsMqttPeer).storedMessages()
      const stored = after === null || before === null ? null : after - before
      const countCheck = stored === null ? 'n/a' : stored >= result.totalAcked ? 'ok' : 'failed'
      return { target: name, publishers, load: result, outboxRows: stored, countedAs: 'messages in JetStream', countCheck, gc: null, stderr: '' }
    }
    return { target: name, publishers, load: result, outboxRows: null, countedAs: '', countCheck: 'n/a', gc: null, stderr: '' }
  } finally {
    await peer.stop()
    live.delete(peer.pid)
  }
}

function report (settings: Record<string, unknown>, runs: IngestRun[]): BenchReport {
  // One entry per gateway row and peer: gateway ÷ peer at the same publisher count, as plain numbers.
  const ratios: Array<{ target: string, peer: string, publishers: number, eventsPerSec: number, p50: number, p99: number, targetRatio: number | null, meetsTarget: boolean | null }> = []
  const rows: string[][] = []
  const failures: string[] = []
  const notes: string[] = [
    'Publisher-only load for every target (no subscribers): the gateway has none on telemetry, so neither does any peer.',
    `ratio = gateway events/s ÷ peer events/s at the same publisher count (p99 ratio: gateway ÷ peer, lower is better). The ratios are quoted for "${DEPLOYED}" (${EXAMPLE_RULES} loaded, uplink live to nats-server); DESIGN targets for it: >= 0.9x bare aedes and >= 1.0x nats-server mqtt with 8 publishers, >= 0.85x bare aedes with one. The bare rows (no rules, no uplink) show what rules and uplink cost; no target is read on them.`,
    'Count check: bare rows count the outbox rows while the gateway is up; the deployed row adds the events the gateway saw JetStream acknowledge (replicated rows are deleted), from its /readyz once the uplink has settled: it trusts the gateway\'s ack accounting and does not read the stream back (bench drain does).',
    'gc = the gateway\'s GC pauses that started inside the measured interval (count / p99 ms / max ms), traced in its process by a preloaded PerformanceObserver (bench/gc-trace.ts).',
    'Peers: aedes in memory and Mosquitto with persistence off PUBACK on receipt (not durable); nats-server stores each QoS 1 message in JetStream (file store, no per-message fsync) before its PUBACK because an offline persistent session subscribes to devices/+/telemetry (without it, it stores nothing); the gateway PUBACKs after the SQLite commit.',
    'Latency = publish() call -> PUBACK callback in the load client, measured interval only.',
    'cpu = % of one core used over the measured interval by the target process / the load client / everything else on the machine.',
  ]
  for (const run of runs) {
    const cells: string[] = []
    if (!(PEERS as readonly string[]).includes(run.target)) {
      for (const peer of PEERS) {
        const base = runs.find((r) => r.target === peer && r.publishers === run.publishers)
        if (!base || base.load.eventsPerSec === 0) { cells.push('-'); continue }
        const targetRatio = run.target !== DEPLOYED ? null : (run.publishers === 1 ? TARGET_RATIO_ONE_PUBLISHER[peer] : TARGET_RATIOS[peer]) ?? null
        const eventsPerSec = run.load.eventsPerSec / base.load.eventsPerSec
        const meetsTarget = targetRatio === null ? null : eventsPerSec >= targetRatio
        ratios.push({ target: run.target, peer, publishers: run.publishers, eventsPerSec, p50: run.load.latencyMs.p50 / base.load.latencyMs.p50, p99: run.load.latencyMs.p99 / base.load.latencyMs.p99, targetRatio, meetsTarget })
        cells.push(`${eventsPerSec.toFixed(2)}x${meetsTarget === false ? '!' : ''}`)
      }
    }
    const l = run.load
    rows.push([run.target, String(run.publishers), Math.round(l.eventsPerSec).toLocaleString('en-US'), l.latencyMs.p50.toFixed(2), l.latencyMs.p99.toFixed(2), l.latencyMs.p999.toFixed(2), cells.length > 0 ? cells.join(' / ') : '-', formatGc(run.gc), [l.cpuPct.target, l.cpuPct.client, l.cpuPct.other].map((v) => v?.toFixed(0) ?? '?').join(' / ')])
    const label = `${run.target}, ${run.publishers} publisher(s)`
    const counted = run.countedAs
    if (run.countCheck === 'failed') failures.push(`COUNT CHECK FAILED: ${label}: ${l.totalAcked} PUBACKs seen but only ${run.outboxRows} ${counted}`)
    if (l.disconnects > 0) failures.push(`${label}: ${l.disconnects} connection(s) dropped during the run`)
    if (l.errors.length > 0) failures.push(`${label}: client errors: ${l.errors.join('; ')}`)
    if (l.cpuPct.client >= SATURATED_PCT) notes.push(`${label}: the load client used ${l.cpuPct.client.toFixed(0)}% of a core: it, not the target, sets this figure (a lower bound for the target)`)
    if ((l.cpuPct.target ?? 0) >= SATURATED_PCT) notes.push(`${label}: the target used ${l.cpuPct.target!.toFixed(0)}% of a core: near the limit of one event loop (for a single-threaded target), so CPU-bound`)
    if ((l.cpuPct.other ?? 0) > OTHER_CPU_WARN_PCT) notes.push(`${label}: other processes used ${l.cpuPct.other!.toFixed(0)}% of a core while measuring: this row is skewed, rerun on a quiet machine`)
    if (l.totalPublished !== l.totalAcked) notes.push(`${label}: ${l.totalPublished - l.totalAcked} publish(es) never acknowledged within the drain timeout`)
    if (run.countCheck === 'ok') notes.push(`${label}: count check ok (${run.outboxRows} ${counted} >= ${l.totalAcked} PUBACKs)`)
    if (run.stderr !== '') notes.push(`${label}: target stderr: ${run.stderr}`)
  }
  return {
    settings,
    results: runs,
    ratios,
    table: { columns: ['target', 'publishers', 'events/s', 'p50 ms', 'p99 ms', 'p99.9 ms', `ratio vs ${PEERS.join(' / ')} (! = below target)`, 'gc count / p99 / max ms', 'cpu % target/client/other'], rows },
    notes,
    failures,
  }
}
