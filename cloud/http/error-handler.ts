// The one error handler of the API: every route throws a CloudError and this answers it with the
// code's status and `{ error, code, message }` (error: the code without its prefix, lower-cased).
// Fastify's own request errors (a body too large, malformed JSON, an unknown content type) are
// answered the same way with the closest code; anything else is a 500 CLOUD_ERR_INTERNAL, logged
// with its cause (log.error({ err })), and its message is not sent.
import type { FastifyInstance } from 'fastify'
import { CloudError, errorWord, type CloudErrorCode } from '../errors.ts'
import type { Logger } from '../log.ts'

export interface ErrorBody { error: string, code: CloudErrorCode, message: string }

const body = (code: CloudErrorCode, message: string): ErrorBody => ({ error: errorWord(code), code, message })

/** The closest code for an error fastify raised itself (it carries a 4xx statusCode). */
function codeOfStatus (status: number): CloudErrorCode {
  if (status === 401) return 'CLOUD_ERR_UNAUTHORIZED'
  if (status === 403) return 'CLOUD_ERR_FORBIDDEN'
  if (status === 404) return 'CLOUD_ERR_NOT_FOUND'
  if (status === 413) return 'CLOUD_ERR_PAYLOAD_TOO_LARGE'
  if (status === 415) return 'CLOUD_ERR_UNSUPPORTED_MEDIA_TYPE'
  return 'CLOUD_ERR_BAD_REQUEST'
}

/** Sets the error and not-found handlers of the app (before any route or plugin is registered). */
export function registerErrorHandler (app: FastifyInstance, log: Logger): void {
  app.setErrorHandler((err: unknown, req, reply) => {
    // A route that throws a CloudError has decided the answer (and logged what it wants to).
    if (err instanceof CloudError) return reply.code(err.statusCode).send(body(err.code, err.message))
    const status = (err as { statusCode?: unknown }).statusCode
    if (typeof status === 'number' && status >= 400 && status < 500) return reply.code(status).send(body(codeOfStatus(status), (err as Error).message))
    log.error({ err, method: req.method, url: req.url }, 'request failed')
    return reply.code(500).send(body('CLOUD_ERR_INTERNAL', 'internal error'))
  })
  // The console's script tells a missing route (an older server) by this message: keep its form.
  app.setNotFoundHandler((req) => {
    throw new CloudError('CLOUD_ERR_NOT_FOUND', `Route ${req.method}:${req.url} not found`)
  })
}
