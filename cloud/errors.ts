// Cloud error codes. Codes are data: stable strings that logs, metrics and tests rely on.

export const CloudErrorCodes = {
  CLOUD_ERR_CONFIG: { retryable: false, doc: 'The cloud configuration is invalid; the message names the key.' },
  CLOUD_ERR_PROVISION: { retryable: true, doc: 'Creating or updating a stream or KV bucket failed.' },
  CLOUD_ERR_VIEW_CONFLICT: { retryable: true, doc: 'A view kept changing under compare-and-set; the batches are redelivered and applied again.' },
  CLOUD_ERR_REJECTED: { retryable: false, doc: 'A batch or heartbeat was malformed, or its gateway id does not match its subject.' },
} as const

export type CloudErrorCode = keyof typeof CloudErrorCodes

/** An error of the cloud tier with a stable code, a retry hint and the cause kept. */
export class CloudError extends Error {
  readonly code: CloudErrorCode
  readonly retryable: boolean

  constructor (code: CloudErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'CloudError'
    this.code = code
    this.retryable = CloudErrorCodes[code].retryable
  }
}
