// The live-updates route (shape in cloud/API.md): GET /api/events, a stream of server-sent events
// for the console, filtered by gateway, device and message type. The LiveEvents hub (a watch on the
// VIEWS bucket) is created and closed by the composition (cloud.ts); without it the route answers 503.
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { CloudError } from '../errors.ts'
import { LIVE_TYPES, parseTypes, type LiveEvents } from './live-events.ts'
import { deviceId, gatewayId, parse } from './validate.ts'

const eventsQuery = z.object({
  gateway: gatewayId.optional(),
  device: deviceId.optional(),
  types: z.string().optional().transform((v, ctx) => {
    const types = parseTypes(v)
    if (types === null) ctx.addIssue({ code: 'custom', message: `a comma-separated subset of ${[...LIVE_TYPES].join(',')}` })
    return types ?? undefined
  }),
})

export function registerLiveRoutes (app: FastifyInstance, live: LiveEvents | null): void {
  app.get('/api/events', async (req, reply) => {
    const q = parse(eventsQuery, req.query)
    if (!live) throw new CloudError('CLOUD_ERR_UNAVAILABLE', 'live updates need the views in NATS KV')
    if (!live.accepting()) throw new CloudError('CLOUD_ERR_UNAVAILABLE', 'too many live clients')
    reply.hijack()
    // Checked just above, in the same tick: attach takes the client.
    live.attach(reply.raw, { gatewayId: q.gateway, deviceId: q.device, types: q.types })
  })
}
