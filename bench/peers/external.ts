// Shared plumbing for the peer brokers that are separate programs (Mosquitto, nats-server): a free
// loopback port, a wait for the first real MQTT CONNACK, and a child started under coreutils
// `timeout` so it ends by itself even if the bench is killed before it can stop it.
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import mqtt from 'mqtt'

/** A running peer broker: its MQTT port, the broker's own PID (for CPU), and a stop() that waits. */
export interface PeerBroker { name: string, port: number, pid: number, stop: () => Promise<void> }

/** A port that was free on 127.0.0.1 a moment ago (for programs that cannot report an ephemeral one). */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/** Resolves once an MQTT 3.1.1 client gets a CONNACK on port; rejects after timeoutMs. */
export async function waitForMqtt (port: number, timeoutMs: number, alive: () => boolean, output: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (!alive()) throw new Error(`broker exited before accepting MQTT clients: ${output().slice(-2000)}`)
    const ok = await new Promise<boolean>((resolve) => {
      const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId: `probe-${process.pid}`, clean: true, reconnectPeriod: 0, connectTimeout: 2000, protocolVersion: 4 })
      const done = (v: boolean): void => { c.end(true); resolve(v) }
      c.once('connect', () => done(true))
      c.once('error', () => done(false))
      c.once('close', () => done(false))
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`no CONNACK on port ${port} within ${timeoutMs} ms: ${output().slice(-2000)}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** The started program and how to stop it; pid is the program itself, not the `timeout` wrapper. */
export interface Wrapped { child: ChildProcess, pid: number, output: () => string, alive: () => boolean, stop: () => Promise<void> }

/** Spawns `cmd args` under `timeout -s KILL lifetime`, so it cannot outlive lifetimeMs. */
export async function spawnWithLifetime (cmd: string, args: string[], lifetimeMs: number, opts: { cwd?: string } = {}): Promise<Wrapped> {
  const child = spawn('timeout', ['-s', 'KILL', `${Math.ceil(lifetimeMs / 1000)}s`, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], cwd: opts.cwd })
  let tail = ''
  const keep = (d: Buffer): void => { tail = (tail + d.toString()).slice(-20000) }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  let exited = false
  const done = new Promise<void>((resolve) => {
    child.once('exit', () => { exited = true; resolve() })
    child.once('error', (err) => { exited = true; keep(Buffer.from(`spawn error: ${err.message}`)); resolve() })
  })
  // `timeout` forks the program: its PID is timeout's only child.
  let pid = 0
  const deadline = Date.now() + 5000
  while (pid === 0 && !exited && Date.now() < deadline) {
    try { pid = Number(readFileSync(`/proc/${child.pid!}/task/${child.pid!}/children`, 'utf8').trim().split(/\s+/)[0]) || 0 } catch { /* not yet */ }
    if (pid === 0) await new Promise((resolve) => setTimeout(resolve, 10))
  }
  if (pid === 0) {
    child.kill('SIGKILL')
    throw new Error(`${cmd} did not start: ${tail.slice(-2000)}`)
  }
  const stop = async (): Promise<void> => {
    if (exited) return
    // SIGTERM to the program itself; timeout then exits with it. SIGKILL both if it lingers.
    try { process.kill(pid, 'SIGTERM') } catch { /* gone */ }
    const timer = setTimeout(() => { try { process.kill(pid, 'SIGKILL') } catch { /* gone */ } child.kill('SIGKILL') }, 5000)
    await done
    clearTimeout(timer)
  }
  return { child, pid, output: () => tail, alive: () => !exited, stop }
}
