// Cloud error codes. Codes are data: stable strings that logs, metrics and tests rely on. A code
// that an HTTP route can answer with carries its status (the fastify model: createError(code,
// message, statusCode)), so one error handler answers every route (http/error-handler.ts) with
// `{ error, code, message }`, where `error` is the code without its CLOUD_ERR_ prefix, lower-cased.

interface CodeInfo {
  readonly doc: string
  /** Whether the same operation can succeed if tried again. */
  readonly retryable: boolean
  /** The HTTP status of an API answer with this code (none: the code is not an API answer). */
  readonly statusCode?: number
}

export const CloudErrorCodes = {
  CLOUD_ERR_CONFIG: { retryable: false, doc: 'The cloud configuration is invalid; the message names the key.' },
  CLOUD_ERR_PROVISION: { retryable: true, doc: 'Creating or updating a stream or KV bucket failed.' },
  CLOUD_ERR_PARTITIONS: { retryable: true, doc: 'The check of the NATS server\'s partition mapping (or of the lease table) could not be completed.' },
  CLOUD_ERR_VIEW_CONFLICT: { retryable: true, doc: 'A view kept changing under compare-and-set; the batches are redelivered and applied again.' },
  CLOUD_ERR_REJECTED: { retryable: false, doc: 'A batch or heartbeat was malformed, or its gateway id does not match its subject.' },
  CLOUD_ERR_BAD_REQUEST: { retryable: false, statusCode: 400, doc: 'A request parameter, query string or body is malformed; the message names the field.' },
  CLOUD_ERR_UNAUTHORIZED: { retryable: false, statusCode: 401, doc: 'No valid console session (or a failed login): log in first.' },
  CLOUD_ERR_FORBIDDEN: { retryable: false, statusCode: 403, doc: 'A cross-site state change was refused.' },
  CLOUD_ERR_HOST_NOT_ALLOWED: { retryable: false, statusCode: 421, doc: 'The Host header names a host this server does not answer to (a DNS-rebinding guard); add the name to http.allowedHosts. /healthz, /readyz and /metrics answer any Host.' },
  CLOUD_ERR_NOT_FOUND: { retryable: false, statusCode: 404, doc: 'No such route, gateway, device, alert, command, rule set or link-health history.' },
  CLOUD_ERR_PAYLOAD_TOO_LARGE: { retryable: false, statusCode: 413, doc: 'The request body is larger than the route accepts.' },
  CLOUD_ERR_UNSUPPORTED_MEDIA_TYPE: { retryable: false, statusCode: 415, doc: 'The request body has a content type the route does not take.' },
  CLOUD_ERR_INVALID_RULE_SET: { retryable: false, statusCode: 422, doc: 'A rule set failed the rule-set schema and checker the gateway uses; the message names the rule and the field.' },
  CLOUD_ERR_INTERNAL: { retryable: false, statusCode: 500, doc: 'An unexpected failure while answering a request; it is logged with its cause.' },
  CLOUD_ERR_FLEET_EXISTS: { retryable: false, doc: 'fleet setup: the directory already holds a fleet (fleet.json); setting it up again would lose its keys.' },
  CLOUD_ERR_FLEET_MISSING: { retryable: false, doc: 'fleet: no fleet (fleet.json, keys) in the directory given; run `npm run fleet -- setup` first.' },
  CLOUD_ERR_FLEET_GATEWAY_ID: { retryable: false, doc: 'fleet: a gateway id must be one NATS subject token (the rule of gatewayId).' },
  CLOUD_ERR_FLEET_GATEWAY_ENROLLED: { retryable: false, doc: 'fleet: the gateway is enrolled already; revoke it before issuing new credentials.' },
  CLOUD_ERR_FLEET_GATEWAY_UNKNOWN: { retryable: false, doc: 'fleet: no active enrollment of that gateway (never enrolled, or revoked already).' },
  CLOUD_ERR_FLEET_PUSH: { retryable: true, doc: 'fleet: the NATS servers did not take an account update (unreachable, or refused it); the fleet directory has it: send it again with `npm run fleet -- push`.' },
  CLOUD_ERR_UNAVAILABLE: { retryable: true, statusCode: 503, doc: 'NATS (commands, rule sets, live updates) is not reachable or not configured, or the live-update clients are at their bound.' },
} as const satisfies Record<string, CodeInfo>

export type CloudErrorCode = keyof typeof CloudErrorCodes

/** An error of the cloud tier with a stable code, a retry hint, an HTTP status where it has one, and the cause kept. */
export class CloudError extends Error {
  readonly code: CloudErrorCode
  readonly retryable: boolean
  /** The HTTP status of the code (500 for a code that is not an API answer). */
  readonly statusCode: number

  constructor (code: CloudErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'CloudError'
    this.code = code
    const info: CodeInfo = CloudErrorCodes[code]
    this.retryable = info.retryable
    this.statusCode = info.statusCode ?? 500
  }
}

/** The `error` word of an API answer: the code without its prefix, lower-cased ('bad_request'). */
export const errorWord = (code: CloudErrorCode): string => code.slice('CLOUD_ERR_'.length).toLowerCase()
