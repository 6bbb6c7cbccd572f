// The NATS permissions of one gateway: exactly the subjects a gateway uses (gateway/uplink/link.ts,
// gateway/uplink/replicator.ts, gateway/uplink/heartbeat.ts, gateway/uplink/cloud-channel.ts), and nothing of any other
// gateway. deploy/nats/accounts.conf holds blocks printed by this script; the permission test
// (test/nats-permissions.test.ts) checks that they match and that they hold against a real server.
//
//   node --import tsx deploy/nats/gateway-user.ts <gatewayId> [--password <pw>]
//
// prints a user block to paste into the `users` list of the IOT account (a random password when
// none is given), then reload the servers: `nats-server --signal reload` (or SIGHUP).
import { randomBytes } from 'node:crypto'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { GATEWAY_ID, GATEWAY_ID_RULE } from '../../proto/ids.ts'
import { CLOUD_BUCKETS, STREAMS, subjects } from '../../proto/subjects.ts'

/** Same rule as the gateway's `gatewayId` (gateway/config.ts): one subject token, no wildcards. */
export { GATEWAY_ID }

/** The durable consumer a gateway reads its commands with (gateway/uplink/cloud-channel.ts). */
export const commandsDurable = (gatewayId: string): string => `gw-${gatewayId}`

/** The reply-inbox prefix a gateway should use (client option `inboxPrefix`); see deploy/README.md. */
export const gatewayInboxPrefix = (gatewayId: string): string => `_INBOX_${gatewayId}`

export interface GatewayPermissions {
  publish: { allow: string[], deny: string[] }
  subscribe: { allow: string[] }
}

export interface PermissionOptions {
  /**
   * Also allow subscribing to the client's default `_INBOX.>`: only for clients that connect without
   * `inboxPrefix` (the gateway sets it). It lets a gateway subscribe to every reply inbox of the
   * account, so leave it off.
   */
  sharedInbox?: boolean
}

/** The publish and subscribe permissions of gateway `gatewayId`. */
export function gatewayPermissions (gatewayId: string, opts: PermissionOptions = {}): GatewayPermissions {
  if (!GATEWAY_ID.test(gatewayId)) throw new Error(`bad gateway id ${JSON.stringify(gatewayId)}: ${GATEWAY_ID_RULE}`)
  const cmd = STREAMS.commands.name
  const durable = commandsDurable(gatewayId)
  const kvStream = `KV_${CLOUD_BUCKETS.rules}`
  const ruleKey = `$KV.${CLOUD_BUCKETS.rules}.${gatewayId}`
  return {
    publish: {
      allow: [
        // Replication (JetStream publish; the ack comes back on the reply inbox) and heartbeats.
        // nats-server 2.9 checks a publish against the subject as mapped, so the partitioned form
        // (iot.<gw>.telemetry.<p>, README "Scaling out") is allowed too; it stays under the
        // gateway's own subjects (a gateway naming a partition itself only moves its own batches).
        subjects.telemetry(gatewayId),
        `${subjects.telemetry(gatewayId)}.*`,
        subjects.events(gatewayId),
        `${subjects.events(gatewayId)}.*`,
        subjects.status(gatewayId),
        // jetstreamManager() asks for the account's JetStream info first.
        '$JS.API.INFO',
        // Commands: its own durable pull consumer on COMMANDS. The create subject carries the filter
        // subject, and the server refuses a body whose filter differs, so the consumer cannot be
        // pointed at another gateway's commands.
        `$JS.API.CONSUMER.INFO.${cmd}.${durable}`,
        `$JS.API.CONSUMER.CREATE.${cmd}.${durable}.${subjects.commands(gatewayId)}`,
        `$JS.API.CONSUMER.MSG.NEXT.${cmd}.${durable}`,
        `$JS.ACK.${cmd}.${durable}.>`,
        // Rules: KV watch = an ordered push consumer with a random name, filtered (in the subject) on
        // its own key; flow-control replies of that consumer; direct get of its own key.
        `$JS.API.CONSUMER.CREATE.${kvStream}.*.${ruleKey}`,
        `$JS.FC.${kvStream}.*.*`,
        `$JS.API.DIRECT.GET.${kvStream}.${ruleKey}`,
      ],
      // Redundant with the allow list (anything not allowed is denied); kept so that a later, wider
      // allow cannot open these: commands (only the cloud queues them), raw KV writes, stream admin,
      // reads whose key is in the body (STREAM.MSG.GET, DIRECT.GET without a subject), legacy durable
      // create (filter only in the body), and deleting consumers (other gateways' watches). The
      // client tries a delete when a KV watch resets; refused, the old watch expires after 5 min.
      deny: ['iot.*.commands', '$KV.>', '$JS.API.STREAM.>', `$JS.API.DIRECT.GET.${kvStream}`, '$JS.API.CONSUMER.DURABLE.>', '$JS.API.CONSUMER.DELETE.>'],
    },
    // Replies only: JetStream acks, API responses, and what its consumers deliver (pulled commands,
    // watched rules) all arrive on its reply inboxes. No deny list: with an allow list of inboxes
    // only, it would add nothing.
    subscribe: {
      allow: [`${gatewayInboxPrefix(gatewayId)}.>`, ...(opts.sharedInbox ? ['_INBOX.>'] : [])],
    },
  }
}

const q = (s: string): string => JSON.stringify(s)
const list = (xs: string[]): string => `[${xs.map(q).join(', ')}]`

/** A user entry of nats-server's config for gateway `gatewayId`. */
export function gatewayUserBlock (gatewayId: string, password: string, opts: PermissionOptions = {}): string {
  const p = gatewayPermissions(gatewayId, opts)
  const allow = (xs: string[], indent: string): string => xs.map((s) => `${indent}${q(s)}`).join('\n')
  return [
    `      # gateway ${gatewayId} (generated by deploy/nats/gateway-user.ts ${gatewayId})`,
    '      {',
    `        user: ${q(`gw-${gatewayId}`)}`,
    `        password: ${q(password)}`,
    '        permissions: {',
    '          publish: {',
    '            allow: [',
    allow(p.publish.allow, '              '),
    '            ]',
    `            deny: ${list(p.publish.deny)}`,
    '          }',
    '          subscribe: {',
    `            allow: ${list(p.subscribe.allow)}`,
    '          }',
    '        }',
    '      }',
  ].join('\n')
}

const USAGE = `usage: node --import tsx deploy/nats/gateway-user.ts <gatewayId> [--password <pw>] [--shared-inbox]
  prints the user block of gateway <gatewayId> for the users list of the IOT account (accounts.conf)
  gatewayId       ${GATEWAY_ID_RULE}, as in the gateway config
  --password pw   its password (default: 24 random bytes, base64url); a bcrypt hash ("$2a$...") works too
  --shared-inbox  allow _INBOX.> instead of _INBOX_<gatewayId>.> (clients that cannot set an inbox prefix)`

/** Exit code: 0 printed (or --help), 2 usage error. */
export function main (argv: string[]): number {
  let parsed
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { password: { type: 'string' }, 'shared-inbox': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } })
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`)
    return 2
  }
  const { values, positionals } = parsed
  if (values.help) { console.log(USAGE); return 0 }
  const id = positionals[0]
  if (!id || !GATEWAY_ID.test(id) || positionals.length > 1) {
    console.error(USAGE)
    return 2
  }
  const password = values.password ?? randomBytes(24).toString('base64url')
  console.log(gatewayUserBlock(id, password, { sharedInbox: values['shared-inbox'] === true }))
  return 0
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) process.exit(main(process.argv.slice(2)))
