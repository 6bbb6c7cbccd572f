// Decision latency benchmark: sensor publish -> actuator receives the command, measured outside the
// gateway (decide-probe.ts: both clients in one probe process of their own, one clock; decide-probe-child.ts). The gateway is a child process
// with one rule (`trip`: sensor-x reading v above 50 commands act-x "on", else "off"); the probe
// alternates v between 100 and 0 every few ms, so each trigger is one decision and one command.
// Scenarios, each on a fresh gateway (and nats-server where the uplink is live):
//   idle       no background devices, uplink live: the peer the others are compared with
//   load       5k events/s of QoS 1 telemetry from 10 other devices (paced-load.ts), uplink live
//   drain      the same while a backlog (1M events; quick: 200k) drains to JetStream
//   load-normal  like load with outbox.durability=normal (no fsync per commit): does the disk matter?
//   fleet-1hz, fleet-10hz  100 sensors (each with its own actuator) triggering at 1 or 10 Hz each,
//              device-like rates, over the same 5k events/s background, instead of the 100 Hz probe
// A skipped trigger slot counts as a decision waiting from its due time (decide-probe.ts).
// Beside the outside figure: the gateway's own gateway_decision_seconds, its event-loop delay
// (prom-client's default metrics), its commit durations and GC, all as deltas over the same window,
// and its GC pauses traced in its process (gc-trace.ts).
import { copyFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect } from '@nats-io/transport-node'
import { provisionStreams } from '../cloud/provision.ts'
import { startNats, type NatsServer, spawnGateway, tempDir, type ChildGateway, waitFor } from '../devkit/index.ts'
import { killOnExit, stopGateway } from './children.ts'
import { gcStats, gcTraceWrapper } from './gc-trace.ts'
import type { ProbeOptions } from './decide-probe.ts'
import type { ProbeCounts } from './decide-probe.ts'
import { ProbeChild } from './decide-probe-child.ts'
import { report, type DecideSettings, type Mark, type Poll, type ScenarioKey, type ScenarioRun } from './decide-report.ts'
import { scrapeAll } from './metrics-scrape.ts'
import { fillOutbox, type FillResult } from './outbox-fill.ts'
import { runPacedLoad, type PacedLoadResult } from './paced-load.ts'
import { machineBusyMs, procCpuMs, threadSchedMs } from './proc-cpu.ts'
import { DEPLOYED_GATEWAY, type BenchOptions, type BenchReport } from './bench-types.ts'

const GATEWAY_ID = 'bench-decide'
const SENSOR = 'sensor-x'
const ACTUATOR = 'act-x'
/** The backlog counts as drained once the outbox holds fewer events than this (live telemetry waiting for its batch stays far below). */
const DRAINED_BELOW = 2000

export interface Scenario { key: ScenarioKey, background: boolean, backlog: boolean, durability: 'full' | 'normal', fleet: boolean }

const SCENARIOS: Scenario[] = [
  { key: 'idle', background: false, backlog: false, durability: 'full', fleet: false },
  { key: 'load', background: true, backlog: false, durability: 'full', fleet: false },
  { key: 'drain', background: true, backlog: true, durability: 'full', fleet: false },
  { key: 'load-normal', background: true, backlog: false, durability: 'normal', fleet: false },
  { key: 'fleet-1hz', background: true, backlog: false, durability: 'full', fleet: true },
  { key: 'fleet-10hz', background: true, backlog: false, durability: 'full', fleet: true },
]
const FLEET_SENSORS = 100
/** The fleet's sensors; each one's actuator is <sensor>-act (the rule's {device}-act). */
const FLEET = Array.from({ length: FLEET_SENSORS }, (_, i) => `fleet-s${String(i).padStart(3, '0')}`)

const RULES = `version: bench-decide-1
rules:
  - id: trip
    devices: [${SENSOR}]
    when: { reading: v, above: 50 }
    then:
      - command: { device: ${ACTUATOR}, name: "on", args: { on: true } }
    else:
      - command: { device: ${ACTUATOR}, name: "off", args: { on: false } }
  - id: trip-fleet
    devices: [${FLEET.join(', ')}]
    when: { reading: v, above: 50 }
    then:
      - command: { device: "{device}-act", name: "on", args: { on: true } }
    else:
      - command: { device: "{device}-act", name: "off", args: { on: false } }
`

function settingsFor (quick: boolean): DecideSettings {
  return {
    mode: quick ? 'quick' : 'full',
    rule: RULES,
    triggerIntervalMs: 10,
    triggerQos: 1,
    commandQos: 1,
    // Full: the window opens past the gateway's start-up: V8's first memory-reducer GCs run about 8-10 s
    // after it starts (5-18 ms pauses, once) and the JIT is still tiering up. The target is about a
    // gateway in service; the start-up seconds are not in the percentiles (README).
    warmupMs: quick ? 500 : 12000,
    // Full: 30 s gives 3,000 decisions at 100 Hz and at 100 x 1 Hz (at least 2,000 per scenario).
    durationMs: quick ? 2000 : 30000,
    backlogEvents: quick ? 200_000 : 1_000_000,
    backlogDevices: 100,
    /** Drain runs (each a fresh copy of the backlog, nats-server and gateway), merged: one drain is only a few seconds of triggers. */
    drainRuns: quick ? 1 : 10,
    minDecisions: quick ? 0 : 2000,
    fleet: { sensors: FLEET_SENSORS, intervalMs: { 'fleet-1hz': 1000, 'fleet-10hz': 100 } },
    /** Longest a drain run measures (the background load runs this long). */
    drainCapMs: quick ? 3000 : 12000,
    drainedBelowEvents: DRAINED_BELOW,
    pollMs: 100,
    settleMs: 3000,
    background: { publishers: 10, ratePerSec: 5000, qos: 1, maxInflightPerPublisher: 500, drainTimeoutMs: 5000 },
    gatewaySets: [`gatewayId=${GATEWAY_ID}`, 'mqtt.allowAnonymous=true', 'uplink.reconnectMinMs=50', 'uplink.reconnectMaxMs=250'],
  }
}

/** The scenarios' names, for `--scenarios` (run.ts checks them). */
export const DECIDE_SCENARIOS: readonly string[] = SCENARIOS.map((sc) => sc.key)

/** Runs the decision latency benchmark and returns its settings, results, ratios and table. */
export async function decide (opts: BenchOptions): Promise<BenchReport> {
  const settings = settingsFor(opts.quick)
  // Quick: load-normal (a variant that asks whether the disk matters) is left out unless named.
  const scenarios = opts.scenarios !== undefined && opts.scenarios.length > 0
    ? SCENARIOS.filter((sc) => opts.scenarios!.includes(sc.key))
    : SCENARIOS.filter((sc) => !opts.quick || sc.key !== 'load-normal')
  const runs: ScenarioRun[] = []
  const fillDir = tempDir('bench-decide-fill-')
  let fill: FillResult | null = null
  try {
    for (const scenario of scenarios) {
      if (scenario.backlog && fill === null) {
        process.stderr.write(`decide: filling an outbox with ${settings.backlogEvents.toLocaleString('en-US')} events...\n`)
        fill = await fillOutbox(fillDir.dir, { events: settings.backlogEvents, devices: settings.backlogDevices, burst: 50_000 })
      }
      // A drain lasts only a few seconds: runs repeat until their windows hold enough decisions.
      const repeats = scenario.backlog ? settings.drainRuns : 1
      let decisions = 0
      for (let run = 1; run <= repeats && (run === 1 || decisions < settings.minDecisions); run++) {
        process.stderr.write(`decide: ${scenario.key}${repeats > 1 ? ` (run ${run}, ${decisions} decisions so far)` : ''}, outbox.durability=${scenario.durability}...\n`)
        const r = await runScenario(settings, scenario, run, scenario.backlog ? join(fillDir.dir, 'gateway.db') : null)
        decisions += r.window.decisionUs.length
        runs.push(r)
      }
    }
  } finally {
    fillDir.cleanup()
  }
  return report(settings, fill, runs)
}

/** /readyz of the gateway: outbox size, replicated events and link state, without prom-client's collect. */
async function poll (http: number): Promise<Poll> {
  const a = performance.now()
  const r = await (await fetch(`http://127.0.0.1:${http}/readyz`)).json() as { outboxEvents?: number, uplink?: { link?: string, ackedEvents?: number } }
  return { t: (a + performance.now()) / 2, outboxEvents: r.outboxEvents ?? NaN, ackedEvents: r.uplink?.ackedEvents ?? NaN, linkUp: r.uplink?.link === 'up' }
}

const sumCpu = (a: number | null, b: number | null): number | null => a === null || b === null ? null : a + b

// A window edge: one /metrics scrape (prom-client resets its event-loop histogram on it) and CPU counters.
async function mark (gw: ChildGateway, nats: NatsServer, probePid: number): Promise<Mark> {
  const a = performance.now()
  const scrape = await scrapeAll(gw.ports.http!)
  const b = performance.now()
  const loop = threadSchedMs(gw.child.pid)
  const probeLoop = threadSchedMs(probePid)
  return {
    t: (a + b) / 2,
    scrapeMs: b - a,
    scrape,
    cpuMs: {
      gateway: procCpuMs(gw.child.pid),
      nats: procCpuMs(nats.pid),
      bench: sumCpu(procCpuMs(process.pid), procCpuMs(probePid)),
      machine: machineBusyMs(),
      // Not processes (cpuPct's `other` leaves them out): the loop threads' time on a CPU and waiting for
      // one; gatewayLoopSlices counts its turns on a CPU (the report divides the wait by it).
      gatewayLoopOnCpu: loop?.cpu ?? null,
      gatewayLoopRunQueue: loop?.wait ?? null,
      gatewayLoopSlices: loop?.slices ?? null,
      probeLoopRunQueue: probeLoop?.wait ?? null,
    },
  }
}

/** Polls /readyz every everyMs until `done` says so or end() is called. */
class Poller {
  readonly polls: Poll[] = []
  private wake: (() => void) | null = null
  private ended = false

  constructor (private readonly http: number, private readonly everyMs: number) {}

  async run (done: (p: Poll) => boolean): Promise<Poll[]> {
    for (;;) {
      const p = await poll(this.http)
      this.polls.push(p)
      if (this.ended || done(p)) return this.polls
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.everyMs)
        this.wake = () => { clearTimeout(timer); resolve() }
      })
      this.wake = null
    }
  }

  /** Polls once more now (or lets the poll under way be the last) and stops. */
  end (): void {
    this.ended = true
    this.wake?.()
  }
}

/** What a measured window left: its edges, the polls between them, and where the probe's window ends. */
interface Measured { start: Mark, end: Mark, polls: Poll[], probeTo: number, drainedAtMs: number | null }

// Opens the window with a scrape, polls until done/end, closes it with a scrape.
async function measureWindow (gw: ChildGateway, nats: NatsServer, probePid: number, poller: Poller, done: (p: Poll, start: Mark) => boolean): Promise<Measured> {
  const start = await mark(gw, nats, probePid)
  const polls = await poller.run((p) => done(p, start))
  const end = await mark(gw, nats, probePid)
  return { start, end, polls, probeTo: end.t, drainedAtMs: null }
}

// The drain's window: the cloud comes back, the window opens as soon as the link is up and lasts
// while the backlog is there. The probe's window ends at the last poll that still saw the backlog,
// so every trigger in it was published while the drain ran; the scrape that closes the gateway's
// window follows the first poll that found it gone (up to one poll interval later).
async function measureDrain (gw: ChildGateway, nats: NatsServer, probePid: number, poller: Poller): Promise<Measured> {
  await nats.restart()
  await waitFor(async () => (await poll(gw.ports.http!)).linkUp, 'gateway uplink to reconnect', 15000, 5)
  const m = await measureWindow(gw, nats, probePid, poller, (p) => p.outboxEvents < DRAINED_BELOW)
  const drained = m.polls.findIndex((p) => p.outboxEvents < DRAINED_BELOW)
  if (drained > 0) {
    m.probeTo = m.polls[drained - 1].t
    m.drainedAtMs = m.polls[drained].t - m.start.t
  }
  return m
}

async function runScenario (settings: DecideSettings, scenario: Scenario, run: number, backlogDb: string | null): Promise<ScenarioRun> {
  const nats = await startNats()
  const data = tempDir('bench-decide-')
  try {
    const nc = await connect({ servers: nats.url })
    await provisionStreams(nc)
    await nc.close()
    const rulesFile = join(data.dir, 'rules.yaml')
    writeFileSync(rulesFile, RULES)
    if (backlogDb) {
      // The outage: the gateway starts with the backlog and no cloud; the cloud comes back once the
      // background load and the probe are running.
      await nats.stop()
      copyFileSync(backlogDb, join(data.dir, 'gateway.db'))
    }
    const trace = gcTraceWrapper(data.dir)
    const gw = await spawnGateway(data.dir, [...settings.gatewaySets, `rules.file=${rulesFile}`, `uplink.servers=${nats.url}`, `outbox.durability=${scenario.durability}`], { ...DEPLOYED_GATEWAY, wrapper: trace.wrapper })
    const forget = killOnExit(gw.child.pid)
    try {
      const http = gw.ports.http!
      if (!backlogDb) await waitFor(async () => (await poll(http)).linkUp, 'gateway uplink to connect', 15000, 50)
      const probe = await ProbeChild.start(probeOptions(settings, scenario, gw.ports.mqtt))
      const poller = new Poller(http, settings.pollMs)
      let measured: Measured
      let load: PacedLoadResult | null = null
      let probeCounts: ProbeCounts
      try {
        if (!scenario.background) {
          await new Promise((resolve) => setTimeout(resolve, settings.warmupMs))
          measured = await measureWindow(gw, nats, probe.pid, poller, (p, start) => p.t - start.t >= settings.durationMs)
        } else {
          const measuring: { m: Promise<Measured> | null } = { m: null }
          const bg = settings.background
          load = await runPacedLoad({
            port: gw.ports.mqtt,
            publishers: bg.publishers,
            ratePerSec: bg.ratePerSec,
            warmupMs: settings.warmupMs,
            durationMs: scenario.backlog ? settings.drainCapMs : settings.durationMs,
            drainTimeoutMs: bg.drainTimeoutMs,
            clientIdPrefix: 'bg',
            maxInflightPerPublisher: bg.maxInflightPerPublisher,
          }, (phase) => {
            if (phase === 'drain') poller.end()
            else measuring.m = scenario.backlog ? measureDrain(gw, nats, probe.pid, poller) : measureWindow(gw, nats, probe.pid, poller, () => false)
          })
          if (measuring.m === null) throw new Error('the background load never reached its measured phase')
          measured = await measuring.m
        }
        probeCounts = await probe.stop(settings.settleMs)
      } catch (err) {
        probe.close()
        throw err
      }
      const window = await probe.window(measured.start.t, measured.probeTo)
      probe.close()
      // After the settle: every trigger so far must have been one decision.
      const final = await scrapeAll(http)
      return {
        scenario: scenario.key,
        durability: scenario.durability,
        run,
        start: measured.start,
        end: measured.end,
        polls: measured.polls,
        probeWindowMs: measured.probeTo - measured.start.t,
        drainedAtMs: measured.drainedAtMs,
        window,
        counts: probeCounts,
        final: { decisions: final.values.get('gateway_decisions_total') ?? 0, commands: statusCounts(final.series) },
        load,
        gcTrace: gcStats(trace.file, performance.timeOrigin + measured.start.t, performance.timeOrigin + measured.end.t),
        gatewayStderr: gw.stderr().trim().slice(-2000),
      }
    } finally {
      await stopGateway(gw)
      forget()
    }
  } finally {
    await nats.cleanup()
    data.cleanup()
  }
}

/** The 100 Hz probe (one sensor), or the fleet: one pair per sensor at the scenario's rate, their first slots spread over the interval. */
function probeOptions (settings: DecideSettings, scenario: Scenario, port: number): ProbeOptions[] {
  const base = { port, reading: 'v', high: 100, low: 0 }
  if (!scenario.fleet) return [{ ...base, sensorId: SENSOR, actuatorId: ACTUATOR, intervalMs: settings.triggerIntervalMs }]
  const intervalMs = settings.fleet.intervalMs[scenario.key]
  return FLEET.map((sensorId, i) => ({ ...base, sensorId, actuatorId: `${sensorId}-act`, intervalMs, offsetMs: i * intervalMs / FLEET.length }))
}

function statusCounts (series: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [k, v] of series) {
    const m = /^gateway_commands_total\{status="([^"]+)"\}$/.exec(k)
    if (m) out[m[1]] = v
  }
  return out
}
