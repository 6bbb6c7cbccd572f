// The measuring end of the decision-latency benchmark: a trigger sensor and an actuator on real MQTT
// connections, both in this process so that one clock (performance.now()) times sensor publish ->
// actuator receives the command. The sensor alternates a reading above and below the rule's
// threshold at a fixed pace, so every trigger is exactly one decision and one command; commands are
// matched to triggers by order (the gateway handles one device's publishes in order and sends one
// actuator's commands in order), checked by the command's name (on for high, off for low).
import { latencyHistogram } from './child-kit.ts'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import mqtt, { type MqttClient } from 'mqtt'
import { commandAckTopic, commandTopic, telemetryTopic } from '../proto/topics.ts'

export interface ProbeOptions {
  port: number
  sensorId: string
  actuatorId: string
  /** Pace of the triggers: one every intervalMs, alternating high and low. */
  intervalMs: number
  /** Delay of the first slot after the connect (to spread many sensors over the interval); default 0. */
  offsetMs?: number
  /** The reading the rule compares with its threshold; high fires (command "on"), low clears (command "off"). */
  reading: string
  high: number
  low: number
}

/** Microsecond percentiles of one histogram. */
export interface LatencyUs { count: number, p50: number, p99: number, p999: number, max: number, mean: number }

/** What the probe saw for the triggers published inside one window (raw values: windows of several runs can be merged). */
export interface ProbeWindow {
  /** Triggers published inside the window. */
  triggers: number
  /**
   * Sensor publish -> actuator receives the command (µs), per trigger that got one; and per slot
   * skipped before it, its due time -> that command (a trigger that could not go out on time waits
   * from its due time, so a stall is counted in full rather than omitted). The publish is never held
   * back by an earlier trigger (open loop): a skipped slot is a stall of the probe's own process.
   */
  decisionUs: number[]
  /** Slots inside the window that got no trigger of their own (each is in decisionUs as waiting). */
  skippedSlots: number
  /** Sensor publish -> its PUBACK (the trigger committed to the outbox), per trigger (µs). */
  pubackUs: number[]
  /** Triggers whose command arrived before their own PUBACK: the decision did not wait for the commit. */
  commandBeforePuback: number
  /** Command arrival minus the trigger's PUBACK arrival, per trigger with both (µs, negative = command first). */
  commandMinusPubackUs: number[]
}

/** Counts over the whole run (warm-up and settle included): every trigger must get exactly one command. */
export interface ProbeCounts {
  triggers: number
  /** Commands received; matched = in order with the expected name. */
  commands: number
  matched: number
  /** Commands whose name was not the one the trigger at that position should cause. */
  mismatched: number
  /** Commands with no trigger left to match (a decision the triggers did not ask for). */
  extra: number
  /** Command ids seen more than once (a re-send after the gateway's ack timeout). */
  duplicateIds: number
  /** Triggers still without a command when the probe stopped. */
  missing: number
  /** Triggers still without a PUBACK when the probe stopped. */
  unacked: number
  /** Trigger slots skipped because this process was late (the pace is kept, never a burst). */
  skippedSlots: number
  /** Event-loop delay of this (measuring) process over the run, ms beyond the 10 ms sampling interval. */
  probeLoopDelayMs: { p99: number, max: number }
  disconnects: number
  errors: string[]
}

/** skippedDues: due times of the slots skipped just before it, whose wait ends with its command. */
interface Trigger { t0: number, skippedDues: number[], expect: 'on' | 'off', pubackAt: number, cmdAt: number }

async function connect (port: number, clientId: string, clean: boolean): Promise<MqttClient> {
  const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId, clean, reconnectPeriod: 0, connectTimeout: 10000, protocolVersion: 4 })
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve())
    client.once('error', (err) => { client.end(true); reject(err) })
    client.once('close', () => reject(new Error(`${clientId}: closed before CONNACK`)))
  })
  return client
}

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** A running probe: triggers go out from start() until stop(); window(from, to) reports any stretch of it. */
export class DecisionProbe {
  private readonly triggers: Trigger[] = []
  private next = 0 // index of the oldest trigger without a command
  private readonly seenIds = new Set<string>()
  private stopped = false
  private ending = false
  private timer: NodeJS.Timeout | null = null
  private slot = 0
  private startedAt = 0
  private skippedDues: number[] = []
  private readonly counts = { commands: 0, matched: 0, mismatched: 0, extra: 0, duplicateIds: 0, skippedSlots: 0, disconnects: 0 }
  private readonly errors: string[] = []
  private readonly loopDelay = monitorEventLoopDelay({ resolution: 10 })

  private constructor (private readonly opts: ProbeOptions, private readonly sensor: MqttClient, private readonly actuator: MqttClient) {}

  /** Connects the actuator (persistent session, subscribed to its command topic) and the sensor, and starts triggering. */
  static async start (opts: ProbeOptions): Promise<DecisionProbe> {
    // A persistent session, as actuators should use: the gateway then also tracks the command's PUBACK.
    const actuator = await connect(opts.port, opts.actuatorId, false)
    const sensor = await connect(opts.port, opts.sensorId, true)
    const probe = new DecisionProbe(opts, sensor, actuator)
    actuator.on('message', (_topic, payload) => probe.onCommand(payload))
    for (const c of [sensor, actuator]) {
      c.on('close', () => { if (!probe.ending) probe.counts.disconnects++ })
      c.on('error', (err) => probe.error(`${c.options.clientId}: ${err.message}`))
    }
    await actuator.subscribeAsync(commandTopic(opts.actuatorId), { qos: 1 })
    probe.loopDelay.enable()
    probe.startedAt = performance.now() + (opts.offsetMs ?? 0)
    probe.schedule()
    return probe
  }

  private error (msg: string): void {
    if (this.errors.length < 20) this.errors.push(msg)
  }

  // Fixed pace from the start: slot k is due at start + k * interval. A late timer sends one trigger
  // and skips the slots it missed, so a stall of this process never turns into a burst; the skipped
  // slots ride on the next trigger, and their wait counts from their own due times.
  private schedule (): void {
    if (this.stopped) return
    const due = this.startedAt + this.slot * this.opts.intervalMs
    this.timer = setTimeout(() => {
      this.fire()
      const behind = Math.floor((performance.now() - this.startedAt) / this.opts.intervalMs)
      for (let k = this.slot + 1; k < behind; k++) this.skippedDues.push(this.startedAt + k * this.opts.intervalMs)
      if (behind > this.slot + 1) this.counts.skippedSlots += behind - this.slot - 1
      this.slot = Math.max(this.slot + 1, behind)
      this.schedule()
    }, Math.max(0, due - performance.now()))
  }

  private fire (): void {
    const high = this.triggers.length % 2 === 0 // the rule starts cleared: the first trigger fires it
    const body = `{"ts":${Date.now()},"${this.opts.reading}":${high ? this.opts.high : this.opts.low}}`
    const trig: Trigger = { t0: performance.now(), skippedDues: this.skippedDues, expect: high ? 'on' : 'off', pubackAt: 0, cmdAt: 0 }
    this.skippedDues = []
    this.triggers.push(trig)
    this.sensor.publish(telemetryTopic(this.opts.sensorId), body, { qos: 1 }, (err) => {
      if (err) this.error(`trigger publish: ${err.message}`)
      else trig.pubackAt = performance.now()
    })
  }

  private onCommand (payload: Buffer): void {
    const at = performance.now()
    this.counts.commands++
    let cmd: { id?: unknown, name?: unknown }
    try { cmd = JSON.parse(payload.toString('utf8')) as { id?: unknown, name?: unknown } } catch { cmd = {} }
    if (typeof cmd.id === 'string') {
      if (this.seenIds.has(cmd.id)) { this.counts.duplicateIds++; return }
      this.seenIds.add(cmd.id)
      // Acknowledged at once, so the gateway's tracker finishes the command and never re-sends it.
      this.actuator.publish(commandAckTopic(this.opts.actuatorId), JSON.stringify({ id: cmd.id, status: 'ok' }), { qos: 1 })
    }
    const trig = this.triggers[this.next]
    if (!trig) { this.counts.extra++; return }
    this.next++
    trig.cmdAt = at
    if (cmd.name === trig.expect) this.counts.matched++
    else this.counts.mismatched++
  }

  /** Stops triggering, waits up to settleMs for the last commands and PUBACKs, then disconnects. */
  async stop (settleMs: number): Promise<ProbeCounts> {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    const deadline = performance.now() + settleMs
    while (performance.now() < deadline && (this.next < this.triggers.length || this.triggers.some((t) => t.pubackAt === 0))) await sleep(10)
    this.loopDelay.disable()
    this.ending = true
    await Promise.all([this.sensor, this.actuator].map(async (c) => await Promise.race([c.endAsync(), sleep(2000).then(() => { c.end(true) })])))
    const ms = (ns: number): number => Math.max(0, ns / 1e6 - 10)
    return {
      triggers: this.triggers.length,
      ...this.counts,
      missing: this.triggers.length - this.next,
      unacked: this.triggers.filter((t) => t.pubackAt === 0).length,
      probeLoopDelayMs: { p99: ms(this.loopDelay.percentile(99)), max: ms(this.loopDelay.max) },
      errors: this.errors,
    }
  }

  /** The triggers published in [from, to) (performance.now() of this process). */
  window (from: number, to: number): ProbeWindow {
    const w: ProbeWindow = { triggers: 0, decisionUs: [], skippedSlots: 0, pubackUs: [], commandBeforePuback: 0, commandMinusPubackUs: [] }
    const us = (ms: number): number => Math.max(1, Math.round(ms * 1000))
    for (const t of this.triggers) {
      if (t.t0 < from || t.t0 >= to) continue
      w.triggers++
      w.skippedSlots += t.skippedDues.length
      if (t.cmdAt > 0) for (const from of [t.t0, ...t.skippedDues]) w.decisionUs.push(us(t.cmdAt - from))
      if (t.pubackAt > 0) w.pubackUs.push(us(t.pubackAt - t.t0))
      if (t.cmdAt > 0 && (t.pubackAt === 0 || t.cmdAt < t.pubackAt)) w.commandBeforePuback++
      if (t.cmdAt > 0 && t.pubackAt > 0) w.commandMinusPubackUs.push(Math.round((t.cmdAt - t.pubackAt) * 1000))
    }
    return w
  }
}

/** The windows of several probes (one per sensor) as one. */
export function mergeWindows (ws: ProbeWindow[]): ProbeWindow {
  const out: ProbeWindow = { triggers: 0, decisionUs: [], skippedSlots: 0, pubackUs: [], commandBeforePuback: 0, commandMinusPubackUs: [] }
  for (const w of ws) {
    out.triggers += w.triggers
    out.skippedSlots += w.skippedSlots
    out.commandBeforePuback += w.commandBeforePuback
    for (const v of w.decisionUs) out.decisionUs.push(v)
    for (const v of w.pubackUs) out.pubackUs.push(v)
    for (const v of w.commandMinusPubackUs) out.commandMinusPubackUs.push(v)
  }
  return out
}

/** The counts of several probes as one (sums; the loop delay is one process's, so the first). */
export function mergeCounts (cs: ProbeCounts[]): ProbeCounts {
  const sum = (k: 'triggers' | 'commands' | 'matched' | 'mismatched' | 'extra' | 'duplicateIds' | 'missing' | 'unacked' | 'skippedSlots' | 'disconnects'): number => cs.reduce((s, c) => s + c[k], 0)
  return {
    triggers: sum('triggers'), commands: sum('commands'), matched: sum('matched'), mismatched: sum('mismatched'), extra: sum('extra'),
    duplicateIds: sum('duplicateIds'), missing: sum('missing'), unacked: sum('unacked'), skippedSlots: sum('skippedSlots'), disconnects: sum('disconnects'),
    probeLoopDelayMs: cs[0]?.probeLoopDelayMs ?? { p99: 0, max: 0 },
    errors: cs.flatMap((c) => c.errors).slice(0, 20),
  }
}

/** Percentiles (µs) of raw microsecond values, through an HDR histogram (3 significant digits). */
export function latencyUs (values: number[]): LatencyUs {
  const h = latencyHistogram()
  for (const v of values) h.recordValue(v)
  const s = { count: h.totalCount, p50: h.getValueAtPercentile(50), p99: h.getValueAtPercentile(99), p999: h.getValueAtPercentile(99.9), max: h.maxValue, mean: h.mean }
  h.destroy()
  return s
}
