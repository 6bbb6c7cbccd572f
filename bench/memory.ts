// Gateway memory with many connected devices: the gateway child's RSS (from /proc, what the kernel
// charges the process) started empty, then with N devices connected and subscribed to their command
// topics (full 10k, quick 1k), from a separate client process. DESIGN target: <= 200 MB RSS with 10k
// connected devices. Both children are started through bash with a raised open-file limit
// (`ulimit -n` is per process: 10k sockets need more than the usual 1024), and under `timeout` so
// neither can outlive the bench.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { scrapeAll } from './metrics-scrape.ts'
import { killOnExit } from './children.ts'
import { spawnWithLifetime, type Wrapped } from './peers/external.ts'
import { awaitPortsFile, gatewayArgs, tempDir, waitFor } from '../devkit/index.ts'
import type { BenchOptions, BenchReport } from './bench-types.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const TARGET_BYTES = 200e6
const TARGET_DEVICES = 10_000
const FD_LIMIT = 65536
/** Raise the soft open-file limit (to the hard limit if 65536 is above it), then become the command. */
const RAISE_FDS = `ulimit -n ${FD_LIMIT} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`

function procStatusBytes (pid: number, field: 'VmRSS' | 'VmHWM'): number | null {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : null
  } catch { return null }
}

function fdLimit (pid: number): number | null {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))
    return m ? Number(m[1]) : null
  } catch { return null }
}

async function sleep (ms: number): Promise<void> { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** The JSON lines a child printed so far. */
function jsonLines (output: string): Array<Record<string, unknown>> {
  return output.split('\n').flatMap((line) => {
    if (!line.startsWith('{')) return []
    try { return [JSON.parse(line) as Record<string, unknown>] } catch { return [] }
  })
}

interface Gw { proc: Wrapped, mqtt: number, http: number }

async function startGatewayChild (dataDir: string, lifetimeMs: number): Promise<Gw> {
  const portsFile = join(dataDir, 'ports.json')
  const proc = await spawnWithLifetime('bash', ['-c', RAISE_FDS, 'bash', process.execPath, ...gatewayArgs(dataDir, portsFile, ['mqtt.allowAnonymous=true'])], lifetimeMs, { cwd: ROOT })
  try {
    const ports = await awaitPortsFile(portsFile, () => proc.alive() ? null : `gateway exited: ${proc.output().slice(-2000)}`, 30000)
    return { proc, mqtt: ports.mqtt, http: ports.http ?? 0 }
  } catch (err) {
    await proc.stop()
    throw err
  }
}

export async function memory (opts: BenchOptions): Promise<BenchReport> {
  const devices = opts.quick ? 1000 : TARGET_DEVICES
  const settings = {
    mode: opts.quick ? 'quick' : 'full',
    devices,
    wave: 500,
    keepaliveS: 3600,
    settleMs: opts.quick ? 1000 : 3000,
    client: 'mqtt.js, MQTT 3.1.1, clean session, one SUBSCRIBE (QoS 1) to devices/<id>/commands per device, all in one client process',
    gatewaySets: ['mqtt.allowAnonymous=true', 'logLevel=warn', 'uplink: none (outbox empty)'],
    rss: '/proc/<gateway pid>/status VmRSS; peak = VmHWM',
  }
  const lifetimeMs = opts.quick ? 120000 : 300000
  const data = tempDir('bench-memory-')
  const failures: string[] = []
  const notes: string[] = []
  try {
    const gw = await startGatewayChild(data.dir, lifetimeMs)
    const forget = killOnExit(gw.proc.pid)
    try {
      await sleep(settings.settleMs)
      const rssBefore = procStatusBytes(gw.proc.pid, 'VmRSS')
      const clients = await spawnWithLifetime('bash', ['-c', RAISE_FDS, 'bash', process.execPath, '--max-old-space-size=4096', '--import', 'tsx',
        join(ROOT, 'bench/memory-clients.ts'), String(gw.mqtt), String(devices), String(settings.wave), 'mem'], lifetimeMs, { cwd: ROOT })
      const forgetClients = killOnExit(clients.pid)
      try {
        const first = await waitFor(() => {
          const line = jsonLines(clients.output()).find((l) => 'connected' in l || 'error' in l)
          if (line) return line
          if (!clients.alive()) return { error: `client process exited: ${clients.output().slice(-2000)}` }
          return null
        }, `${devices} devices to connect`, lifetimeMs - 20000)
        if ('error' in first) throw new Error(`devices failed to connect: ${String(first.error)}`)
        // Let the connection burst's garbage be collected, then sample RSS a few times.
        await sleep(settings.settleMs)
        const samples: number[] = []
        for (let i = 0; i < 5; i++) {
          const v = procStatusBytes(gw.proc.pid, 'VmRSS')
          if (v !== null) samples.push(v)
          await sleep(400)
        }
        const rssAfter = samples.length > 0 ? samples[samples.length - 1] : null
        const peak = procStatusBytes(gw.proc.pid, 'VmHWM')
        const scrape = await scrapeAll(gw.http)
        const gatewayConnections = scrape.values.get('gateway_connections') ?? null
        // Where the memory is, from the gateway's own default metrics (names carry its prefix).
        const metric = (suffix: string): number | null => [...scrape.values].find(([k]) => k.endsWith(suffix))?.[1] ?? null
        const heapUsed = metric('nodejs_heap_size_used_bytes')
        const heapTotal = metric('nodejs_heap_size_total_bytes')
        const external = metric('nodejs_external_memory_bytes')
        const dropLine = jsonLines(clients.output()).filter((l) => 'drops' in l).pop()
        const drops = dropLine ? Number(dropLine.drops) : 0
        const connected = Number(first.connected)
        const perDevice = rssBefore !== null && rssAfter !== null ? (rssAfter - rssBefore) / connected : null
        const projected10k = rssBefore !== null && perDevice !== null ? rssBefore + perDevice * TARGET_DEVICES : null
        const meetsTarget = projected10k === null ? null : projected10k <= TARGET_BYTES
        if (connected !== devices) failures.push(`only ${connected} of ${devices} devices connected`)
        if (gatewayConnections !== null && gatewayConnections < devices) failures.push(`the gateway counts ${gatewayConnections} connections, expected ${devices}`)
        if (drops > 0) failures.push(`${drops} device connection(s) dropped while holding`)
        const mb = (b: number | null): string => b === null ? '-' : `${(b / 1e6).toFixed(1)} MB`
        notes.push(`RSS target (DESIGN): <= ${TARGET_BYTES / 1e6} MB with ${TARGET_DEVICES.toLocaleString('en-US')} connected devices; ${devices === TARGET_DEVICES ? 'measured directly' : `projected linearly from ${devices.toLocaleString('en-US')} devices (run without --quick to measure it)`}.`)
        notes.push(`open-file limit: gateway ${fdLimit(gw.proc.pid) ?? '?'}, client process ${fdLimit(clients.pid) ?? '?'}; devices connected in waves of ${settings.wave} in ${(Number(first.connectMs) / 1000).toFixed(1)} s; client process RSS ${mb(Number(first.clientRssBytes))}.`)
        notes.push(`gateway RSS samples after settling: ${samples.map(mb).join(', ')}.`)
        notes.push(`gateway with ${connected.toLocaleString('en-US')} devices: V8 heap used ${mb(heapUsed)} of ${mb(heapTotal)}, external ${mb(external)} (rest of RSS: code, stacks, allocator, socket buffers).`)
        const results = [{ devices, connected, gatewayConnections, drops, rssBeforeBytes: rssBefore, rssAfterBytes: rssAfter, rssPeakBytes: peak, rssSamplesBytes: samples, perDeviceBytes: perDevice, projected10kBytes: projected10k, connectMs: Number(first.connectMs), clientRssBytes: Number(first.clientRssBytes), fdLimitGateway: fdLimit(gw.proc.pid), heapUsedBytes: heapUsed, heapTotalBytes: heapTotal, externalBytes: external, meetsTarget }]
        return {
          settings,
          results,
          ratios: [{ metric: 'projected RSS with 10k devices / target', value: projected10k === null ? null : projected10k / TARGET_BYTES }],
          table: {
            columns: ['devices', 'RSS before', 'RSS after', 'delta', 'per device', 'peak (VmHWM)', 'RSS at 10k', 'target <= 200 MB'],
            rows: [[devices.toLocaleString('en-US'), mb(rssBefore), mb(rssAfter), mb(rssAfter !== null && rssBefore !== null ? rssAfter - rssBefore : null),
              perDevice === null ? '-' : `${(perDevice / 1024).toFixed(1)} KiB`, mb(peak), `${mb(projected10k)}${devices === TARGET_DEVICES ? '' : ' (projected)'}`,
              meetsTarget === null ? '?' : meetsTarget ? 'met' : 'MISSED']],
          },
          notes,
          failures,
        }
      } finally {
        await clients.stop()
        forgetClients()
      }
    } finally {
      await gw.proc.stop()
      forget()
    }
  } finally {
    data.cleanup()
  }
}
