// The control routes (shape in cloud/API.md): alerts and their acknowledgement, decisions, commands
// (read, and send: published on the gateway's COMMANDS subject), and a device's control references.
// Reads go to the view store like every other route; a command is published through the JetStream
// client the composition (cloud.ts) hands in, and recorded in the views as "queued".
import { randomBytes } from 'node:crypto'
import type { JetStreamClient } from '@nats-io/jetstream'
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { subjects } from '../../proto/index.ts'
import { CloudError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { FleetViews } from '../views/views.ts'
import { deviceId, deviceParams, entryId, gatewayId, gatewayParams, limit, MAX_LIMIT, parse } from './validate.ts'
import type { CloudCommand } from '../../proto/command.ts'

export interface ControlRoutesOptions {
  views: FleetViews
  /** Publishes commands; null: POST /api/commands answers 503. */
  js: JetStreamClient | null
  log: Logger
}

/** Command names: what an actuator understands (the gateway passes them through). */
const COMMAND_NAME = /^[A-Za-z0-9_.:-]{1,64}$/
const MAX_ARGS_JSON = 4096
const DEFAULT_TTL_MS = 60_000
/** At most the COMMANDS stream's default retention (7 days): an older command would be gone anyway. */
const MAX_TTL_MS = 7 * 24 * 3600_000
const TTL_RULE = `an integer 1..${MAX_TTL_MS}`

const alertsQuery = z.object({ gateway: gatewayId.optional(), active: z.string().optional(), limit: limit(500) })
const alertParams = z.object({ gw: gatewayId, alertId: entryId })
// Lenient, as the console sends it: a missing or odd field takes its default.
const ackBody = z.object({
  by: z.string().min(1).transform((s) => s.slice(0, 64)).catch('operator'),
  note: z.string().transform((s) => s.slice(0, 500)).catch(''),
}).catch({ by: 'operator', note: '' })
const listQuery = (def: number) => z.object({ gateway: gatewayId.optional(), device: deviceId.optional(), status: z.string().optional(), limit: limit(def) })
const commandParams = z.object({ gw: gatewayId, commandId: entryId })
const commandBody = z.object({
  gatewayId,
  deviceId,
  name: z.string().regex(COMMAND_NAME, '1-64 characters of [A-Za-z0-9_.:-]'),
  args: z.record(z.string(), z.unknown(), { error: 'expected an object' })
    .refine((a) => JSON.stringify(a).length <= MAX_ARGS_JSON, `at most ${MAX_ARGS_JSON} bytes of JSON`).optional(),
  ttlMs: z.number({ error: TTL_RULE }).int(TTL_RULE).min(1, TTL_RULE).max(MAX_TTL_MS, TTL_RULE).optional(),
}, { error: 'body: expected a JSON object {gatewayId, deviceId, name, args?, ttlMs?}' })

export function registerControlRoutes (app: FastifyInstance, opts: ControlRoutesOptions): void {
  const { views, js, log } = opts

  // --- alerts --------------------------------------------------------------------------------

  app.get('/api/alerts', async (req) => {
    const q = parse(alertsQuery, req.query)
    const active = q.active === '1' || q.active === 'true'
    return views.control.alerts({ gatewayId: q.gateway, active, limit: q.limit })
  })

  app.post('/api/alerts/:gw/:alertId/ack', async (req) => {
    const { gw, alertId } = parse(alertParams, req.params)
    const { by, note } = parse(ackBody, req.body)
    const alert = await views.control.ack(gw, alertId, by, note)
    if (!alert) throw new CloudError('CLOUD_ERR_NOT_FOUND', `no alert ${alertId} on ${gw}`)
    return { alert }
  })

  // --- decisions -----------------------------------------------------------------------------

  app.get('/api/gateways/:id/decisions', async (req) => {
    const { id } = parse(gatewayParams, req.params)
    const q = parse(listQuery(MAX_LIMIT), req.query)
    return { gatewayId: id, decisions: await views.control.decisions(id, { deviceId: q.device, limit: q.limit }) ?? [] }
  })

  // Fleet-wide: the newest decisions of every gateway (or one), newest first.
  app.get('/api/decisions', async (req) => {
    const q = parse(listQuery(200), req.query)
    const gws = q.gateway ? [q.gateway] : (await views.store.keys(['dec'])).map((k) => k.slice('dec.'.length))
    const lists = await Promise.all(gws.map(async (gw) => (await views.control.decisions(gw, { deviceId: q.device, limit: q.limit }) ?? []).map((d) => ({ gatewayId: gw, ...d }))))
    return { decisions: lists.flat().sort((a, b) => b.tsMs - a.tsMs || b.seq - a.seq).slice(0, q.limit) }
  })

  // --- dead letters --------------------------------------------------------------------------

  // The gateway's recent dead letters (the payload's first bytes as base64) and its counts by
  // reason since its start (from its heartbeats): reports beyond its rate are only in the counts.
  app.get('/api/gateways/:id/dead-letters', async (req) => {
    const { id } = parse(gatewayParams, req.params)
    const q = parse(listQuery(MAX_LIMIT), req.query)
    const [items, gw] = await Promise.all([views.control.deadLetters(id, { deviceId: q.device, limit: q.limit }), views.gateway(id)])
    if (items === null && gw === null) throw new CloudError('CLOUD_ERR_NOT_FOUND', `no gateway ${id}`)
    return { gatewayId: id, deadLetters: items ?? [], byReason: gw?.quarantinedByReason ?? {}, quarantinedTotal: gw?.quarantinedTotal ?? 0 }
  })

  // --- commands ------------------------------------------------------------------------------

  app.get('/api/gateways/:id/commands', async (req) => {
    const { id } = parse(gatewayParams, req.params)
    const q = parse(listQuery(MAX_LIMIT), req.query)
    return { gatewayId: id, commands: await views.control.commands(id, { deviceId: q.device, status: q.status, limit: q.limit }) ?? [] }
  })

  app.get('/api/commands', async (req) => {
    const q = parse(listQuery(200), req.query)
    const gws = q.gateway ? [q.gateway] : (await views.store.keys(['cmd'])).map((k) => k.slice('cmd.'.length))
    const lists = await Promise.all(gws.map(async (gw) => await views.control.commands(gw, { deviceId: q.device, status: q.status, limit: q.limit }) ?? []))
    return { commands: lists.flat().sort((a, b) => b.statusTsMs - a.statusTsMs).slice(0, q.limit) }
  })

  app.get('/api/commands/:gw/:commandId', async (req) => {
    const { gw, commandId } = parse(commandParams, req.params)
    const c = await views.control.command(gw, commandId)
    if (!c) throw new CloudError('CLOUD_ERR_NOT_FOUND', `no command ${commandId} on ${gw}`)
    return c
  })

  app.post('/api/commands', async (req, reply) => {
    const b = parse(commandBody, req.body)
    if (!js) throw new CloudError('CLOUD_ERR_UNAVAILABLE', 'no NATS connection for commands')
    const queuedAtMs = Date.now()
    // The contract both ends share (proto/command.ts): the gateway parses it with the same schema.
    const args = b.args ?? {}
    const expiresAtMs = queuedAtMs + (b.ttlMs ?? DEFAULT_TTL_MS)
    const cmd: CloudCommand = { id: `c-${queuedAtMs.toString(36)}-${randomBytes(6).toString('hex')}`, deviceId: b.deviceId, name: b.name, args, expiresAtMs }
    try {
      // The id is the message id too: a retried publish is stored once.
      await js.publish(subjects.commands(b.gatewayId), JSON.stringify(cmd), { msgID: cmd.id })
    } catch (err) {
      log.warn({ err, gatewayId: b.gatewayId, deviceId: b.deviceId, commandId: cmd.id }, 'command not queued')
      throw new CloudError('CLOUD_ERR_UNAVAILABLE', `command not queued: ${(err as Error).message}`, { cause: err })
    }
    let recorded = true
    try {
      await views.control.recordQueued(b.gatewayId, { commandId: cmd.id, deviceId: b.deviceId, name: b.name, args, queuedAtMs, expiresAtMs })
    } catch (err) {
      // Queued all the same: the gateway's reports will make it appear in the views.
      recorded = false
      log.warn({ err, gatewayId: b.gatewayId, commandId: cmd.id }, 'queued command not recorded in the views')
    }
    return reply.code(202).send({ id: cmd.id, commandId: cmd.id, gatewayId: b.gatewayId, deviceId: b.deviceId, name: b.name, status: 'queued', expiresAtMs: cmd.expiresAtMs, recorded })
  })

  // --- device references ---------------------------------------------------------------------

  app.get('/api/devices/:gw/:device/control', async (req) => {
    const { gw, device } = parse(deviceParams, req.params)
    return views.control.device(gw, device)
  })
}
