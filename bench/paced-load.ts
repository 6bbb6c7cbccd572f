// A steady-rate MQTT load: N devices publishing QoS 1 at a fixed total rate (open loop, paced by the
// clock, not by PUBACKs), the background of the online freshness benchmark. Each payload carries
// the device's `ts`, so a cloud-side reader can measure device publish -> visible too. Runs as a
// child process (runPacedLoad forks this file); it reports the start of the measured interval and
// its end over IPC, so the parent can bracket its own measurements with them.
import { connectMqtt, latencyHistogram, serveChild, sleep } from './child-kit.ts'
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { MqttClient } from 'mqtt'
import { telemetryTopic } from '../proto/topics.ts'

const SELF = fileURLToPath(import.meta.url)

export interface PacedLoadOptions {
  port: number
  publishers: number
  /** Total events/s over all publishers. */
  ratePerSec: number
  warmupMs: number
  durationMs: number
  drainTimeoutMs: number
  clientIdPrefix: string
  /** A publisher with this many PUBACKs outstanding skips its turn (counted): the offered load was not met. */
  maxInflightPerPublisher: number
}

export interface PacedLoadResult {
  publishers: number
  ratePerSec: number
  /** Publishes due by the schedule but skipped because the publisher's window was full. */
  skipped: number
  totalPublished: number
  totalAcked: number
  measuredMs: number
  measuredAcks: number
  ackedPerSec: number
  /** Publish call -> PUBACK (durable in the outbox), measured interval only. */
  pubackMs: { p50: number, p99: number, p999: number, max: number }
  disconnects: number
  errors: string[]
  clientCpuPct: number
}

export type PacedLoadEvent = { type: 'measure' | 'drain', wallMs: number } | { type: 'result', result: PacedLoadResult }

/** Runs the load in a fresh child process; onPhase is called when measuring starts and ends. */
export async function runPacedLoad (opts: PacedLoadOptions, onPhase: (phase: 'measure' | 'drain', wallMs: number) => void): Promise<PacedLoadResult> {
  const child = fork(SELF, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const boundMs = opts.warmupMs + opts.durationMs + opts.drainTimeoutMs + 30000
  return await new Promise<PacedLoadResult>((resolve, reject) => {
    let result: PacedLoadResult | null = null
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`paced load overran ${boundMs} ms`)) }, boundMs)
    child.on('message', (m) => {
      const e = m as PacedLoadEvent
      if (e.type === 'result') result = e.result
      else onPhase(e.type, e.wallMs)
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      if (result) resolve(result)
      else reject(new Error(`paced load exited with ${code} without a result`))
    })
    child.send(opts)
  })
}

// About 100 bytes, three readings and the device's clock.
function payload (n: number): string {
  return JSON.stringify({ ts: Date.now(), temperature: 21.5 + (n % 100) / 100, humidity: 45.25 + (n % 13) / 10, battery: 3.71, counter: n })
}


async function generate (opts: PacedLoadOptions): Promise<PacedLoadResult> {
  const clients = await Promise.all(Array.from({ length: opts.publishers }, async (_, i) => await connectMqtt(opts.port, `${opts.clientIdPrefix}-${i}`)))
  const hist = latencyHistogram()
  const inflight = new Array<number>(clients.length).fill(0)
  const errors: string[] = []
  let phase: 'warmup' | 'measure' | 'drain' = 'warmup'
  let ending = false
  let disconnects = 0
  let published = 0
  let acked = 0
  let measuredAcks = 0
  let skipped = 0
  let due = 0

  clients.forEach((c) => {
    c.on('close', () => { if (!ending) disconnects++ })
    c.on('error', (err) => { if (errors.length < 20) errors.push(`${c.options.clientId}: ${err.message}`) })
  })
  const publishOne = (i: number): void => {
    const client = clients[i]
    if (inflight[i] >= opts.maxInflightPerPublisher) { skipped++; return }
    const t0 = performance.now()
    inflight[i]++
    published++
    client.publish(telemetryTopic(`${opts.clientIdPrefix}-${i}`), payload(published), { qos: 1 }, (err) => {
      inflight[i]--
      if (err) { if (errors.length < 20) errors.push(err.message); return }
      acked++
      if (phase === 'measure') {
        measuredAcks++
        hist.recordValue(Math.max(1, Math.round((performance.now() - t0) * 1000)))
      }
    })
  }
  // Every tick sends what the schedule says is due by now, round-robin over the devices.
  const start = performance.now()
  let next = 0
  const tick = setInterval(() => {
    const target = Math.floor((performance.now() - start) * opts.ratePerSec / 1000)
    for (; due < target; due++) { publishOne(next); next = (next + 1) % clients.length }
  }, 5)

  await sleep(opts.warmupMs)
  phase = 'measure'
  process.send!({ type: 'measure', wallMs: Date.now() } satisfies PacedLoadEvent)
  const t0 = performance.now()
  const cpu0 = process.cpuUsage()
  await sleep(opts.durationMs)
  const measuredMs = performance.now() - t0
  const cpu = process.cpuUsage(cpu0)
  phase = 'drain'
  clearInterval(tick)
  process.send!({ type: 'drain', wallMs: Date.now() } satisfies PacedLoadEvent)
  const deadline = Date.now() + opts.drainTimeoutMs
  while (inflight.some((n) => n > 0) && Date.now() < deadline) await sleep(10)
  ending = true
  await Promise.all(clients.map(async (c) => await Promise.race([c.endAsync(), sleep(2000).then(() => { c.end(true) })])))
  const us = (v: number): number => v / 1000
  const result: PacedLoadResult = {
    publishers: opts.publishers,
    ratePerSec: opts.ratePerSec,
    skipped,
    totalPublished: published,
    totalAcked: acked,
    measuredMs,
    measuredAcks,
    ackedPerSec: measuredAcks / (measuredMs / 1000),
    pubackMs: { p50: us(hist.getValueAtPercentile(50)), p99: us(hist.getValueAtPercentile(99)), p999: us(hist.getValueAtPercentile(99.9)), max: us(hist.maxValue) },
    disconnects,
    errors,
    clientCpuPct: (cpu.user + cpu.system) / 10 / measuredMs,
  }
  hist.destroy()
  return result
}


if (process.argv[1] === SELF) serveChild('paced load', generate, (r) => ({ type: 'result', result: r } satisfies PacedLoadEvent))
