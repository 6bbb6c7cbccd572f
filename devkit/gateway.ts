// Starts gateways for tests: in-process (startGateway) or as a child process that can be killed
// with SIGKILL (spawnGateway). Ephemeral ports, a temporary data directory, everything cleaned up.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { Gateway, createLogger, parseConfig, type GatewayConfigInput, type GatewayPorts } from '../gateway/index.ts'
import { waitFor } from './poll.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** A temporary directory removed by the returned cleanup. */
export function tempDir (prefix = 'gw-test-'): { dir: string, cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

/** Config for a test gateway: every port ephemeral and on loopback; overrides are merged per section. */
export function testConfig (dataDir: string, overrides: GatewayConfigInput = {}): GatewayConfigInput {
  return {
    gatewayId: 'gw-test',
    logLevel: 'silent',
    ...overrides,
    dataDir,
    mqtt: { host: '127.0.0.1', port: 0, wsPort: 0, ...overrides.mqtt },
    http: { host: '127.0.0.1', port: 0, ...overrides.http },
    outbox: { ...overrides.outbox },
  }
}

export interface TestGateway { gateway: Gateway, ports: GatewayPorts, dataDir: string, close: () => Promise<void> }

/** Starts a gateway in this process. close() stops it and removes its data unless keepData. */
export async function startGateway (overrides: GatewayConfigInput = {}, opts: { dataDir?: string, keepData?: boolean } = {}): Promise<TestGateway> {
  const tmp = opts.dataDir ? null : tempDir()
  const dataDir = opts.dataDir ?? tmp!.dir
  const config = parseConfig(testConfig(dataDir, overrides))
  const gateway = new Gateway(config, createLogger(config.logLevel, config.gatewayId), { defaultMetrics: false })
  const ports = await gateway.start()
  return {
    gateway,
    ports,
    dataDir,
    close: async () => {
      await gateway.close()
      if (!opts.keepData) tmp?.cleanup()
    },
  }
}

export interface ChildGateway { child: ChildProcess, ports: GatewayPorts, /** The tail of the child's log (stdout + stderr). */
  stderr: () => string, kill: (signal?: NodeJS.Signals) => Promise<number | null> }

/** Runs `gateway/main.ts` as a child process on dataDir; resolves once its ports file appears. */
export async function spawnGateway (dataDir: string, sets: string[] = [], timeoutMs = 20000): Promise<ChildGateway> {
  const portsFile = join(dataDir, `ports-${Date.now()}-${Math.random().toString(36).slice(2)}.json`)
  const args = ['--import', 'tsx', join(ROOT, 'gateway/main.ts'),
    '--set', `dataDir=${dataDir}`, '--set', 'mqtt.host=127.0.0.1', '--set', 'mqtt.port=0', '--set', 'mqtt.wsPort=null',
    '--set', 'http.host=127.0.0.1', '--set', 'http.port=0', '--set', `portsFile=${portsFile}`, '--set', 'logLevel=warn', ...sets.flatMap((s) => ['--set', s])]
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  // pino logs to stdout; keep the tail of both streams for failure messages.
  const keep = (d: Buffer): void => { err = (err + d.toString()).slice(-20000) }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  await waitFor(() => {
    if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}: ${err}`)
    return existsSync(portsFile)
  }, 'gateway child to listen', timeoutMs)
  const ports = JSON.parse(readFileSync(portsFile, 'utf8')) as GatewayPorts
  return {
    child,
    ports,
    stderr: () => err,
    kill: async (signal = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exited
    },
  }
}

/** Connects a real MQTT client; rejects with the CONNACK error if refused. */
export async function connectDevice (port: number, opts: IClientOptions = {}): Promise<MqttClient> {
  const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, ...opts })
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve())
    client.once('error', (err) => { client.end(true); reject(err) })
    client.once('close', () => reject(new Error('connection closed before CONNACK')))
  })
  return client
}

/** Reads one sample from a gateway's /metrics (sums all label sets when no labels are given). */
export async function scrapeMetric (httpPort: number, name: string, labels?: Record<string, string>): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text()
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + ' ') && !line.startsWith(name + '{')) continue
    if (labels && !Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue
    sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}
