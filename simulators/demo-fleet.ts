// The demo's sites: each gateway is a child process with its own data directory, its devices
// registered with real credentials (as an operator would add them), and a cold room whose cooler
// the demo's rule set (demo-rules.yaml) drives. The gateways reach NATS through a TCP proxy, so the
// demo can cut their uplinks while the cloud, on NATS directly, stays up.
import { spawnSync, type ChildProcess } from 'node:child_process'
import { nodeArgsFor, SOURCE_ROOT } from '../lib/node-entry.ts'
import { mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { spawnGateway } from '../devkit/index.ts'
import { hash, SimulatedDevice } from './device.ts'
import type { SensorKind } from './signals.ts'

const ROOT = SOURCE_ROOT

/** The rule set every demo gateway runs (pushed through the cloud). */
export const DEMO_RULES = readFileSync(fileURLToPath(new URL('./demo-rules.yaml', import.meta.url)), 'utf8')
export const DEMO_RULES_VERSION = /^version:\s*(\S+)/m.exec(DEMO_RULES)![1]

interface DevicePlan { id: string, sensors: SensorKind[], thermal?: { warmPerSec: number, coolPerSec: number } }

// One site's devices, in the order --devices takes them; devices past these are plain sensors.
// The cold room runs fast (degrees per second) so that its thermostat fires every few seconds.
const SITE: DevicePlan[] = [
  { id: 'coldroom', sensors: ['temperature', 'humidity'], thermal: { warmPerSec: 0.4, coolPerSec: 0.8 } },
  { id: 'coldroom-door', sensors: ['door'] },
  { id: 'compressor', sensors: ['vibration', 'power'] },
  { id: 'freezer-1', sensors: ['temperature'] },
  { id: 'freezer-2', sensors: ['temperature', 'humidity'] },
]
const planOf = (i: number): DevicePlan => SITE[i] ?? { id: `sensor-${i + 1}`, sensors: ['temperature', 'humidity'] }

export interface DemoGateway {
  id: string
  child: ChildProcess
  mqtt: number
  /** The gateway's operations endpoint (/readyz, /metrics). */
  http: number
  devices: SimulatedDevice[]
}

export interface StartSiteOptions {
  dataRoot: string
  /** The NATS URL the gateway dials (the demo's proxy). */
  uplink: string
  devices: number
  intervalMs: number
  recordAcks: boolean
}

/**
 * Registers the site's devices, starts its gateway and connects the devices. `started` receives
 * the gateway as soon as its process runs, so that the caller can stop it if a device then fails.
 */
export async function startSite (id: string, o: StartSiteOptions, started: (g: DemoGateway) => void): Promise<DemoGateway> {
  const dataDir = join(o.dataRoot, id)
  mkdirSync(dataDir, { recursive: true })
  const plans = Array.from({ length: o.devices }, (_, i) => planOf(i))
  const secrets = new Map<string, string>()
  for (const p of plans) {
    const r = spawnSync(process.execPath, [...nodeArgsFor('gateway/cli.ts'), 'add', p.id, '--data-dir', dataDir, '--json'], { cwd: ROOT, encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`cannot register ${id}/${p.id}: ${r.stderr}`)
    secrets.set(p.id, (JSON.parse(r.stdout) as { secret: string }).secret)
  }
  // Heartbeats every 2 s and reconnects within 2 s, so that the outage shows and ends promptly.
  const { child, ports } = await spawnGateway(dataDir, [`gatewayId=${id}`, `uplink.servers=${o.uplink}`, 'uplink.heartbeatMs=2000', 'uplink.reconnectMaxMs=2000'], { output: 'inherit' })
  const g: DemoGateway = { id, child, mqtt: ports.mqtt, http: ports.http ?? 0, devices: [] }
  started(g)
  g.devices = plans.map((p) => new SimulatedDevice({ url: `mqtt://127.0.0.1:${ports.mqtt}`, deviceId: p.id, secret: secrets.get(p.id), sensors: p.sensors, thermal: p.thermal, intervalMs: o.intervalMs, recordAcks: o.recordAcks, seed: hash(`${id}/${p.id}`) }))
  await Promise.all(g.devices.map((d) => d.start()))
  return g
}

/** Stops a gateway (SIGTERM: it flushes and closes) and resolves once it has exited. */
export function stopGateway (g: DemoGateway): Promise<void> {
  return new Promise<void>((resolve) => {
    if (g.child.exitCode !== null || g.child.signalCode !== null) return resolve()
    g.child.once('exit', () => resolve())
    g.child.kill('SIGTERM')
  })
}
