// Starts gateways for tests: in-process (startGateway) or as a child process that can be killed
// with SIGKILL (spawnGateway). Ephemeral ports, a temporary data directory, everything cleaned up.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { Gateway, createLogger, parseConfig, type FsyncFn, type GatewayConfigInput, type GatewayPorts } from '../gateway/index.ts'
import { waitFor } from '../lib/wait-for.ts'
import { nodeArgsFor, SOURCE_ROOT, type Runtime } from '../lib/node-entry.ts'

/** The working directory of a gateway child: the repository root (where tsx resolves). */
const ROOT = SOURCE_ROOT

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

/** Starts a gateway in this process. close() stops it and removes its data unless keepData. fsync: how its outbox syncs files (to watch them). */
export async function startGateway (overrides: GatewayConfigInput = {}, opts: { dataDir?: string, keepData?: boolean, fsync?: FsyncFn } = {}): Promise<TestGateway> {
  const tmp = opts.dataDir ? null : tempDir()
  const dataDir = opts.dataDir ?? tmp!.dir
  const config = parseConfig(testConfig(dataDir, overrides))
  const gateway = new Gateway(config, createLogger(config.logLevel, config.gatewayId), { defaultMetrics: false, fsync: opts.fsync })
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

export interface ChildGateway {
  child: ChildProcess
  ports: GatewayPorts
  /** The tail of the child's output (stdout + stderr), or all of it with `keepOutput: 'all'`. */
  stderr: () => string
  /** Resolves with the exit code once the process has exited. */
  exited: Promise<number | null>
  kill: (signal?: NodeJS.Signals) => Promise<number | null>
}

export interface SpawnGatewayOptions {
  /** How long to wait for the ports file (default 20000 ms). */
  timeoutMs?: number
  /** MQTT and HTTP ports (default 0: ephemeral); fixed ones let a restarted gateway keep its address. */
  mqttPort?: number
  httpPort?: number
  /** Default 'warn'; a `logLevel=` in sets wins. */
  logLevel?: string
  /** 'capture' (default) keeps the output for stderr(); 'inherit' shows it on this process's terminal. */
  output?: 'capture' | 'inherit'
  /** How much captured output to keep: the last 20 KB (default) or all of it. */
  keepOutput?: 'tail' | 'all'
  /** A command the node process runs under, e.g. ['bash', '-c', 'ulimit -n 65536; exec "$@"', 'bash']. */
  wrapper?: string[]
  /** Run the sources through tsx or the build of `npm run build` (default: as this process runs). */
  runtime?: Runtime
}

/** The node arguments that run the gateway (gateway/main.ts, or its build) on dataDir on loopback, writing its ports to portsFile. */
export function gatewayArgs (dataDir: string, portsFile: string, sets: string[] = [], opts: SpawnGatewayOptions = {}): string[] {
  const base = [`dataDir=${dataDir}`, 'mqtt.host=127.0.0.1', `mqtt.port=${opts.mqttPort ?? 0}`, 'mqtt.wsPort=null',
    'http.host=127.0.0.1', `http.port=${opts.httpPort ?? 0}`, `portsFile=${portsFile}`, `logLevel=${opts.logLevel ?? 'warn'}`]
  return [...nodeArgsFor('gateway/main.ts', opts.runtime), ...[...base, ...sets].flatMap((s) => ['--set', s])]
}

/** Reads a gateway's ports file once it appears; throws as soon as `failed()` names a reason (e.g. the process exited). */
export async function awaitPortsFile (portsFile: string, failed: () => string | null, timeoutMs = 20000): Promise<GatewayPorts> {
  // waitFor retries a condition that throws until its deadline: a reason ends the wait as a value instead.
  let why: string | null = null
  await waitFor(() => {
    why = failed()
    return why !== null || (existsSync(portsFile) && readFileSync(portsFile, 'utf8').length > 0)
  }, 'gateway child to listen', timeoutMs)
  if (why !== null) throw new Error(why)
  return JSON.parse(readFileSync(portsFile, 'utf8')) as GatewayPorts
}

/** Runs `gateway/main.ts` as a child process on dataDir; resolves once its ports file appears. */
export async function spawnGateway (dataDir: string, sets: string[] = [], options: SpawnGatewayOptions | number = {}): Promise<ChildGateway> {
  const opts = typeof options === 'number' ? { timeoutMs: options } : options
  const portsFile = join(dataDir, `ports-${Date.now()}-${Math.random().toString(36).slice(2)}.json`)
  const args = gatewayArgs(dataDir, portsFile, sets, opts)
  const [cmd, ...pre] = opts.wrapper ?? [process.execPath]
  const child = spawn(cmd!, opts.wrapper ? [...pre, process.execPath, ...args] : args, { cwd: ROOT, stdio: ['ignore', opts.output === 'inherit' ? 'inherit' : 'pipe', opts.output === 'inherit' ? 'inherit' : 'pipe'] })
  let out = ''
  // pino logs to stdout; keep both streams for failure messages (and for tests that read the logs).
  const keep = opts.keepOutput === 'all'
    ? (d: Buffer): void => { out += d.toString() }
    : (d: Buffer): void => { out = (out + d.toString()).slice(-20000) }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const gone = (): boolean => child.exitCode !== null || child.signalCode !== null
  let ports: GatewayPorts
  try {
    ports = await awaitPortsFile(portsFile, () => gone() ? `gateway exited (${child.exitCode ?? child.signalCode}): ${out.slice(-4000)}` : null, opts.timeoutMs)
  } catch (err) {
    if (!gone()) child.kill('SIGKILL')
    throw err
  }
  return {
    child,
    ports,
    stderr: () => out,
    exited,
    kill: async (signal = 'SIGKILL') => {
      if (!gone()) child.kill(signal)
      return exited
    },
  }
}

/** Connects a real MQTT client; rejects with the CONNACK error if refused. */
export async function connectDevice (port: number, opts: IClientOptions = {}): Promise<MqttClient> {
  // A device's client id is its device id (the gateway's mqtt.clientIdPattern): with only a user
  // name given, it is taken as the client id too.
  const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, clientId: opts.username, ...opts })
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

/** Each named metric of a gateway's /metrics summed over its label sets (0 when absent); null when the endpoint does not answer. */
export async function scrapeMetrics<N extends string> (httpPort: number, names: readonly N[]): Promise<Map<N, number> | null> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`, { signal: AbortSignal.timeout(3000) })).text()
    const sums = new Map<N, number>(names.map((n) => [n, 0]))
    for (const line of text.split('\n')) {
      for (const name of names) {
        if (line.startsWith(name + ' ') || line.startsWith(name + '{')) sums.set(name, sums.get(name)! + Number(line.slice(line.lastIndexOf(' ') + 1)))
      }
    }
    return sums
  } catch { return null }
}
