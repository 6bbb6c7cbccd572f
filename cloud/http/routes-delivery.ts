// The per-device delivery ledger routes (shape in cloud/API.md): where one device's data is (accepted
// at the gateway, replicated, applied in the cloud, oldest unsent, shed ranges), and the same for
// every device of a gateway with their sum. Reads only.
import type { FastifyInstance } from 'fastify'
import { CloudError } from '../errors.ts'
import type { FleetViews } from '../views/views.ts'
import { deviceParams, gatewayParams, parse } from './validate.ts'

export function registerDeliveryRoutes (app: FastifyInstance, views: FleetViews): void {
  app.get('/api/devices/:gw/:device/delivery', async (req) => {
    const { gw, device } = parse(deviceParams, req.params)
    const d = await views.delivery.device(gw, device)
    if (!d) throw new CloudError('CLOUD_ERR_NOT_FOUND', `no delivery marks for ${gw}/${device}`)
    return { ...d, nowMs: Date.now() }
  })

  app.get('/api/gateways/:id/delivery', async (req) => {
    const { id } = parse(gatewayParams, req.params)
    const { summary, devices } = await views.delivery.gateway(id, await views.deviceDocs(id))
    if (devices.length === 0) throw new CloudError('CLOUD_ERR_NOT_FOUND', `no delivery marks for ${id}`)
    return { ...summary, perDevice: devices }
  })
}
