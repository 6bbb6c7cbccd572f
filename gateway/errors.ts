// Gateway error codes. Codes are data: stable strings that logs, metrics and tests rely on.
// `retryable` says whether trying the same operation again can succeed.

export const GatewayErrorCodes = {
  GW_ERR_CONFIG: { retryable: false, doc: 'The configuration is invalid; the message names the key.' },
  GW_ERR_OUTBOX_FULL: { retryable: true, doc: 'The outbox is at its disk budget and the overflow policy is reject-new.' },
  GW_ERR_OUTBOX_BUSY: { retryable: true, doc: 'The in-memory commit queue is full; the publish is refused.' },
  GW_ERR_OUTBOX_COMMIT: { retryable: true, doc: 'A commit to the SQLite outbox failed (disk error); nothing in the group was acknowledged.' },
  GW_ERR_OUTBOX_CORRUPT: { retryable: false, doc: 'The outbox contradicts itself (an event names a device number that device_seq does not hold); replication stops, ingest and decisions go on.' },
  GW_ERR_OUTBOX_CLOSED: { retryable: false, doc: 'The outbox is closed; the gateway is shutting down.' },
  GW_ERR_NOT_AUTHORIZED: { retryable: false, doc: 'A device published or subscribed outside its own topic space.' },
  GW_ERR_TOPIC_INVALID: { retryable: false, doc: 'A device published to a topic of its own space that the gateway does not know (devices/{id}/telemetry and devices/{id}/commands/ack are the ones it takes).' },
  GW_ERR_PAYLOAD_QUARANTINED: { retryable: false, doc: 'A payload could not be used (not JSON, no readings, too large); it is kept as a dead letter and the MQTT 5 PUBACK says 0x99.' },
  GW_ERR_RATE_LIMITED: { retryable: true, doc: 'A device exceeded its publish rate by more than the throttle allows.' },
  GW_ERR_RECEIVE_MAXIMUM: { retryable: false, doc: 'An MQTT 5 device had more QoS 1/2 publishes unacknowledged than the Receive Maximum the gateway announced; it is disconnected with 0x93.' },
  GW_ERR_DEVICE_EXISTS: { retryable: false, doc: 'A device with this id is already registered.' },
  GW_ERR_DEVICE_UNKNOWN: { retryable: false, doc: 'No device with this id is registered.' },
  GW_ERR_DEVICE_ID: { retryable: false, doc: 'A device id must be 1-64 characters of [A-Za-z0-9_.-].' },
  GW_ERR_SCHEMA_NEWER: { retryable: false, doc: 'gateway.db was written by a newer gateway (its schema version is above the one this code reads); it is left untouched: run that version or a newer one on it.' },
  GW_ERR_RULES: { retryable: false, doc: 'A rule set is invalid; the message names the rule and the field. The running rules stay in place.' },
} as const

export type GatewayErrorCode = keyof typeof GatewayErrorCodes

/** An error of the gateway with a stable code, a retry hint and the cause kept. */
export class GatewayError extends Error {
  readonly code: GatewayErrorCode
  readonly retryable: boolean

  constructor (code: GatewayErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'GatewayError'
    this.code = code
    this.retryable = GatewayErrorCodes[code].retryable
  }
}
