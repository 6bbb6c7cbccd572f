// The fleet routes (shape in cloud/API.md): the fleet, a gateway and its devices, a device, the
// delivery accounting, and a gateway's link-health history (a device's history: routes-history.ts).
// Reads only: every answer comes from the view store, so any API replica answers the same.
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { CloudError } from '../errors.ts'
import { deviceView, type FleetViews } from '../views/views.ts'
import { deviceParams, gatewayId, gatewayParams, parse } from './validate.ts'

const healthQuery = z.object({
  from: z.string().optional().transform((v, ctx) => {
    if (v === undefined || v === '') return undefined
    const n = Number(v)
    if (!Number.isFinite(n)) ctx.addIssue({ code: 'custom', message: 'ms since the epoch' })
    return n
  }),
})

export function registerFleetRoutes (app: FastifyInstance, views: FleetViews): void {
  app.get('/api/fleet', async () => {
    const gateways = await views.gateways()
    // The clock and timeout that decided `online`: the console judges it again while its answer ages.
    return { gateways, online: gateways.filter((g) => g.online).length, total: gateways.length, nowMs: Date.now(), offlineTimeoutMs: views.offlineTimeoutMs }
  })

  app.get('/api/gateways/:id', async (req) => {
    const { id } = parse(gatewayParams, req.params)
    const [gateway, docs] = await Promise.all([views.gateway(id), views.deviceDocs(id)])
    if (!gateway && docs.length === 0) throw new CloudError('CLOUD_ERR_NOT_FOUND', `no gateway ${id}`)
    const devices = docs.map(deviceView)
    // The delivery ledger summed, from the same device documents (a gateway page reads them once).
    const delivery = await views.delivery.gateway(id, docs)
    return {
      gatewayId: id,
      status: gateway,
      delivery: delivery.summary,
      devices: devices.map((d) => ({ deviceId: d.deviceId, lastEventTsMs: d.latest?.eventTsMs ?? null, received: d.accounting.received, duplicates: d.accounting.duplicates, gapsOpen: d.accounting.gapsOpen })),
    }
  })

  app.get('/api/devices/:gw/:device', async (req) => {
    const { gw, device } = parse(deviceParams, req.params)
    const d = await views.device(gw, device)
    if (!d) throw new CloudError('CLOUD_ERR_NOT_FOUND', `no device ${gw}/${device}`)
    return d
  })

  app.get('/api/accounting', async (req) => {
    const { gateway } = parse(z.object({ gateway: gatewayId.optional() }), req.query)
    return views.accounting(gateway)
  })

  app.get('/api/gateways/:id/health', async (req) => {
    const { id } = parse(gatewayParams, req.params)
    const { from } = parse(healthQuery, req.query)
    const samples = await views.control.health(id, { fromMs: from })
    if (!samples) throw new CloudError('CLOUD_ERR_NOT_FOUND', `no link-health samples for ${id}`)
    return { gatewayId: id, samples }
  })
}
