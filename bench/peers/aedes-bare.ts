// The peer the gateway is measured against: a bare aedes broker, default settings, in-memory
// persistence, no authorisation hooks (so PUBACK goes out as soon as the PUBLISH is parsed).
// Run as a child process by startBareAedes(); it reports its ephemeral port over IPC and exits when
// told to, when its parent goes away, or at the latest after its lifetime cap. Two versions: the
// gateway's aedes 2 (without the gateway's patch's hooks in use) and aedes 1.2 (devDependency
// `aedes-v1`), the broker before the MQTT 5 move, so both are measured in the same run.
import { fork, type ChildProcess } from 'node:child_process'
import { createServer, type AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'

/** The aedes package to run: the gateway's (aedes 2) or the one before it (aedes 1.2). */
export type AedesPackage = 'aedes' | 'aedes-v1'
export const AEDES_PEER_NAMES: Record<AedesPackage, string> = { aedes: 'aedes (bare)', 'aedes-v1': 'aedes 1.2 (bare)' }

const SELF = fileURLToPath(import.meta.url)

/** A running peer broker child: its MQTT port and a stop() that waits for it to exit. */
export interface PeerBroker { name: string, port: number, pid: number, stop: () => Promise<void> }

/** Forks this file as a bare aedes broker on 127.0.0.1:0; resolves once it listens. */
export async function startBareAedes (maxLifetimeMs: number, pkg: AedesPackage = 'aedes'): Promise<PeerBroker> {
  const child = fork(SELF, [String(maxLifetimeMs), pkg], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error('bare aedes did not start within 20 s')) }, 20000)
    child.once('message', (m) => { clearTimeout(timer); resolve((m as { mqtt: number }).mqtt) })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`bare aedes exited with ${code} before listening`)) })
  })
  return { name: AEDES_PEER_NAMES[pkg], port, pid: child.pid!, stop: () => stopChild(child, exited) }
}

async function stopChild (child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
  await exited
  clearTimeout(timer)
}

async function serve (maxLifetimeMs: number, pkg: AedesPackage): Promise<void> {
  const { Aedes } = await import(pkg) as typeof import('aedes')
  const broker = await Aedes.createBroker()
  const server = createServer(broker.handle)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const stop = (): void => {
    // Connections are destroyed rather than awaited: the bench is over when we are told to stop.
    server.close()
    broker.close(() => process.exit(0))
    setTimeout(() => process.exit(0), 2000).unref()
  }
  process.once('SIGTERM', stop)
  process.once('disconnect', stop)
  setTimeout(stop, maxLifetimeMs).unref()
  process.send!({ mqtt: (server.address() as AddressInfo).port })
}

if (process.argv[1] === SELF) void serve(Number(process.argv[2]) || 120000, process.argv[3] === 'aedes-v1' ? 'aedes-v1' : 'aedes')
