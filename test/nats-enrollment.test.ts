// Gateway enrollment with NATS decentralized auth (cloud/fleet/, `npm run fleet`), against a real
// nats-server in operator mode: a gateway enrolled while the server runs logs in with the files the
// command wrote, the server unchanged; a revocation (one account update) closes its connection and
// keeps it out, while the other gateways go on; keys are written 0600 and never printed.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { connect, credsAuthenticator } from '@nats-io/transport-node'
import { parse as parseYaml } from 'yaml'
import { Fleet, type GatewayRecord } from '../cloud/fleet/fleet.ts'
import { loadConfig } from '../gateway/config.ts'
import { SOURCE_ROOT } from '../lib/node-entry.ts'
import { STREAMS } from '../proto/index.ts'
import { connectDevice, provision, readStream, startGateway, startNats, tempDir, waitFor } from '../devkit/index.ts'
import { deferrer } from './harness/cloud.ts'
import { singleNodeConfig } from './harness/nats-auth.ts'

/** `npm run fleet -- <args>` as an operator types it (from the sources: the suite runs them). */
const fleetCli = (args: string[]): { status: number | null, stdout: string, stderr: string } =>
  spawnSync(process.execPath, ['--import', 'tsx', join(SOURCE_ROOT, 'cloud/fleet/cli.ts'), ...args], { cwd: SOURCE_ROOT, encoding: 'utf8', timeout: 60000 })

/** Seeds begin with S and the key type (SO operator, SA account, SU user); none may be printed. */
const SEED = /\bS[OAU][A-Z2-7]{20,}/

const mode = (file: string): number => statSync(file).mode & 0o777

test('fleet enrollment: setup writes keys and .creds 0600 in a 0700 directory and prints no seed; add, list and revoke answer as documented', { timeout: 60000 }, async (t) => {
  const defer = deferrer(t)
  const tmp = tempDir('fleet-cli-')
  defer(() => tmp.cleanup())
  const dir = join(tmp.dir, 'fleet')
  const setup = fleetCli(['setup', '--dir', dir, '--servers', 'nats://cloud-1.example:4222,nats://cloud-2.example:4222'])
  assert.equal(setup.status, 0, setup.stderr)
  const add = fleetCli(['gateways', 'add', 'site-c', '--dir', dir])
  assert.equal(add.status, 0, add.stderr)
  for (const r of [setup, add]) assert.doesNotMatch(r.stdout + r.stderr, SEED, 'a seed was printed')

  const p = Fleet.paths(dir)
  assert.equal(mode(dir), 0o700)
  for (const f of ['operator', 'sys-account', 'iot-account', 'iot-signing']) assert.equal(mode(join(dir, 'keys', `${f}.nk`)), 0o600, f)
  for (const f of [p.cloudCreds, p.sysCreds, p.gateway('site-c').creds]) assert.equal(mode(f), 0o600, f)
  // Files that are not secret hold no seed either.
  for (const f of [p.fleet, p.serverConf, p.gateway('site-c').config]) assert.doesNotMatch(readFileSync(f, 'utf8'), SEED, f)
  assert.match(readFileSync(p.serverConf, 'utf8'), /^resolver: \{\n {2}type: full$/m)

  // gateway.yaml is a valid gateway config: its id, the servers of setup, the .creds where the unit reads it.
  const yaml = parseYaml(readFileSync(p.gateway('site-c').config, 'utf8')) as Record<string, unknown>
  const cfg = loadConfig({ file: p.gateway('site-c').config, env: {} })
  assert.equal(cfg.gatewayId, 'site-c')
  assert.deepEqual(cfg.uplink.servers, ['nats://cloud-1.example:4222', 'nats://cloud-2.example:4222'])
  assert.equal(cfg.uplink.credsFile, '/etc/iot-gateway/gateway.creds')
  assert.deepEqual(Object.keys(yaml), ['gatewayId', 'dataDir', 'uplink'])

  // Errors: a second setup, a second enrollment, a bad id, an unknown gateway, no fleet: exit 1 with the code.
  const cases: Array<[string[], RegExp]> = [
    [['setup', '--dir', dir], /^CLOUD_ERR_FLEET_EXISTS: /],
    [['gateways', 'add', 'site-c', '--dir', dir], /^CLOUD_ERR_FLEET_GATEWAY_ENROLLED: /],
    [['gateways', 'add', 'bad id!', '--dir', dir], /^CLOUD_ERR_FLEET_GATEWAY_ID: /],
    [['gateways', 'revoke', 'site-x', '--dir', dir], /^CLOUD_ERR_FLEET_GATEWAY_UNKNOWN: /],
    [['gateways', 'list', '--dir', join(tmp.dir, 'nothing')], /^CLOUD_ERR_FLEET_MISSING: /],
  ]
  for (const [args, code] of cases) {
    const r = fleetCli(args)
    assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`)
    assert.match(r.stderr, code, args.join(' '))
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'a stack trace')
  }
  const usage = fleetCli(['gateways', 'frobnicate', '--dir', dir])
  assert.equal(usage.status, 2)
  assert.match(usage.stderr, /^usage: /)
  const help = fleetCli(['--help'])
  assert.equal(help.status, 0)
  assert.match(help.stdout, /^usage: /)

  // Revoked while no server answers (a closed port on loopback): exit 1, recorded, and it says how to finish.
  const revoke = fleetCli(['gateways', 'revoke', 'site-c', '--dir', dir, '--servers', 'nats://127.0.0.1:1'])
  assert.equal(revoke.status, 1, revoke.stderr)
  assert.match(revoke.stderr, /recorded but the servers do not have it yet: `npm run fleet -- push/)
  assert.match(revoke.stderr, /^CLOUD_ERR_FLEET_PUSH: /m)
  assert.doesNotMatch(revoke.stderr, /\n\s+at /, 'a stack trace')
  const list = fleetCli(['gateways', 'list', '--dir', dir, '--json'])
  assert.equal(list.status, 0, list.stderr)
  const records = JSON.parse(list.stdout) as GatewayRecord[]
  assert.deepEqual(records.map((r) => [r.id, r.revokedAt !== undefined]), [['site-c', true]])
  // Enrolled again: new credentials, a new key; the old one stays revoked.
  assert.equal(fleetCli(['gateways', 'add', 'site-c', '--dir', dir]).status, 0)
  const again = Fleet.open(dir).list()
  assert.equal(again.length, 2)
  assert.notEqual(again[0].userKey, again[1].userKey)
  assert.equal(mode(p.gateway('site-c').creds), 0o600)
})

test('fleet enrollment (operator mode): a gateway enrolled while the server runs replicates with its .creds; revoking it closes its link and keeps it out; another gateway goes on', { timeout: 90000 }, async (t) => {
  const defer = deferrer(t)
  const tmp = tempDir('fleet-live-')
  defer(() => tmp.cleanup())
  const dir = join(tmp.dir, 'fleet')
  const fleet = await Fleet.setup(dir, { resolverDir: join(tmp.dir, 'resolver') })
  await fleet.add('site-a')
  const p = Fleet.paths(dir)
  const nats = await startNats({ config: singleNodeConfig(readFileSync(p.serverConf, 'utf8')) })
  defer(() => nats.cleanup())
  const cloud = { authenticator: credsAuthenticator(readFileSync(p.cloudCreds)) }
  await provision(nats.url, cloud)
  // Without credentials, nobody gets in.
  await assert.rejects(connect({ servers: nats.url, reconnect: false, timeout: 3000 }), /authorization/i)

  // site-b is enrolled now, with the server running; the server is not touched.
  const add = fleetCli(['gateways', 'add', 'site-b', '--dir', dir, '--servers', nats.url])
  assert.equal(add.status, 0, add.stderr)
  const uplink = (id: string): Record<string, unknown> => ({ ...loadConfig({ file: p.gateway(id).config, env: {} }).uplink, servers: [nats.url], credsFile: p.gateway(id).creds, reconnectMinMs: 50, reconnectMaxMs: 200 })
  const a = await startGateway({ gatewayId: 'site-a', mqtt: { allowAnonymous: true }, uplink: uplink('site-a') })
  defer(() => a.close())
  const b = await startGateway({ gatewayId: 'site-b', mqtt: { allowAnonymous: true }, uplink: uplink('site-b') })
  defer(() => b.close())
  await waitFor(() => a.gateway.uplink.state === 'up' && b.gateway.uplink.state === 'up', 'both gateways to log in with their .creds')

  const publish = async (port: number, device: string, n: number): Promise<void> => {
    const dev = await connectDevice(port, { clientId: device })
    try {
      for (let i = 0; i < n; i++) await dev.publishAsync(`devices/${device}/telemetry`, JSON.stringify({ temperature: 20 + i }), { qos: 1 })
    } finally {
      await dev.endAsync()
    }
  }
  await publish(a.ports.mqtt, 'a-1', 3)
  await publish(b.ports.mqtt, 'b-1', 3)
  await waitFor(() => a.gateway.uplink.ackedEvents === 3 && b.gateway.uplink.ackedEvents === 3, 'both gateways to replicate')

  // Revoked: one account update, sent by the command; the server closes site-b's connection.
  const revoke = fleetCli(['gateways', 'revoke', 'site-b', '--dir', dir, '--servers', nats.url])
  assert.equal(revoke.status, 0, revoke.stderr)
  assert.match(revoke.stdout, /servers: /)
  await waitFor(() => b.gateway.uplink.state !== 'up', 'the server to close the revoked gateway\'s link', 15000)
  // It keeps trying, is refused, and says so (/readyz, the heartbeat's link state, the metrics).
  await waitFor(() => b.gateway.uplink.state === 'refused', 'the revoked gateway to report its link refused', 15000)
  assert.match(b.gateway.uplink.lastError, /authorization/i)
  await assert.rejects(connect({ servers: nats.url, authenticator: credsAuthenticator(readFileSync(p.gateway('site-b').creds)), reconnect: false, timeout: 3000 }), /authorization|revoked/i)
  // What site-b accepts now stays buffered at the edge; site-a goes on.
  await publish(b.ports.mqtt, 'b-1', 2)
  await publish(a.ports.mqtt, 'a-1', 2)
  await waitFor(() => a.gateway.uplink.ackedEvents === 5, 'site-a to go on replicating')
  assert.equal(b.gateway.uplink.state, 'refused')
  assert.equal(b.gateway.outbox.stats().events, 2)
  const acc = await readStream(nats.url, STREAMS.telemetry.name, cloud)
  assert.deepEqual([...acc.events.get('site-b/b-1')?.keys() ?? []].sort(), [1, 2, 3])
  assert.deepEqual([...acc.events.get('site-a/a-1')?.keys() ?? []].sort(), [1, 2, 3, 4, 5])

  // `push` sends the account as it stands again (what finishes a revocation that could not be sent).
  const push = fleetCli(['push', '--dir', dir, '--servers', nats.url])
  assert.equal(push.status, 0, push.stderr)
  assert.match(push.stdout, /^servers: /m)

  // The revocation holds across a server restart: the resolver's store keeps the newer account JWT
  // (the config the server restarts with still preloads the one from before the revocation).
  await nats.restart()
  await waitFor(() => a.gateway.uplink.state === 'up', 'site-a to log in again after the restart', 20000)
  await assert.rejects(connect({ servers: nats.url, authenticator: credsAuthenticator(readFileSync(p.gateway('site-b').creds)), reconnect: false, timeout: 3000 }), /authorization|revoked/i)
})
