// Upgrading a gateway in place (README, "Upgrading a gateway"): the new build started on the old data
// directory keeps its outbox, device registry and rules and replicates what was buffered; a data
// directory of a newer gateway is refused with a clear error, and left as it was. The gateway runs
// as production runs it: the compiled build (`npm run build`, dist/) under plain node.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import Database from 'better-sqlite3'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { GatewayError, openDb } from '../gateway/index.ts'
import { SCHEMA_VERSION } from '../gateway/store/db.ts'
import { DeviceRegistry } from '../gateway/store/device-registry.ts'
import { LANE_TELEMETRY } from '../gateway/store/outbox.ts'
import { nodeArgsFor, SOURCE_ROOT } from '../lib/node-entry.ts'
import { STREAMS, v1 } from '../proto/index.ts'
import { assertExactlyOnce, connectDevice, provision, readStream, spawnGateway, startNats, tempDir, waitFor } from '../devkit/index.ts'
import { queryOutbox } from './harness/outbox-reader.ts'
import { v2Database } from './harness/old-schema.ts'
import { deferrer } from './harness/cloud.ts'

const RULES = `
version: upgrade-1
rules:
  - id: room-warm
    devices: [room-1]
    when: { reading: temperature, above: 30 }
    then:
      - command: { device: fan-1, name: fan, args: { on: true } }
`

/** A version-2 row of room-1 (device id in the body), reading n = seq. */
const oldRow = (seq: number): { lane: typeof LANE_TELEMETRY, body: Uint8Array } => ({
  lane: LANE_TELEMETRY,
  body: v1.TelemetryEvent.encode({ deviceId: 'room-1', seq, eventTsMs: 1_700_000_000_000 + seq, ingestTsMs: 1_700_000_000_500 + seq, readings: [{ name: 'n', value: seq }] }).finish(),
})

const sha256 = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex')

test('upgrade in place: the compiled gateway on a version-2 data directory keeps its outbox, registry and rules, and replicates what was buffered exactly once', { timeout: 90000 }, async (t) => {
  const defer = deferrer(t)
  const data = tempDir('gw-upgrade-')
  defer(() => data.cleanup())
  // What the old gateway left: 3 buffered readings of room-1, and two registered devices.
  v2Database(data.dir, [oldRow(1), oldRow(2), oldRow(3)], { 'room-1': 3 })
  // Opened without openDb, which would migrate it: the registry's table is the same in both versions.
  const db = new Database(join(data.dir, 'gateway.db'))
  const secrets = { 'room-1': '', 'fan-1': '' }
  const registry = new DeviceRegistry(db)
  for (const id of Object.keys(secrets) as Array<keyof typeof secrets>) secrets[id] = registry.add(id)
  db.close()
  assert.equal(queryOutbox<{ v: number }>(data.dir, 'SELECT user_version AS v FROM pragma_user_version')[0].v, 2)
  const rulesFile = join(data.dir, 'rules.yaml')
  writeFileSync(rulesFile, RULES)

  const nats = await startNats()
  defer(() => nats.cleanup())
  await provision(nats.url)
  const gw = await spawnGateway(data.dir, ['gatewayId=site-up', `uplink.servers=${nats.url}`, `rules.file=${rulesFile}`, 'uplink.reconnectMinMs=50'], { runtime: 'compiled' })
  defer(() => gw.kill())
  // Plain node on the build: no loader in the process.
  const cmdline = readFileSync(`/proc/${gw.child.pid!}/cmdline`, 'utf8').split('\0')
  assert.ok(cmdline.some((a) => a.endsWith(join('dist', 'gateway', 'main.js'))), cmdline.join(' '))
  assert.ok(!cmdline.includes('tsx') && !cmdline.includes('--import'), cmdline.join(' '))

  // The registry still admits both devices; the rules still command the fan.
  const fan = await connectDevice(gw.ports.mqtt, { username: 'fan-1', password: secrets['fan-1'], clean: false })
  defer(() => fan.end(true))
  const commands: string[] = []
  fan.on('message', (_topic, payload) => commands.push((JSON.parse(payload.toString()) as { name: string }).name))
  await fan.subscribeAsync('devices/fan-1/commands', { qos: 1 })
  const room = await connectDevice(gw.ports.mqtt, { username: 'room-1', password: secrets['room-1'] })
  defer(() => room.end(true))
  for (const [n, temperature] of [[4, 25], [5, 35]]) await room.publishAsync('devices/room-1/telemetry', JSON.stringify({ temperature, n }), { qos: 1 })
  await waitFor(() => commands.includes('fan'), 'the rule to command the fan')

  // The buffered readings and the new ones, each once, numbered on from where the old gateway stopped.
  await waitFor(async () => {
    const acc = await readStream(nats.url, STREAMS.telemetry.name)
    return (acc.events.get('site-up/room-1')?.size ?? 0) >= 5
  }, 'the buffered and the new readings to replicate', 30000)
  assertExactlyOnce(await readStream(nats.url, STREAMS.telemetry.name), 'site-up', new Map([['room-1', [1, 2, 3, 4, 5]]]))
  assert.equal(queryOutbox<{ v: number }>(data.dir, 'SELECT user_version AS v FROM pragma_user_version')[0].v, SCHEMA_VERSION)
})

test('upgrade in place: a gateway.db written by a newer gateway is refused (GW_ERR_SCHEMA_NEWER, exit 2) and left byte for byte as it was', { timeout: 60000 }, async (t) => {
  const defer = deferrer(t)
  const data = tempDir('gw-newer-')
  defer(() => data.cleanup())
  const db = openDb(data.dir)
  new DeviceRegistry(db).add('room-1')
  db.pragma(`user_version = ${SCHEMA_VERSION + 1}`)
  db.pragma('journal_mode = DELETE') // one file to compare, no WAL beside it
  db.close()
  const file = join(data.dir, 'gateway.db')
  const before = sha256(file)

  // In process: openDb says why.
  assert.throws(() => openDb(data.dir), (err: unknown) => err instanceof GatewayError && err.code === 'GW_ERR_SCHEMA_NEWER' && err.retryable === false &&
    err.message.includes(`schema version ${SCHEMA_VERSION + 1}, newer than this gateway's ${SCHEMA_VERSION}`))
  // The compiled gateway exits 2 (systemd does not restart it: RestartPreventExitStatus=2) with the code on stderr.
  await assert.rejects(spawnGateway(data.dir, ['gatewayId=site-new'], { runtime: 'compiled' }), /gateway exited \(2\)[^]*GW_ERR_SCHEMA_NEWER/)
  // The devices CLI too, without a stack trace.
  const cli = spawnSync(process.execPath, [...nodeArgsFor('gateway/cli.ts', 'compiled'), 'list', '--data-dir', data.dir], { cwd: SOURCE_ROOT, encoding: 'utf8', timeout: 30000 })
  assert.equal(cli.status, 1, cli.stderr)
  assert.match(cli.stderr, /^GW_ERR_SCHEMA_NEWER: /)
  assert.doesNotMatch(cli.stderr, /\n\s+at /)

  assert.equal(sha256(file), before, 'gateway.db changed')
  assert.ok(!existsSync(`${file}-wal`), 'a WAL was created')
})
