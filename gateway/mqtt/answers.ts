// What the broker answers a device it refuses, in both protocols: the reason counted in
// gateway_rejected_total{reason}, the MQTT 3.1.1 answer and the MQTT 5 reason code. aedes 2 lets
// authenticate choose only a 3.1.1 return code and authorizePublish only 0x87; the patch it carries
// (patches/aedes+2.0.0-beta.1.patch) reads `reasonCode` and `disconnectReasonCode` off the error.
// The README's device contract table is this file in prose.
import type { AuthenticateError } from 'aedes'
import mqttPacket from 'mqtt-packet'
import { GatewayError, type GatewayErrorCode } from '../errors.ts'

/** The MQTT 5 reason codes the gateway answers with (MQTT 5.0 section 2.4). */
export const RC = {
  UNSPECIFIED_ERROR: 0x80,
  MALFORMED_PACKET: 0x81,
  CLIENT_ID_NOT_VALID: 0x85,
  BAD_USERNAME_OR_PASSWORD: 0x86,
  NOT_AUTHORIZED: 0x87,
  SERVER_UNAVAILABLE: 0x88,
  TOPIC_NAME_INVALID: 0x90,
  RECEIVE_MAXIMUM_EXCEEDED: 0x93,
  PACKET_TOO_LARGE: 0x95,
  MESSAGE_RATE_TOO_HIGH: 0x96,
  QUOTA_EXCEEDED: 0x97,
  PAYLOAD_FORMAT_INVALID: 0x99,
} as const

/** Why a CONNECT is refused (also the label of gateway_rejected_total). */
export type ConnectRefusal =
  | 'bad_credentials' | 'no_credentials' | 'unknown_device' | 'disabled_device' | 'certificate_mismatch'
  | 'bad_client_id' | 'client_id_too_long' | 'client_id_not_bound'
  | 'too_many_connections' | 'device_connection_limit' | 'shutting_down'

// The 3.1.1 CONNACK return code (2 identifier rejected, 3 server unavailable, 4 bad user name or
// password, 5 not authorized) and the MQTT 5 reason code of each refusal.
const CONNECT: Record<ConnectRefusal, { returnCode: 2 | 3 | 4 | 5, reasonCode: number }> = {
  bad_credentials: { returnCode: 4, reasonCode: RC.BAD_USERNAME_OR_PASSWORD },
  no_credentials: { returnCode: 5, reasonCode: RC.NOT_AUTHORIZED },
  unknown_device: { returnCode: 5, reasonCode: RC.NOT_AUTHORIZED },
  disabled_device: { returnCode: 5, reasonCode: RC.NOT_AUTHORIZED },
  certificate_mismatch: { returnCode: 5, reasonCode: RC.NOT_AUTHORIZED },
  bad_client_id: { returnCode: 2, reasonCode: RC.CLIENT_ID_NOT_VALID },
  client_id_too_long: { returnCode: 2, reasonCode: RC.CLIENT_ID_NOT_VALID },
  client_id_not_bound: { returnCode: 2, reasonCode: RC.CLIENT_ID_NOT_VALID },
  too_many_connections: { returnCode: 3, reasonCode: RC.QUOTA_EXCEEDED },
  device_connection_limit: { returnCode: 3, reasonCode: RC.QUOTA_EXCEEDED },
  shutting_down: { returnCode: 3, reasonCode: RC.SERVER_UNAVAILABLE },
}

/** The error authenticate() answers a refused CONNECT with: CONNACK with a return code (3.1.1) or reason code (5). */
export function connectRefused (reason: ConnectRefusal, message: string): AuthenticateError {
  const a = CONNECT[reason]
  return Object.assign(new Error(message), { returnCode: a.returnCode, reasonCode: a.reasonCode, counted: true }) as AuthenticateError
}

/**
 * The DISCONNECT an MQTT 5 device gets for a packet that does not parse (0x81 Malformed Packet,
 * with the parser's reason), written just before the connection closes: aedes closes it without a word.
 */
export function malformedDisconnect (err: Error): Buffer {
  return mqttPacket.generate({ cmd: 'disconnect', reasonCode: RC.MALFORMED_PACKET, properties: { reasonString: `malformed packet: ${err.message.slice(0, 100)}` } }, { protocolVersion: 5 })
}

/** What aedes or its packet parser reports on a connection (its clientError / connectionError events). */
export type BrokerError = Error & { counted?: boolean, malformed?: boolean, errorCode?: number, reasonCode?: number, size?: number }

/**
 * The reason a connection error is a refusal to count (gateway_rejected_total), or null: already
 * counted where it was refused (the gateway's own), or no refusal at all (a reset, a keep-alive
 * timeout). aedes answers these itself: a CONNACK it refuses before authenticate (3.1.1 return
 * code 1, 2 or 6; MQTT 5 0x82 or 0x8C), DISCONNECT 0x94 for a bad topic alias, DISCONNECT 0x95 for
 * a packet too large (MQTT 5; others are closed), and a close for a packet that does not parse.
 */
export function brokerRefusal (err: BrokerError): string | null {
  if (err.counted === true || err instanceof GatewayError) return null
  if (err.malformed === true) return 'malformed_packet'
  if (err.message === 'packet too large') return 'packet_too_large'
  if (/topic alias/i.test(err.message)) return 'topic_alias_invalid'
  if (err.errorCode === 1) return 'unsupported_protocol'
  if (err.errorCode === 2) return 'bad_client_id'
  if (err.reasonCode === 0x82 || err.message === 'Invalid protocol') return 'protocol_error'
  if (err.reasonCode === 0x8C) return 'bad_authentication_method'
  return null
}

// The MQTT 5 PUBACK reason code of a publish the ingest path refused. 3.1.1 has no per-message
// refusal: the connection is closed instead, and the device resends after reconnecting.
const PUBLISH: Partial<Record<GatewayErrorCode, number>> = {
  GW_ERR_NOT_AUTHORIZED: RC.NOT_AUTHORIZED,
  GW_ERR_TOPIC_INVALID: RC.TOPIC_NAME_INVALID,
  GW_ERR_OUTBOX_FULL: RC.QUOTA_EXCEEDED,
  GW_ERR_OUTBOX_BUSY: RC.QUOTA_EXCEEDED,
  GW_ERR_PAYLOAD_QUARANTINED: RC.PAYLOAD_FORMAT_INVALID,
}

// Refusals that end an MQTT 5 connection with a DISCONNECT and this reason code.
const DISCONNECT: Partial<Record<GatewayErrorCode, number>> = {
  GW_ERR_RATE_LIMITED: RC.MESSAGE_RATE_TOO_HIGH,
  GW_ERR_RECEIVE_MAXIMUM: RC.RECEIVE_MAXIMUM_EXCEEDED,
}

/** The error authorizePublish answers an MQTT 5 device with: its reason code set for the patched aedes. */
export function publishRefusedV5 (err: GatewayError): GatewayError & { reasonCode?: number, disconnectReasonCode?: number } {
  const disconnect = DISCONNECT[err.code]
  if (disconnect !== undefined) return Object.assign(err, { disconnectReasonCode: disconnect })
  return Object.assign(err, { reasonCode: PUBLISH[err.code] ?? RC.UNSPECIFIED_ERROR })
}

/** A quarantined payload: stored as a dead letter, answered 0x99 to an MQTT 5 device (3.1.1: a plain PUBACK). */
export function quarantinedV5 (reason: string): GatewayError {
  return publishRefusedV5(new GatewayError('GW_ERR_PAYLOAD_QUARANTINED', `payload quarantined: ${reason}`))
}
