// Cloud process entry: `node dist/cloud/main.js [--embedded-nats] [--set key=value ...]` (the build of
// `npm run build`; from the sources: `node --import tsx cloud/main.ts`).
// Provisions streams and KV, then runs the aggregator and the HTTP API.
import { parseArgs } from 'node:util'
import { Cloud } from './cloud.ts'
import { loadCloudConfig, type CloudConfig } from './config.ts'
import { startNats, type NatsServer } from '../lib/nats-launcher.ts'
import { CloudError } from './errors.ts'
import { partitionMappingsConfig } from '../proto/index.ts'
import { createLogger } from './log.ts'

const USAGE = `usage: cloud [--embedded-nats] [--set section.key=value ...]
  environment: IOT_CLOUD_SECTION__KEY=value (e.g. IOT_CLOUD_NATS__SERVERS=nats://a:4222,nats://b:4222); --set wins`

async function main (): Promise<void> {
  const { values } = parseArgs({ options: { 'embedded-nats': { type: 'boolean' }, set: { type: 'string', multiple: true }, help: { type: 'boolean' } } })
  if (values.help) { console.log(USAGE); return }
  let config: CloudConfig
  try {
    config = loadCloudConfig({ env: process.env, sets: values.set, base: values['embedded-nats'] ? { embeddedNats: true } : {} })
  } catch (err) {
    if (err instanceof CloudError) { console.error(`${err.code}: ${err.message}\n${USAGE}`); process.exit(2) }
    throw err
  }
  const log = createLogger(config.logLevel)
  let nats: NatsServer | null = null
  if (config.embeddedNats) {
    // The embedded server partitions the gateways' subjects as the aggregator expects.
    nats = await startNats({ config: partitionMappingsConfig(config.aggregator.partitions) })
    config = { ...config, nats: { ...config.nats, servers: [nats.url] } }
    log.info({ url: nats.url, storeDir: nats.storeDir }, 'embedded nats-server started')
  }
  const cloud = new Cloud(config, log)
  const stop = (signal: string): void => {
    log.info({ signal }, 'shutting down')
    const deadline = setTimeout(() => { log.error({ timeoutMs: config.shutdownTimeoutMs }, 'shutdown deadline passed: exiting'); process.exit(1) }, config.shutdownTimeoutMs)
    deadline.unref()
    cloud.close().then(async () => { await nats?.cleanup(); process.exit(0) }, (err) => { log.error({ err }, 'shutdown failed'); process.exit(1) })
  }
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGINT'))
  try {
    await cloud.start()
  } catch (err) {
    log.fatal({ err }, 'cloud failed to start')
    cloud.destroy(err as Error)
    await nats?.cleanup()
    // A configuration error found at start (a bad console.stateDir, an unreadable nats.credsFile) exits as one found at load.
    process.exit(err instanceof CloudError && err.code === 'CLOUD_ERR_CONFIG' ? 2 : 1)
  }
}

void main()
