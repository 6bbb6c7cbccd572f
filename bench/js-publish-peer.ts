// The drain's peer: the same JetStream client the gateway uses (@nats-io/jetstream js.publish),
// replicating one ~100-byte event per message with a window of publishes awaiting their ack, each
// with a message id (as exactly-once replication would need). Runs as a child process (runJsPublish
// forks this file) so that, like the gateway child, it has an event loop to itself.
import { latencyHistogram, serveChild, sleep } from './child-kit.ts'
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { jetstream } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { v1 } from '../proto/index.ts'
import { cpuMeter } from './proc-cpu.ts'

const SELF = fileURLToPath(import.meta.url)

export interface JsPublishOptions {
  url: string
  subject: string
  /** Publishes awaiting a JetStream ack at once. */
  window: number
  warmupMs: number
  durationMs: number
  /** nats-server's PID, to report its CPU over the measured interval. */
  serverPid?: number
}

export interface JsPublishResult {
  window: number
  payloadBytes: number
  measuredMs: number
  measuredAcks: number
  msgsPerSec: number
  /** publish() -> ack, acks inside the measured interval. */
  latencyMs: { p50: number, p99: number, p999: number, max: number }
  errors: string[]
  /** % of one core over the measured interval: this client, nats-server, the whole machine (all cores). */
  cpuPct: Record<string, number | null>
}

/** Runs the peer in a fresh child process; rejects if it fails or overruns its time bound. */
export async function runJsPublish (opts: JsPublishOptions): Promise<JsPublishResult> {
  const child = fork(SELF, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const boundMs = opts.warmupMs + opts.durationMs + 30000
  return await new Promise<JsPublishResult>((resolve, reject) => {
    let result: JsPublishResult | null = null
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`JetStream publish peer overran ${boundMs} ms`)) }, boundMs)
    child.once('message', (m) => { result = m as JsPublishResult })
    child.once('exit', (code) => {
      clearTimeout(timer)
      if (result) resolve(result)
      else reject(new Error(`JetStream publish peer exited with ${code} without a result`))
    })
    child.send(opts)
  })
}

// Telemetry events as the outbox stores them (~100 bytes of protobuf each), encoded once: like the
// gateway's drain, the peer sends stored bodies and does no per-event encoding.
function events (count: number): Uint8Array[] {
  const now = Date.now()
  return Array.from({ length: count }, (_, n) => v1.TelemetryEvent.encode({
    gatewayId: 'bench-peer',
    deviceId: `sensor-${String(n).padStart(4, '0')}`,
    seq: 1_000_000 + n,
    eventTsMs: now - 40,
    ingestTsMs: now,
    readings: [
      { name: 'temperature', value: 21.5 + n / 100 },
      { name: 'humidity', value: 45.25 },
      { name: 'battery', value: 3.71 },
    ],
  }).finish())
}

async function publish (opts: JsPublishOptions): Promise<JsPublishResult> {
  const nc = await connect({ servers: opts.url })
  const js = jetstream(nc, { timeout: 10000 })
  const hist = latencyHistogram()
  const bodies = events(100)
  const errors: string[] = []
  let phase: 'warmup' | 'measure' | 'drain' = 'warmup'
  let n = 0
  let inflight = 0
  let measuredAcks = 0
  const one = (): void => {
    const seq = ++n
    const t0 = performance.now()
    inflight++
    js.publish(opts.subject, bodies[seq % bodies.length], { msgID: `bench-peer.${seq}` }).then(() => {
      inflight--
      if (phase === 'measure') {
        measuredAcks++
        hist.recordValue(Math.max(1, Math.round((performance.now() - t0) * 1000)))
      }
      if (phase !== 'drain') one()
    }, (err: Error) => {
      inflight--
      if (errors.length < 20) errors.push(err.message)
      if (phase !== 'drain') one()
    })
  }
  for (let k = 0; k < opts.window; k++) one()
  await sleep(opts.warmupMs)
  phase = 'measure'
  const t0 = performance.now()
  const meter = cpuMeter({ client: process.pid, nats: opts.serverPid })
  await sleep(opts.durationMs)
  const measuredMs = performance.now() - t0
  const cpuPct = meter.stop()
  phase = 'drain'
  const deadline = Date.now() + 10000
  while (inflight > 0 && Date.now() < deadline) await sleep(10)
  await nc.close()
  const us = (v: number): number => v / 1000
  const result: JsPublishResult = {
    window: opts.window,
    payloadBytes: Math.round(bodies.reduce((a, b) => a + b.length, 0) / bodies.length),
    measuredMs,
    measuredAcks,
    msgsPerSec: measuredAcks / (measuredMs / 1000),
    latencyMs: { p50: us(hist.getValueAtPercentile(50)), p99: us(hist.getValueAtPercentile(99)), p999: us(hist.getValueAtPercentile(99.9)), max: us(hist.maxValue) },
    errors,
    cpuPct,
  }
  hist.destroy()
  return result
}


if (process.argv[1] === SELF) serveChild('JetStream publish peer', publish)
