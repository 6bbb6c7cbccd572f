// The JWTs of NATS decentralized auth (operator mode) for the IoT cloud: an operator, the system
// account, the IOT account (the streams and buckets live there) with a signing key, and users: the
// cloud's (the whole account) and one per gateway, confined to that gateway's own subjects
// (proto/gateway-permissions.ts, the same permissions as accounts.conf's user blocks). Pure: keys
// in, JWT text out; fleet.ts keeps the keys and the files.
import { encodeAccount, encodeOperator, encodeUser, fmtCreds, type Account } from '@nats-io/jwt'
import type { KeyPair } from '@nats-io/nkeys'
import { gatewayPermissions } from '../../proto/gateway-permissions.ts'

/** The account that holds the streams and buckets; its name in the JWT. */
export const IOT_ACCOUNT = 'IOT'
export const SYS_ACCOUNT = 'SYS'

/** The user name of gateway `gatewayId` (the same as in accounts.conf). */
export const gatewayUser = (gatewayId: string): string => `gw-${gatewayId}`

/** No limit on connections, subscriptions, payload, imports and exports (the servers' own limits apply). */
const OPEN_LIMITS = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 }

/** JetStream of the IOT account: the limits accounts.conf gives it (nats-server reads "1G" as 10^9 bytes). */
export const IOT_JETSTREAM = { mem_storage: 1e9, disk_storage: 50e9, streams: 64, consumer: 20000 }

export async function operatorJwt (name: string, operator: KeyPair, systemAccount: string): Promise<string> {
  return await encodeOperator(name, operator, { system_account: systemAccount })
}

export async function systemAccountJwt (sys: KeyPair, operator: KeyPair): Promise<string> {
  return await encodeAccount(SYS_ACCOUNT, sys, { limits: OPEN_LIMITS }, { signer: operator })
}

/**
 * The IOT account, signed by the operator. Users are signed by `signingKey` (its public key), never
 * by the account's own key, which can stay offline. `revocations`: user public key -> unix seconds;
 * every JWT of that user issued at or before it is refused, and its connections are closed.
 */
export async function iotAccountJwt (account: KeyPair | string, operator: KeyPair, signingKey: string, revocations: Record<string, number>): Promise<string> {
  const claims: Partial<Account> = {
    limits: { ...OPEN_LIMITS, ...IOT_JETSTREAM },
    signing_keys: [signingKey],
    ...(Object.keys(revocations).length > 0 ? { revocations } : {}),
  }
  return await encodeAccount(IOT_ACCOUNT, account, claims, { signer: operator })
}

/** A user of the IOT account with the whole account (the cloud: aggregator, console, provisioning). */
export async function cloudUserJwt (name: string, user: KeyPair, account: string, signingKey: KeyPair): Promise<string> {
  return await encodeUser(name, user, account, {}, { signer: signingKey })
}

/** The user of gateway `gatewayId`: publish its own subjects, subscribe its own inboxes, nothing else. */
export async function gatewayUserJwt (gatewayId: string, user: KeyPair, account: string, signingKey: KeyPair): Promise<string> {
  const p = gatewayPermissions(gatewayId)
  return await encodeUser(gatewayUser(gatewayId), user, account, {
    pub: { allow: p.publish.allow, deny: p.publish.deny },
    sub: { allow: p.subscribe.allow },
  }, { signer: signingKey })
}

/** A user of the system account (signed by it): sends account updates to the servers. */
export async function systemUserJwt (user: KeyPair, sys: KeyPair): Promise<string> {
  return await encodeUser('sys', user, sys)
}

/** The text of a .creds file: the user JWT and its seed (a secret: write it 0600). */
export function credsText (jwt: string, user: KeyPair): string {
  return new TextDecoder().decode(fmtCreds(jwt, user))
}

export interface ServerAuthConfig {
  operatorJwt: string
  systemAccount: string
  /** Account public key -> JWT, loaded into the resolver at start. */
  preload: Record<string, string>
  /** Where the resolver keeps the account JWTs it is sent (relative: to nats-server's working directory). */
  resolverDir: string
}

/**
 * The nats-server config of operator mode, to include in place of accounts.conf: the operator, the
 * system account, and a `full` resolver that stores account JWTs in a directory and takes updates
 * (a new gateway needs none; a revocation is one) from the system account, cluster-wide.
 */
export function serverAuthConfig (c: ServerAuthConfig): string {
  const preload = Object.entries(c.preload).map(([k, v]) => `  ${k}: ${v}`).join('\n')
  return `# NATS decentralized auth (operator mode) of the IoT cloud, written by \`npm run fleet -- setup\`:
# include it in the server config in place of accounts.conf. It holds public keys and signed JWTs
# only (no seeds). Gateways are enrolled with \`npm run fleet -- gateways add <id>\`: the server
# needs no change for a new gateway. A revocation updates the IOT account through the system account
# (\`npm run fleet -- gateways revoke <id>\` sends it), and this file's preload is rewritten too.
operator: ${c.operatorJwt}
system_account: ${c.systemAccount}
resolver: {
  type: full
  # Account JWTs the servers were sent (per server: give each node of one host its own).
  dir: ${JSON.stringify(c.resolverDir)}
  allow_delete: false
  interval: "2m"
  timeout: "1.9s"
}
resolver_preload: {
${preload}
}
`
}
