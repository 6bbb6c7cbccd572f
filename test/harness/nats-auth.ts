// The two ways the cloud's nats-server admits clients, for tests that must hold in both: user and
// password (deploy/nats/accounts.conf included in single.conf) and decentralized auth (operator mode:
// the config that `npm run fleet -- setup` writes, included in single.conf instead, with users'
// .creds from the same fleet). Each starts a real nats-server on an ephemeral port.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { credsAuthenticator } from '@nats-io/transport-node'
import { Fleet } from '../../cloud/fleet/fleet.ts'
import { startNats, tempDir, type NatsAuth, type NatsServer } from '../../devkit/index.ts'

const DEPLOY = new URL('../../deploy/nats/', import.meta.url)
export const readDeploy = (name: string): string => readFileSync(new URL(name, DEPLOY), 'utf8')

/** The password of `user` in accounts.conf (placeholders, documented there). */
export function passwordOf (accounts: string, user: string): string {
  const m = new RegExp(`user: "${user}"[,\\s]+password: "([^"]+)"`).exec(accounts)
  assert.ok(m, `accounts.conf has no user ${user}`)
  return m[1]
}

export const ACCOUNTS = readDeploy('accounts.conf')

/**
 * deploy/nats/single.conf with `auth` in place of its accounts.conf include (the harness writes the
 * config to a temporary directory) and without its store_dir: the harness gives -sd, and nats-server
 * refuses a store directory given twice. Its -p/-a/-m flags override port, host and monitoring.
 */
export function singleNodeConfig (auth = ACCOUNTS): string {
  const single = readDeploy('single.conf')
  const include = /^include "accounts\.conf"$/m
  const storeDir = /^\s*store_dir: .*$/m
  assert.match(single, include)
  assert.match(single, storeDir)
  return single.replace(storeDir, '').replace(include, () => auth)
}

/** What a gateway's uplink config gets to log in. */
export type UplinkAuth = { user: string, pass: string } | { credsFile: string }

export interface AuthMode {
  name: 'user/password' | 'JWT'
  nats: NatsServer
  /** The cloud's user (the whole IOT account). */
  cloud: NatsAuth
  /** Gateway site-a: a client's login, and the uplink config of a gateway. */
  siteA: { client: NatsAuth, uplink: UplinkAuth }
  /** How nats-server names site-a's user in its log lines ("User \"gw-site-a\"", "Nkey \"U...\""). */
  siteALogName: string
  /** JWT mode: the fleet (site-a and site-b enrolled). */
  fleet?: Fleet
}

const creds = (file: string): NatsAuth => ({ authenticator: credsAuthenticator(readFileSync(file)) })

/** A nats-server with accounts.conf (user/password), or `accounts` in its place. */
export async function startUserPassMode (defer: (fn: () => unknown) => void, accounts = ACCOUNTS): Promise<AuthMode> {
  const nats = await startNats({ config: singleNodeConfig(accounts) })
  defer(() => nats.cleanup())
  const siteA = { user: 'gw-site-a', pass: passwordOf(ACCOUNTS, 'gw-site-a') }
  return { name: 'user/password', nats, cloud: { user: 'iot-cloud', pass: passwordOf(ACCOUNTS, 'iot-cloud') }, siteA: { client: siteA, uplink: siteA }, siteALogName: 'User "gw-site-a"' }
}

/** A fleet set up in a temporary directory, site-a and site-b enrolled, and a nats-server in operator mode with its config. */
export async function startJwtMode (defer: (fn: () => unknown) => void, gateways = ['site-a', 'site-b']): Promise<AuthMode> {
  const dir = tempDir('fleet-')
  defer(() => dir.cleanup())
  const fleet = await Fleet.setup(join(dir.dir, 'fleet'), { resolverDir: join(dir.dir, 'resolver') })
  for (const id of gateways) await fleet.add(id)
  const paths = Fleet.paths(fleet.dir)
  const nats = await startNats({ config: singleNodeConfig(readFileSync(paths.serverConf, 'utf8')) })
  defer(() => nats.cleanup())
  const siteA = paths.gateway('site-a').creds
  return {
    name: 'JWT',
    nats,
    cloud: creds(paths.cloudCreds),
    siteA: { client: creds(siteA), uplink: { credsFile: siteA } },
    siteALogName: `Nkey "${fleet.active('site-a')!.userKey}"`,
    fleet,
  }
}

export const AUTH_MODES = [
  { name: 'user/password', start: startUserPassMode },
  { name: 'JWT', start: (defer: (fn: () => unknown) => void) => startJwtMode(defer) },
] as const
