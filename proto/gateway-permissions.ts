// The NATS permissions of one gateway: exactly the subjects a gateway uses (gateway/uplink/link.ts,
// gateway/uplink/replicator.ts, gateway/uplink/heartbeat.ts, gateway/uplink/cloud-channel.ts), and
// nothing of any other gateway. Two ways carry them to the server: the user blocks of
// deploy/nats/accounts.conf (deploy/nats/gateway-user.ts prints them) and the user JWTs that the
// cloud's enrollment signs (cloud/fleet/). test/nats-permissions.test.ts holds both against a real server.
import { GATEWAY_ID, GATEWAY_ID_RULE } from './ids.ts'
import { CLOUD_BUCKETS, STREAMS, subjects } from './subjects.ts'

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
