// The id alphabets every hop checks: a device id (MQTT client id, a topic level, a KV key token),
// a gateway id (one NATS subject token, so no dots), and rule ids and group names of a rule set.

/** A device id: 1-64 characters of [A-Za-z0-9_.-]. */
export const DEVICE_ID = /^[A-Za-z0-9_.-]{1,64}$/
export const DEVICE_ID_RULE = '1-64 characters of [A-Za-z0-9_.-]'

/** A gateway id: 1-64 characters of [A-Za-z0-9_-] (no dots: it is one token of a NATS subject). */
export const GATEWAY_ID = /^[A-Za-z0-9_-]{1,64}$/
export const GATEWAY_ID_RULE = '1-64 characters of [A-Za-z0-9_-]'

/** Rule ids, group names and device ids inside a rule set: the device id alphabet. */
export const ID_PATTERN = DEVICE_ID
