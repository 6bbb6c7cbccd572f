// Gateway enrollment with NATS decentralized auth: a fleet directory that holds the operator's and
// the accounts' keys, the JWTs, the server config (operator mode) and one .creds file plus one
// gateway.yaml per enrolled gateway. Seeds are written 0600 in a 0700 directory and never printed;
// what is printed or returned names public keys and paths only.
//
//   <dir>/fleet.json                    public keys, servers, enrolled gateways (no secrets)
//   <dir>/keys/*.nk                     seeds: operator, system account, IOT account, its signing key
//   <dir>/creds/iot-cloud.creds         the cloud's user (whole IOT account)
//   <dir>/creds/sys.creds               a system account user: sends account updates (revocations)
//   <dir>/nats/operator.conf            include it in the nats-server config instead of accounts.conf
//   <dir>/gateways/<id>/gateway.creds   that gateway's user JWT and seed, for /etc/iot-gateway/
//   <dir>/gateways/<id>/gateway.yaml    that gateway's config (id, servers, credsFile)
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { createAccount, createOperator, createUser, fromSeed, type KeyPair } from '@nats-io/nkeys'
import { stringify } from 'yaml'
import { GATEWAY_ID, GATEWAY_ID_RULE } from '../../proto/ids.ts'
import { CloudError } from '../errors.ts'
import { cloudUserJwt, credsText, gatewayUser, gatewayUserJwt, iotAccountJwt, operatorJwt, serverAuthConfig, systemAccountJwt, systemUserJwt } from './claims.ts'

export interface GatewayRecord {
  id: string
  /** The public key of its user (U...): what a revocation names. */
  userKey: string
  issuedAt: string
  revokedAt?: string
}

export interface FleetFile {
  version: 1
  operator: { name: string, key: string }
  accounts: { SYS: string, IOT: string }
  /** The IOT account's signing key (public): it signs every gateway's user JWT. */
  signingKey: string
  /** NATS URLs the gateways are given (gateway.yaml) and revocations are sent to. */
  servers: string[]
  resolverDir: string
  /** Every enrollment, oldest first; a gateway enrolled again after a revocation has two. */
  gateways: GatewayRecord[]
}

export interface SetupOptions { operatorName?: string, servers?: string[], resolverDir?: string }

const SEEDS = ['operator', 'sys-account', 'iot-account', 'iot-signing'] as const
type SeedName = typeof SEEDS[number]

/** A file only its owner can read: created 0600, and made 0600 if it was there already. */
function writeSecret (path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  const tmp = `${path}.tmp-${process.pid}`
  writeFileSync(tmp, text, { mode: 0o600 })
  chmodSync(tmp, 0o600)
  renameSync(tmp, path)
}

function writePublic (path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  const tmp = `${path}.tmp-${process.pid}`
  writeFileSync(tmp, text, { mode: 0o644 })
  renameSync(tmp, path)
}

export class Fleet {
  private constructor (readonly dir: string, private data: FleetFile) {}

  /** The paths of the files of a fleet directory (and of one gateway's). */
  static paths (dir: string): { fleet: string, serverConf: string, cloudCreds: string, sysCreds: string, gateway: (id: string) => { creds: string, config: string } } {
    return {
      fleet: join(dir, 'fleet.json'),
      serverConf: join(dir, 'nats', 'operator.conf'),
      cloudCreds: join(dir, 'creds', 'iot-cloud.creds'),
      sysCreds: join(dir, 'creds', 'sys.creds'),
      gateway: (id) => ({ creds: join(dir, 'gateways', id, 'gateway.creds'), config: join(dir, 'gateways', id, 'gateway.yaml') }),
    }
  }

  /**
   * Creates the operator, the system and IOT accounts, the IOT signing key, the cloud's and a system
   * user's .creds, and the server config. Refuses a directory that already holds a fleet.
   */
  static async setup (dir: string, opts: SetupOptions = {}): Promise<Fleet> {
    const p = Fleet.paths(dir)
    if (existsSync(p.fleet)) throw new CloudError('CLOUD_ERR_FLEET_EXISTS', `${p.fleet} exists: this directory already holds a fleet (its keys would be lost)`)
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    chmodSync(dir, 0o700)
    const keys: Record<SeedName, KeyPair> = { operator: createOperator(), 'sys-account': createAccount(), 'iot-account': createAccount(), 'iot-signing': createAccount() }
    for (const name of SEEDS) writeSecret(join(dir, 'keys', `${name}.nk`), new TextDecoder().decode(keys[name].getSeed()) + '\n')
    const data: FleetFile = {
      version: 1,
      operator: { name: opts.operatorName ?? 'iot-operator', key: keys.operator.getPublicKey() },
      accounts: { SYS: keys['sys-account'].getPublicKey(), IOT: keys['iot-account'].getPublicKey() },
      signingKey: keys['iot-signing'].getPublicKey(),
      servers: opts.servers ?? ['nats://127.0.0.1:4222'],
      resolverDir: opts.resolverDir ?? './data/jwt',
      gateways: [],
    }
    const fleet = new Fleet(dir, data)
    const cloud = createUser()
    writeSecret(p.cloudCreds, credsText(await cloudUserJwt('iot-cloud', cloud, data.accounts.IOT, keys['iot-signing']), cloud))
    const sys = createUser()
    writeSecret(p.sysCreds, credsText(await systemUserJwt(sys, keys['sys-account']), sys))
    await fleet.writeServerConfig()
    fleet.save()
    return fleet
  }

  /** Opens the fleet of `dir`; a clear error when there is none. */
  static open (dir: string): Fleet {
    const p = Fleet.paths(dir)
    let data: FleetFile
    try {
      data = JSON.parse(readFileSync(p.fleet, 'utf8')) as FleetFile
    } catch (err) {
      throw new CloudError('CLOUD_ERR_FLEET_MISSING', `no fleet in ${dir} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): run \`npm run fleet -- setup --dir ${dir}\` first`, { cause: err })
    }
    if (data.version !== 1) throw new CloudError('CLOUD_ERR_FLEET_MISSING', `${p.fleet}: version ${String(data.version)} is not one this code reads (1)`)
    return new Fleet(dir, data)
  }

  get info (): Readonly<FleetFile> { return this.data }

  /** Every enrollment, oldest first. */
  list (): GatewayRecord[] { return this.data.gateways.map((g) => ({ ...g })) }

  /** The enrollment of `id` that is not revoked, if any. */
  active (id: string): GatewayRecord | undefined { return this.data.gateways.find((g) => g.id === id && g.revokedAt === undefined) }

  /**
   * Enrolls gateway `id`: a new user key and JWT (signed by the IOT signing key, permissions confined
   * to its own subjects), written as gateway.creds (0600) with a gateway.yaml beside it. The servers
   * need nothing: they trust what the signing key signs. `servers`: the URLs its config gets.
   */
  async add (id: string, servers = this.data.servers): Promise<{ record: GatewayRecord, creds: string, config: string }> {
    if (!GATEWAY_ID.test(id)) throw new CloudError('CLOUD_ERR_FLEET_GATEWAY_ID', `bad gateway id ${JSON.stringify(id)}: ${GATEWAY_ID_RULE}`)
    if (this.active(id)) throw new CloudError('CLOUD_ERR_FLEET_GATEWAY_ENROLLED', `gateway ${id} is enrolled already (revoke it first to issue new credentials)`)
    const user = createUser()
    const jwt = await gatewayUserJwt(id, user, this.data.accounts.IOT, this.seed('iot-signing'))
    const record: GatewayRecord = { id, userKey: user.getPublicKey(), issuedAt: new Date().toISOString() }
    const files = Fleet.paths(this.dir).gateway(id)
    writeSecret(files.creds, credsText(jwt, user))
    writePublic(files.config, gatewayYaml(id, servers, record))
    this.data.gateways.push(record)
    this.save()
    return { record, ...files }
  }

  /**
   * Revokes gateway `id`: its user key goes into the IOT account's revocations, the account JWT is
   * signed again and written to the server config. Returns the new account JWT, for push().
   */
  async revoke (id: string): Promise<{ record: GatewayRecord, accountJwt: string }> {
    const record = this.active(id)
    if (!record) throw new CloudError('CLOUD_ERR_FLEET_GATEWAY_UNKNOWN', `gateway ${id} is not enrolled (or is revoked already): see \`npm run fleet -- gateways list\``)
    record.revokedAt = new Date().toISOString()
    const accountJwt = await this.writeServerConfig()
    this.save()
    return { record: { ...record }, accountJwt }
  }

  /** The IOT account's JWT as it stands (with every revocation). */
  async accountJwt (): Promise<string> {
    const revocations: Record<string, number> = {}
    // A revocation holds for JWTs issued at or before its time: the second after the revocation
    // covers a JWT signed in the same second.
    for (const g of this.data.gateways) if (g.revokedAt) revocations[g.userKey] = Math.floor(Date.parse(g.revokedAt) / 1000) + 1
    return await iotAccountJwt(this.data.accounts.IOT, this.seed('operator'), this.data.signingKey, revocations)
  }

  /** Writes nats/operator.conf (operator, system account, resolver, both accounts preloaded); returns the IOT account JWT. */
  async writeServerConfig (): Promise<string> {
    const operator = this.seed('operator')
    const iot = await this.accountJwt()
    writePublic(Fleet.paths(this.dir).serverConf, serverAuthConfig({
      operatorJwt: await operatorJwt(this.data.operator.name, operator, this.data.accounts.SYS),
      systemAccount: this.data.accounts.SYS,
      preload: { [this.data.accounts.SYS]: await systemAccountJwt(this.seed('sys-account'), operator), [this.data.accounts.IOT]: iot },
      resolverDir: this.data.resolverDir,
    }))
    return iot
  }

  private seed (name: SeedName): KeyPair {
    const path = join(this.dir, 'keys', `${name}.nk`)
    try {
      return fromSeed(new TextEncoder().encode(readFileSync(path, 'utf8').trim()))
    } catch (err) {
      throw new CloudError('CLOUD_ERR_FLEET_MISSING', `cannot read the ${name} key (${path}): ${(err as NodeJS.ErrnoException).code ?? 'not a seed'}`, { cause: err })
    }
  }

  private save (): void {
    writePublic(Fleet.paths(this.dir).fleet, JSON.stringify(this.data, null, 2) + '\n')
  }
}

/** The gateway.yaml of an enrolled gateway: its id, the servers and its .creds file where the systemd unit reads it. */
function gatewayYaml (id: string, servers: string[], record: GatewayRecord): string {
  return `# Gateway ${id}, enrolled ${record.issuedAt} (NATS user ${gatewayUser(id)}, key ${record.userKey}).
# On the gateway box (deploy/README.md, "A gateway box"):
#   install -o iot-gateway -g iot-gateway -m 0600 gateway.creds /etc/iot-gateway/gateway.creds
#   install -m 0644 gateway.yaml /etc/iot-gateway/gateway.yaml
# Every other key is optional: deploy/gateway/gateway.yaml and README.md list them.
${stringify({ gatewayId: id, dataDir: '/var/lib/iot-gateway', uplink: { servers, credsFile: '/etc/iot-gateway/gateway.creds' } })}`
}
