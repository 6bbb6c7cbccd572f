// The MQTT load client shared by every ingest target: N publishers (mqtt.js), each with a bounded
// window of QoS 1 publishes in flight on its own devices/<id>/telemetry topic. Publisher-only: no
// subscriber, because the gateway has none on telemetry and the peers must do the same work.
// Each run is a child process (runLoad forks this file) so the client never shares an event loop
// with the broker it measures; the result comes back over IPC.
import { connectMqtt, latencyHistogram, serveChild, sleep } from './child-kit.ts'
import { machineBusyMs, procCpuMs } from './proc-cpu.ts'
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { MqttClient } from 'mqtt'
import { telemetryTopic } from '../proto/topics.ts'

const SELF = fileURLToPath(import.meta.url)

export interface LoadOptions {
  port: number
  publishers: number
  /** Publishes awaiting PUBACK per publisher; the next one goes out when one is acknowledged. */
  window: number
  warmupMs: number
  durationMs: number
  /** After the measurement, how long to wait for in-flight PUBACKs before disconnecting anyway. */
  drainTimeoutMs: number
  clientIdPrefix: string
  /** MQTT protocol level of the publishers: 4 (3.1.1, default) or 5. */
  protocolVersion?: 4 | 5
  /** The broker's PID, to report its CPU use over the measured interval (Linux /proc only). */
  targetPid?: number
  /** Client (= device) ids of the first publishers, e.g. the devices a rule set names; the rest are <clientIdPrefix>-<i>. */
  deviceIds?: string[]
}

export interface LoadResult {
  publishers: number
  window: number
  /** Actual length of the measured interval, and when it began (epoch ms, to match other processes' records). */
  measuredMs: number
  measuredFromEpochMs: number
  /** PUBACKs received inside the measured interval, and per second. */
  measuredAcks: number
  eventsPerSec: number
  /** Publish call → PUBACK callback, for PUBACKs inside the measured interval. */
  latencyMs: { p50: number, p99: number, p999: number, max: number, mean: number }
  /** Over the whole run (warm-up, measurement, drain): what was sent and what was acknowledged. */
  totalPublished: number
  totalAcked: number
  /** Connections that closed while the run was going (they do not reconnect: a drop must be seen). */
  disconnects: number
  errors: string[]
  payloadBytes: number
  /** CPU over the measured interval, % of one core: near 100 means that process is the bottleneck. */
  /** other = everything else on the machine (all cores), e.g. a concurrent build skewing the figures. */
  cpuPct: { client: number, target: number | null, other: number | null }
}

/** Runs one load in a fresh child process; rejects if it fails or overruns its time bound. */
export async function runLoad (opts: LoadOptions): Promise<LoadResult> {
  const child = fork(SELF, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const boundMs = opts.warmupMs + opts.durationMs + opts.drainTimeoutMs + 30000
  return await new Promise<LoadResult>((resolve, reject) => {
    let result: LoadResult | null = null
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`load client overran ${boundMs} ms`)) }, boundMs)
    child.once('message', (m) => { result = m as LoadResult })
    child.once('exit', (code) => {
      clearTimeout(timer)
      if (result) resolve(result)
      else reject(new Error(`load client exited with ${code} without a result`))
    })
    child.send(opts)
  })
}

// About 100 bytes, shaped like a real sensor report; the counter keeps payloads distinct.
function payload (n: number): string {
  return JSON.stringify({ ts: Date.now(), temperature: 21.5 + (n % 100) / 100, humidity: 45.25, pressure: 1013.25, battery: 3.71, counter: n })
}


async function generate (opts: LoadOptions): Promise<LoadResult> {
  const ids = Array.from({ length: opts.publishers }, (_, i) => opts.deviceIds?.[i] ?? `${opts.clientIdPrefix}-${i}`)
  const clients = await Promise.all(ids.map(async (id) => await connectMqtt(opts.port, id, opts.protocolVersion ?? 4)))
  const hist = latencyHistogram()
  const errors: string[] = []
  let phase: 'warmup' | 'measure' | 'drain' = 'warmup'
  let running = true
  let ending = false
  let published = 0
  let acked = 0
  let measuredAcks = 0
  let inflight = 0
  let disconnects = 0

  // Each PUBACK releases exactly one new publish, so a publisher keeps `window` in flight.
  const publishOne = (client: MqttClient, topic: string): void => {
    const t0 = performance.now()
    inflight++
    published++
    client.publish(topic, payload(published), { qos: 1 }, (err) => {
      inflight--
      if (err) {
        if (errors.length < 20) errors.push(err.message)
        return
      }
      acked++
      if (phase === 'measure') {
        measuredAcks++
        hist.recordValue(Math.max(1, Math.round((performance.now() - t0) * 1000)))
      }
      if (running) publishOne(client, topic)
    })
  }

  clients.forEach((client, i) => {
    const topic = telemetryTopic(ids[i])
    client.on('close', () => { if (!ending) disconnects++ })
    client.on('error', (err) => { if (errors.length < 20) errors.push(`${client.options.clientId}: ${err.message}`) })
    for (let k = 0; k < opts.window; k++) publishOne(client, topic)
  })

  await sleep(opts.warmupMs)
  phase = 'measure'
  const t0 = performance.now()
  const measuredFromEpochMs = Date.now()
  const cpu0 = process.cpuUsage()
  const targetCpu0 = procCpuMs(opts.targetPid)
  const machine0 = machineBusyMs()
  await sleep(opts.durationMs)
  const measuredMs = performance.now() - t0
  const cpu1 = process.cpuUsage(cpu0)
  const targetCpu1 = procCpuMs(opts.targetPid)
  const machine1 = machineBusyMs()
  phase = 'drain'
  running = false
  const deadline = Date.now() + opts.drainTimeoutMs
  while (inflight > 0 && Date.now() < deadline) await sleep(10)
  ending = true
  await Promise.all(clients.map(async (c) => await Promise.race([c.endAsync(), sleep(2000).then(() => { c.end(true) })])))

  const us = (v: number): number => v / 1000
  const clientPct = (cpu1.user + cpu1.system) / 10 / measuredMs
  const targetPct = targetCpu0 !== null && targetCpu1 !== null ? (targetCpu1 - targetCpu0) / measuredMs * 100 : null
  const machinePct = machine0 !== null && machine1 !== null ? (machine1 - machine0) / measuredMs * 100 : null
  const result: LoadResult = {
    publishers: opts.publishers,
    window: opts.window,
    measuredMs,
    measuredFromEpochMs,
    measuredAcks,
    eventsPerSec: measuredAcks / (measuredMs / 1000),
    latencyMs: {
      p50: us(hist.getValueAtPercentile(50)),
      p99: us(hist.getValueAtPercentile(99)),
      p999: us(hist.getValueAtPercentile(99.9)),
      max: us(hist.maxValue),
      mean: us(hist.mean),
    },
    totalPublished: published,
    totalAcked: acked,
    disconnects,
    errors,
    payloadBytes: Buffer.byteLength(payload(123456)),
    cpuPct: {
      client: clientPct,
      target: targetPct,
      other: machinePct !== null && targetPct !== null ? Math.max(0, machinePct - targetPct - clientPct) : null,
    },
  }
  hist.destroy()
  return result
}


if (process.argv[1] === SELF) serveChild('load client', generate)
