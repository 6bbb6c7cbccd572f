// `npm run fleet -- <command>` (compiled: `node dist/cloud/fleet/cli.js <command>`): the fleet's
// NATS decentralized auth. Prints public keys and paths, never a seed. Exit codes: 0 done, 1 failed
// (the message says why), 2 usage.
import { parseArgs } from 'node:util'
import { CloudError } from '../errors.ts'
import { Fleet } from './fleet.ts'
import { pushAccountJwt } from './push.ts'
import { isMain } from '../../lib/is-main.ts'

const USAGE = `usage: npm run fleet -- <command> [--dir <fleet dir>] ...
  setup [--servers url,...] [--operator name] [--resolver-dir dir]
        creates the operator, the SYS and IOT accounts, the IOT signing key, the cloud's and a system
        user's .creds, and nats/operator.conf (include it in the server config instead of accounts.conf)
  gateways add <id> [--servers url,...]
        enrolls gateway <id>: gateways/<id>/gateway.creds (0600) and gateways/<id>/gateway.yaml
  gateways revoke <id> [--servers url,...] [--no-push]
        revokes it: the IOT account is signed again and sent to the servers (and written to operator.conf)
  gateways list [--json]
  push [--servers url,...]
        sends the IOT account as it stands to the servers again (after a revocation that could not be sent)
  --dir      the fleet directory: keys (0600), JWTs, .creds (default .data/fleet; keep it off the servers and backed up)
  --servers  NATS URLs, comma separated (default: those given at setup, nats://127.0.0.1:4222)`

const list = (s: string | undefined): string[] | undefined => s === undefined ? undefined : s.split(',').map((x) => x.trim()).filter(Boolean)

async function run (argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      dir: { type: 'string', default: '.data/fleet' },
      servers: { type: 'string' },
      operator: { type: 'string' },
      'resolver-dir': { type: 'string' },
      'no-push': { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) { console.log(USAGE); return 0 }
  const [cmd, sub, id, ...rest] = positionals
  const dir = values.dir
  const servers = list(values.servers)
  if (cmd === 'setup' && sub === undefined) {
    const fleet = await Fleet.setup(dir, { servers, operatorName: values.operator, resolverDir: values['resolver-dir'] })
    const p = Fleet.paths(dir)
    const i = fleet.info
    console.log(`fleet set up in ${dir}
  operator ${i.operator.name} ${i.operator.key}
  account SYS ${i.accounts.SYS}
  account IOT ${i.accounts.IOT} (signing key ${i.signingKey})
  server config  ${p.serverConf} (include it in place of accounts.conf)
  cloud creds    ${p.cloudCreds} (IOT_CLOUD_NATS__CREDS_FILE)
  system creds   ${p.sysCreds} (sends revocations)
  keys           ${dir}/keys/*.nk (0600: back them up, keep them off the servers)`)
    return 0
  }
  if (cmd === 'gateways' && sub === 'add' && id !== undefined && rest.length === 0) {
    const r = await Fleet.open(dir).add(id, servers)
    console.log(`gateway ${id} enrolled: user ${r.record.userKey}
  ${r.creds} (0600: its key; install as /etc/iot-gateway/gateway.creds)
  ${r.config}`)
    return 0
  }
  if (cmd === 'gateways' && sub === 'revoke' && id !== undefined && rest.length === 0) {
    const fleet = Fleet.open(dir)
    const r = await fleet.revoke(id)
    console.log(`gateway ${id} revoked (user ${r.record.userKey}); ${Fleet.paths(dir).serverConf} updated`)
    if (values['no-push']) {
      console.log('not sent to the servers (--no-push): run `npm run fleet -- push` to apply it')
      return 0
    }
    try {
      console.log(`servers: ${await pushAccountJwt(servers ?? fleet.info.servers, Fleet.paths(dir).sysCreds, r.accountJwt)}`)
    } catch (err) {
      // Recorded (fleet.json, operator.conf) but not in force: say how to finish it.
      if (err instanceof CloudError) console.error(`the revocation is recorded but the servers do not have it yet: \`npm run fleet -- push --dir ${dir}\` sends it`)
      throw err
    }
    return 0
  }
  if (cmd === 'gateways' && sub === 'list' && id === undefined) {
    const gateways = Fleet.open(dir).list()
    if (values.json) { console.log(JSON.stringify(gateways, null, 2)); return 0 }
    if (gateways.length === 0) { console.log('no gateway enrolled'); return 0 }
    const rows = gateways.map((g) => [g.id, g.revokedAt ? 'revoked' : 'active', g.issuedAt, g.revokedAt ?? '-', g.userKey])
    const head = ['gateway', 'state', 'issued', 'revoked', 'user key']
    const widths = head.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)))
    for (const r of [head, ...rows]) console.log(r.map((x, c) => x.padEnd(widths[c])).join('  ').trimEnd())
    return 0
  }
  if (cmd === 'push' && sub === undefined) {
    const fleet = Fleet.open(dir)
    console.log(`servers: ${await pushAccountJwt(servers ?? fleet.info.servers, Fleet.paths(dir).sysCreds, await fleet.accountJwt())}`)
    return 0
  }
  console.error(USAGE)
  return 2
}

/** Exit code: 0 done (or --help), 1 failed, 2 usage. */
export async function main (argv: string[]): Promise<number> {
  try {
    return await run(argv)
  } catch (err) {
    if (err instanceof CloudError) { console.error(`${err.code}: ${err.message}`); return 1 }
    if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) { console.error(`${(err as Error).message}\n${USAGE}`); return 2 }
    throw err
  }
}

if (isMain(import.meta.url)) process.exitCode = await main(process.argv.slice(2))
