// Device registry from the command line. Works while the gateway runs (SQLite WAL).
//   npm run devices -- add <id> | list | disable <id> | enable <id> | rotate <id>  [--config file | --data-dir dir]
import { parseArgs } from 'node:util'
import { loadConfig } from './config.ts'
import { openDb } from './store/db.ts'
import { DeviceRegistry } from './store/device-registry.ts'
import { GatewayError } from './errors.ts'

const USAGE = `usage: devices <command> [deviceId] [--config file] [--data-dir dir] [--json]
  add <id>       register a device; prints its secret once
  rotate <id>    give a device a new secret; prints it once
  list           every registered device
  disable <id>   refuse the device's next connects
  enable <id>    accept it again
  --config file  the gateway's config file (its dataDir is used)
  --data-dir dir the gateway's data directory (wins over --config)
  --json         machine-readable output
  --help         this text`

const OPTIONS = { config: { type: 'string' }, 'data-dir': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean' } } as const

function main (): number {
  let args
  try {
    args = parseArgs({ allowPositionals: true, options: OPTIONS })
  } catch (err) {
    // An unknown or malformed option is a usage error: say which, print the usage, exit 2.
    console.error(`${(err as Error).message}\n${USAGE}`)
    return 2
  }
  const { values, positionals } = args
  if (values.help) { console.log(USAGE); return 0 }
  const [cmd, id] = positionals
  const dataDir = values['data-dir'] ?? loadConfig({ file: values.config, env: process.env }).dataDir
  let db
  try {
    db = openDb(dataDir)
  } catch (err) {
    if (err instanceof GatewayError) { console.error(`${err.code}: ${err.message}`); return 1 }
    throw err
  }
  const registry = new DeviceRegistry(db)
  const needId = (): string => { if (!id) throw new GatewayError('GW_ERR_DEVICE_ID', `${cmd} needs a device id`); return id }
  try {
    switch (cmd) {
      case 'add':
      case 'rotate': {
        const deviceId = needId()
        const secret = cmd === 'add' ? registry.add(deviceId) : registry.rotate(deviceId)
        if (values.json) console.log(JSON.stringify({ deviceId, secret }))
        else console.log(`device ${deviceId}: secret ${secret}\n(shown once; connect with username=${deviceId} password=<secret>)`)
        return 0
      }
      case 'list':
        for (const d of registry.list()) console.log(values.json ? JSON.stringify(d) : `${d.deviceId}\t${d.disabled ? 'disabled' : 'enabled'}\tcreated ${new Date(d.createdTs).toISOString()}`)
        return 0
      case 'disable':
      case 'enable':
        registry.setDisabled(needId(), cmd === 'disable')
        console.log(`device ${id} ${cmd}d (takes effect at its next connect)`)
        return 0
      default:
        console.error(USAGE)
        return 2
    }
  } catch (err) {
    if (err instanceof GatewayError) { console.error(`${err.code}: ${err.message}`); return 1 }
    throw err
  } finally {
    db.close()
  }
}

process.exitCode = main()
