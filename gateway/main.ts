// Gateway process entry: `node dist/gateway/main.js [--config file] [--set key=value ...]` (the build
// of `npm run build`), or from the sources `node --import tsx gateway/main.ts` (`npm run gateway`).
import { parseArgs } from 'node:util'
import { setFlagsFromString } from 'node:v8'
import { GATEWAY_NODE_FLAGS } from '../lib/node-entry.ts'
import { loadConfig } from './config.ts'
import { GatewayError } from './errors.ts'
import { Gateway } from './gateway.ts'
import { createLogger } from './log.ts'

// Memory (DESIGN: <= 200 MB RSS with 10k connected devices). Each MQTT connect makes aedes and
// node:stream allocate ~70 KB of short-lived objects. With V8's defaults for a machine this size
// (16 MB semi-spaces, generous old-space growth, little compaction) a burst of connects left the
// heap at 2-3x its live size, and those pages stay with the process: 10k devices, ~90 MB live,
// ~240 MB of heap, ~320 MB RSS. optimize-for-size keeps the young generation at 1 MB and the old
// one compact and close to its live size (10k devices: ~180 MB RSS; ingest throughput no lower).
// Set here rather than on a command line so that every way of starting the gateway (systemd
// unit, npm run gateway, the container, the test and bench harnesses) gets it; V8 reads it at
// each GC, and the young generation shrinks at the next one. It would then stay at 1 MB: a scavenge
// every 25-50 ms at 5k events/s. --min-semi-space-size (V8 reads it at start-up only, so it is on
// the command line: lib/node-entry.ts GATEWAY_NODE_FLAGS) keeps it at 8 MB.
setFlagsFromString('--optimize-for-size')

const USAGE = `usage: gateway [--config file.yaml] [--set section.key=value ...]
  environment: GW_SECTION__KEY=value (e.g. GW_MQTT__PORT=1884); precedence: file < env < --set`

async function main (): Promise<void> {
  const { values } = parseArgs({ options: { config: { type: 'string' }, set: { type: 'string', multiple: true }, help: { type: 'boolean' } } })
  if (values.help) { console.log(USAGE); return }
  let config
  try {
    config = loadConfig({ file: values.config, env: process.env, sets: values.set })
  } catch (err) {
    if (err instanceof GatewayError) { console.error(`${err.code}: ${err.message}\n${USAGE}`); process.exit(2) }
    throw err
  }
  const log = createLogger(config.logLevel, config.gatewayId)
  const missingFlags = GATEWAY_NODE_FLAGS.filter((f) => !process.execArgv.includes(f))
  if (missingFlags.length > 0) log.warn({ missingFlags }, 'node started without the gateway\'s V8 flags (as in deploy/gateway/iot-gateway.service): more frequent GC pauses delay decisions')
  const gateway = new Gateway(config, log)
  const stop = (signal: string): void => {
    log.info({ signal }, 'shutting down')
    const deadline = setTimeout(() => { log.error({ timeoutMs: config.shutdownTimeoutMs }, 'shutdown deadline passed: exiting'); process.exit(1) }, config.shutdownTimeoutMs)
    deadline.unref()
    gateway.close().then(() => process.exit(0), (err) => { log.error({ err }, 'shutdown failed'); process.exit(1) })
  }
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGINT'))
  try {
    await gateway.start()
  } catch (err) {
    log.fatal({ err }, 'gateway failed to start')
    gateway.destroy(err as Error)
    // A data directory of a newer gateway stays refused however often systemd restarts us: exit 2,
    // as for a bad config (the unit's RestartPreventExitStatus), with the reason on stderr too.
    if (err instanceof GatewayError && err.code === 'GW_ERR_SCHEMA_NEWER') { console.error(`${err.code}: ${err.message}`); process.exit(2) }
    process.exit(1)
  }
}

void main()
