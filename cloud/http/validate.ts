// Request validation with zod: route parameters, query strings and bodies are parsed by a schema,
// and a mismatch is a CloudError CLOUD_ERR_BAD_REQUEST whose message names each bad field. Ids use
// the alphabets of proto/ids.ts, the same the gateway checks.
import { z } from 'zod'
import { DEVICE_ID, DEVICE_ID_RULE, GATEWAY_ID, GATEWAY_ID_RULE } from '../../proto/ids.ts'
import { CloudError } from '../errors.ts'

/** Parses `value` with `schema`; throws CLOUD_ERR_BAD_REQUEST naming each bad field. */
export function parse<S extends z.ZodType> (schema: S, value: unknown): z.output<S> {
  const r = schema.safeParse(value)
  if (r.success) return r.data
  const message = r.error.issues.map((i) => i.path.length > 0 ? `${i.path.join('.')}: ${i.message}` : i.message).join('; ')
  throw new CloudError('CLOUD_ERR_BAD_REQUEST', message)
}

export const gatewayId = z.string().regex(GATEWAY_ID, GATEWAY_ID_RULE)
export const deviceId = z.string().regex(DEVICE_ID, DEVICE_ID_RULE)
/** An alert or command id as the views keep it (the gateway bounds them to 128 characters). */
export const entryId = z.string().min(1, '1-128 characters').max(128, '1-128 characters')

/** Most entries one list request returns. */
export const MAX_LIMIT = 1000

/** `limit` query parameter: an integer 1..MAX_LIMIT; absent or empty: `def`. */
export const limit = (def: number): z.ZodType<number> =>
  z.preprocess((v) => v === '' || v === undefined ? def : v, z.coerce.number({ error: `an integer 1..${MAX_LIMIT}` }).int().min(1).max(MAX_LIMIT)) as unknown as z.ZodType<number>

/** A time query parameter: ms since the epoch or an ISO 8601 string; absent or empty: undefined. */
export const time = z.string().optional().transform((v, ctx) => {
  if (v === undefined || v === '') return undefined
  const n = /^-?\d+$/.test(v) ? Number(v) : Date.parse(v)
  if (!Number.isFinite(n)) ctx.addIssue({ code: 'custom', message: 'a time: ms since the epoch or ISO 8601' })
  return n
})

/** Path parameters of a gateway route. */
export const gatewayParams = z.object({ id: gatewayId })
/** Path parameters of a device route. */
export const deviceParams = z.object({ gw: gatewayId, device: deviceId })
