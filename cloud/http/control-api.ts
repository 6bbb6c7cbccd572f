// The API's control routes (shape in cloud/API.md): alerts and their acknowledgement, decisions,
// commands (read, and send: published on the gateway's COMMANDS subject), rule sets (RULES bucket),
// link-health history, a device's control references, and live updates as server-sent events.
// Registered by api.ts; reads go to the view store like every other route, writes to NATS.
import { randomBytes } from 'node:crypto'
import { jetstream, type JetStreamClient } from '@nats-io/jetstream'
import { Bucket, Kvm, type KV } from '@nats-io/kv'
import type { NatsConnection } from '@nats-io/transport-node'
import type { FastifyInstance, FastifyReply } from 'fastify'
import { CLOUD_BUCKETS, subjects } from '../../proto/index.ts'
import { KvViewStore } from '../store/kv-view-store.ts'
import { LiveEvents, parseTypes, type LiveEventsOptions } from './live-events.ts'
import type { Logger } from '../log.ts'
import { checkRuleSetText, MAX_RULE_SET_BYTES } from './rules-text.ts'
import { DEVICE_ID, DEVICE_ID_RULE, GATEWAY_ID, GATEWAY_ID_RULE } from '../../proto/ids.ts'
import type { FleetViews } from '../views/views.ts'

export interface ControlRoutesOptions {
  views: FleetViews
  /** For commands and rule sets; default: the connection of the views' KV bucket. */
  nats?: NatsConnection
  log: Logger
  live?: LiveEventsOptions
}

/** Command names: what an actuator understands (the gateway passes them through). */
const COMMAND_NAME = /^[A-Za-z0-9_.:-]{1,64}$/
const MAX_ARGS_JSON = 4096
const DEFAULT_TTL_MS = 60_000
/** At most the COMMANDS stream's default retention (7 days): an older command would be gone anyway. */
const MAX_TTL_MS = 7 * 24 * 3600_000
const MAX_LIMIT = 1000
const RULE_TYPES = ['application/json', 'application/yaml', 'application/x-yaml', 'text/yaml', 'text/x-yaml']

const fail = (reply: FastifyReply, code: number, error: string, message: string): FastifyReply => reply.code(code).send({ error, message })
const badRequest = (reply: FastifyReply, message: string): FastifyReply => fail(reply, 400, 'bad_request', message)
const unavailable = (reply: FastifyReply, message: string): FastifyReply => fail(reply, 503, 'unavailable', message)

/** `limit` query parameter: 1..MAX_LIMIT, default `def`; null when malformed. */
function parseLimit (v: string | undefined, def: number): number | null {
  if (v === undefined || v === '') return def
  const n = Number(v)
  return Number.isInteger(n) && n >= 1 && n <= MAX_LIMIT ? n : null
}

const plainObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v)

/**
 * The JetStream context for commands and rules: from the given connection, else the one the views'
 * KV bucket was opened with (so an API built only with the views can still send).
 */
function jetStreamOf (views: FleetViews, nats?: NatsConnection): JetStreamClient | null {
  if (nats) return jetstream(nats)
  const kv = viewsKv(views)
  return kv instanceof Bucket ? kv.js : null
}

const viewsKv = (views: FleetViews): KV | null => views.store instanceof KvViewStore ? views.store.kv : null

export function registerControlRoutes (app: FastifyInstance, opts: ControlRoutesOptions): void {
  const { views, log } = opts
  const js = jetStreamOf(views, opts.nats)
  const kv = viewsKv(views)
  const live = kv ? new LiveEvents(kv, views, log.child({ component: 'live-events' }), opts.live) : null
  app.addHook('preClose', async () => { live?.close() })
  let rules: Promise<KV> | null = null
  const rulesKv = (): Promise<KV> => {
    if (!js) return Promise.reject(new Error('no NATS connection'))
    rules ??= new Kvm(js).open(CLOUD_BUCKETS.rules).catch((err) => { rules = null; throw err })
    return rules
  }

  // --- alerts --------------------------------------------------------------------------------

  app.get<{ Querystring: { active?: string, gateway?: string, limit?: string } }>('/api/alerts', async (req, reply) => {
    const { gateway } = req.query
    if (gateway !== undefined && !GATEWAY_ID.test(gateway)) return badRequest(reply, 'bad gateway id')
    const limit = parseLimit(req.query.limit, 500)
    if (limit === null) return badRequest(reply, `limit must be an integer 1..${MAX_LIMIT}`)
    const active = req.query.active === '1' || req.query.active === 'true'
    return views.control.alerts({ gatewayId: gateway, active, limit })
  })

  app.post<{ Params: { gw: string, alertId: string }, Body: { by?: unknown, note?: unknown } | undefined }>('/api/alerts/:gw/:alertId/ack', async (req, reply) => {
    const { gw, alertId } = req.params
    if (!GATEWAY_ID.test(gw) || alertId.length === 0 || alertId.length > 128) return badRequest(reply, 'bad gateway or alert id')
    const body = plainObject(req.body) ? req.body : {}
    const by = typeof body.by === 'string' && body.by.length > 0 ? body.by.slice(0, 64) : 'operator'
    const note = typeof body.note === 'string' ? body.note.slice(0, 500) : ''
    const alert = await views.control.ack(gw, alertId, by, note)
    if (!alert) return fail(reply, 404, 'not_found', `no alert ${alertId} on ${gw}`)
    return { alert }
  })

  // --- decisions -----------------------------------------------------------------------------

  app.get<{ Params: { id: string }, Querystring: { device?: string, limit?: string } }>('/api/gateways/:id/decisions', async (req, reply) => {
    const { id } = req.params
    const { device } = req.query
    if (!GATEWAY_ID.test(id) || (device !== undefined && !DEVICE_ID.test(device))) return badRequest(reply, 'bad gateway or device id')
    const limit = parseLimit(req.query.limit, MAX_LIMIT)
    if (limit === null) return badRequest(reply, `limit must be an integer 1..${MAX_LIMIT}`)
    return { gatewayId: id, decisions: await views.control.decisions(id, { deviceId: device, limit }) ?? [] }
  })

  // Fleet-wide: the newest decisions of every gateway (or one), newest first.
  app.get<{ Querystring: { gateway?: string, device?: string, limit?: string } }>('/api/decisions', async (req, reply) => {
    const { gateway, device } = req.query
    if ((gateway !== undefined && !GATEWAY_ID.test(gateway)) || (device !== undefined && !DEVICE_ID.test(device))) return badRequest(reply, 'bad gateway or device id')
    const limit = parseLimit(req.query.limit, 200)
    if (limit === null) return badRequest(reply, `limit must be an integer 1..${MAX_LIMIT}`)
    const gws = gateway ? [gateway] : (await views.store.keys(['dec'])).map((k) => k.slice('dec.'.length))
    const lists = await Promise.all(gws.map(async (gw) => (await views.control.decisions(gw, { deviceId: device, limit }) ?? []).map((d) => ({ gatewayId: gw, ...d }))))
    return { decisions: lists.flat().sort((a, b) => b.tsMs - a.tsMs || b.seq - a.seq).slice(0, limit) }
  })

  // --- commands ------------------------------------------------------------------------------

  app.get<{ Params: { id: string }, Querystring: { device?: string, status?: string, limit?: string } }>('/api/gateways/:id/commands', async (req, reply) => {
    const { id } = req.params
    const { device, status } = req.query
    if (!GATEWAY_ID.test(id) || (device !== undefined && !DEVICE_ID.test(device))) return badRequest(reply, 'bad gateway or device id')
    const limit = parseLimit(req.query.limit, MAX_LIMIT)
    if (limit === null) return badRequest(reply, `limit must be an integer 1..${MAX_LIMIT}`)
    return { gatewayId: id, commands: await views.control.commands(id, { deviceId: device, status, limit }) ?? [] }
  })

  app.get<{ Querystring: { gateway?: string, device?: string, status?: string, limit?: string } }>('/api/commands', async (req, reply) => {
    const { gateway, device, status } = req.query
    if ((gateway !== undefined && !GATEWAY_ID.test(gateway)) || (device !== undefined && !DEVICE_ID.test(device))) return badRequest(reply, 'bad gateway or device id')
    const limit = parseLimit(req.query.limit, 200)
    if (limit === null) return badRequest(reply, `limit must be an integer 1..${MAX_LIMIT}`)
    const gws = gateway ? [gateway] : (await views.store.keys(['cmd'])).map((k) => k.slice('cmd.'.length))
    const lists = await Promise.all(gws.map(async (gw) => await views.control.commands(gw, { deviceId: device, status, limit }) ?? []))
    return { commands: lists.flat().sort((a, b) => b.statusTsMs - a.statusTsMs).slice(0, limit) }
  })

  app.get<{ Params: { gw: string, commandId: string } }>('/api/commands/:gw/:commandId', async (req, reply) => {
    const { gw, commandId } = req.params
    if (!GATEWAY_ID.test(gw) || commandId.length === 0 || commandId.length > 128) return badRequest(reply, 'bad gateway or command id')
    const c = await views.control.command(gw, commandId)
    return c ?? fail(reply, 404, 'not_found', `no command ${commandId} on ${gw}`)
  })

  app.post<{ Body: unknown }>('/api/commands', async (req, reply) => {
    const b = req.body
    if (!plainObject(b)) return badRequest(reply, 'body: expected a JSON object {gatewayId, deviceId, name, args?, ttlMs?}')
    const { gatewayId, deviceId, name, args, ttlMs } = b
    if (typeof gatewayId !== 'string' || !GATEWAY_ID.test(gatewayId)) return badRequest(reply, `gatewayId: ${GATEWAY_ID_RULE}`)
    if (typeof deviceId !== 'string' || !DEVICE_ID.test(deviceId)) return badRequest(reply, `deviceId: ${DEVICE_ID_RULE}`)
    if (typeof name !== 'string' || !COMMAND_NAME.test(name)) return badRequest(reply, 'name: 1-64 characters of [A-Za-z0-9_.:-]')
    if (args !== undefined && !plainObject(args)) return badRequest(reply, 'args: expected an object')
    if (args !== undefined && JSON.stringify(args).length > MAX_ARGS_JSON) return badRequest(reply, `args: at most ${MAX_ARGS_JSON} bytes of JSON`)
    if (ttlMs !== undefined && !(Number.isInteger(ttlMs) && (ttlMs as number) >= 1 && (ttlMs as number) <= MAX_TTL_MS)) return badRequest(reply, `ttlMs: an integer 1..${MAX_TTL_MS}`)
    if (!js) return unavailable(reply, 'no NATS connection for commands')
    const queuedAtMs = Date.now()
    const cmd = { id: `c-${queuedAtMs.toString(36)}-${randomBytes(6).toString('hex')}`, deviceId, name, args: args ?? {}, expiresAtMs: queuedAtMs + ((ttlMs as number | undefined) ?? DEFAULT_TTL_MS) }
    try {
      // The id is the message id too: a retried publish is stored once.
      await js.publish(subjects.commands(gatewayId), JSON.stringify(cmd), { msgID: cmd.id })
    } catch (err) {
      log.warn({ err, gatewayId, deviceId, commandId: cmd.id }, 'command not queued')
      return unavailable(reply, `command not queued: ${(err as Error).message}`)
    }
    let recorded = true
    try {
      await views.control.recordQueued(gatewayId, { commandId: cmd.id, deviceId, name, args: cmd.args, queuedAtMs, expiresAtMs: cmd.expiresAtMs })
    } catch (err) {
      // Queued all the same: the gateway's reports will make it appear in the views.
      recorded = false
      log.warn({ err, gatewayId, commandId: cmd.id }, 'queued command not recorded in the views')
    }
    return reply.code(202).send({ id: cmd.id, commandId: cmd.id, gatewayId, deviceId, name, status: 'queued', expiresAtMs: cmd.expiresAtMs, recorded })
  })

  // --- rule sets -----------------------------------------------------------------------------

  // The rule set text is taken as sent (YAML or JSON), so its scope parses every body as a string.
  app.register(async (scope) => {
    scope.removeContentTypeParser('application/json')
    scope.addContentTypeParser(RULE_TYPES, { parseAs: 'string', bodyLimit: MAX_RULE_SET_BYTES + 1024 }, (_req, body, done) => { done(null, body) })

    scope.put<{ Params: { gw: string }, Body: unknown }>('/api/rules/:gw', { bodyLimit: MAX_RULE_SET_BYTES + 1024 }, async (req, reply) => {
      const { gw } = req.params
      if (!GATEWAY_ID.test(gw)) return badRequest(reply, 'bad gateway id')
      if (typeof req.body !== 'string' || req.body.trim() === '') return badRequest(reply, 'body: the rule set as YAML or JSON text')
      const check = checkRuleSetText(req.body)
      if (!check.ok) return fail(reply, 422, 'invalid_rule_set', check.message)
      let revision: number
      try {
        revision = await (await rulesKv()).put(gw, req.body)
      } catch (err) {
        log.warn({ err, gatewayId: gw }, 'rule set not stored')
        return unavailable(reply, `rule set not stored: ${(err as Error).message}`)
      }
      log.info({ gatewayId: gw, version: check.summary.version, revision }, 'rule set pushed')
      return { gatewayId: gw, revision, ...check.summary }
    })

    // Checks without storing (the editor's "validate").
    scope.post<{ Params: { gw: string }, Body: unknown }>('/api/rules/:gw/validate', { bodyLimit: MAX_RULE_SET_BYTES + 1024 }, async (req, reply) => {
      if (!GATEWAY_ID.test(req.params.gw)) return badRequest(reply, 'bad gateway id')
      if (typeof req.body !== 'string') return badRequest(reply, 'body: the rule set as YAML or JSON text')
      const check = checkRuleSetText(req.body)
      return check.ok ? { ok: true, ...check.summary } : fail(reply, 422, 'invalid_rule_set', check.message)
    })
  })

  app.get<{ Params: { gw: string } }>('/api/rules/:gw', async (req, reply) => {
    const { gw } = req.params
    if (!GATEWAY_ID.test(gw)) return badRequest(reply, 'bad gateway id')
    if (!js) return unavailable(reply, 'no NATS connection for rule sets')
    const [entry, gateway] = await Promise.all([rulesKv().then((k) => k.get(gw)), views.gateway(gw)])
    const running = gateway ? gateway.ruleSetVersion : null
    if (!entry || entry.operation !== 'PUT') return fail(reply, 404, 'not_found', `no rule set stored for ${gw}`)
    const text = entry.string()
    const check = checkRuleSetText(text)
    const version = check.ok ? check.summary.version : null
    return { gatewayId: gw, text, revision: entry.revision, storedAtMs: entry.created.getTime(), version, runningVersion: running, inSync: version !== null && running === version }
  })

  // Every gateway with a stored rule set or a heartbeat: what is stored and what it runs.
  app.get('/api/rules', async (_req, reply) => {
    if (!js) return unavailable(reply, 'no NATS connection for rule sets')
    const k = await rulesKv()
    const jsm = await js.jetstreamManager()
    const pre = `$KV.${CLOUD_BUCKETS.rules}.`
    const si = await jsm.streams.info(`KV_${CLOUD_BUCKETS.rules}`, { subjects_filter: `${pre}>` })
    const stored = Object.keys(si.state.subjects ?? {}).map((s) => s.slice(pre.length))
    const gateways = await views.gateways()
    const ids = [...new Set([...stored, ...gateways.map((g) => g.gatewayId)])].sort()
    const out = await Promise.all(ids.map(async (id) => {
      const e = stored.includes(id) ? await k.get(id) : null
      const check = e && e.operation === 'PUT' ? checkRuleSetText(e.string()) : null
      const version = check?.ok ? check.summary.version : null
      const running = gateways.find((g) => g.gatewayId === id)?.ruleSetVersion ?? null
      return { gatewayId: id, version, revision: e?.operation === 'PUT' ? e.revision : null, runningVersion: running, inSync: version !== null && version === running }
    }))
    return { gateways: out }
  })

  // --- link health, device references ------------------------------------------------------

  app.get<{ Params: { id: string }, Querystring: { from?: string } }>('/api/gateways/:id/health', async (req, reply) => {
    const { id } = req.params
    if (!GATEWAY_ID.test(id)) return badRequest(reply, 'bad gateway id')
    const from = req.query.from === undefined || req.query.from === '' ? undefined : Number(req.query.from)
    if (from !== undefined && !Number.isFinite(from)) return badRequest(reply, 'from: ms since the epoch')
    const samples = await views.control.health(id, { fromMs: from })
    if (!samples) return fail(reply, 404, 'not_found', `no link-health samples for ${id}`)
    return { gatewayId: id, samples }
  })

  app.get<{ Params: { gw: string, device: string } }>('/api/devices/:gw/:device/control', async (req, reply) => {
    const { gw, device } = req.params
    if (!GATEWAY_ID.test(gw) || !DEVICE_ID.test(device)) return badRequest(reply, 'bad gateway or device id')
    return views.control.device(gw, device)
  })

  // --- live updates --------------------------------------------------------------------------

  app.get<{ Querystring: { gateway?: string, device?: string, types?: string } }>('/api/events', async (req, reply) => {
    const { gateway, device } = req.query
    if ((gateway !== undefined && !GATEWAY_ID.test(gateway)) || (device !== undefined && !DEVICE_ID.test(device))) return badRequest(reply, 'bad gateway or device id')
    const types = parseTypes(req.query.types)
    if (types === null) return badRequest(reply, 'types: a comma-separated subset of device,gateway,alert,command,decision')
    if (!live) return unavailable(reply, 'live updates need the views in NATS KV')
    reply.hijack()
    if (!live.attach(reply.raw, { gatewayId: gateway, deviceId: device, types })) {
      reply.raw.writeHead(503, { 'content-type': 'application/json' })
      reply.raw.end(JSON.stringify({ error: 'unavailable', message: 'too many live clients' }))
    }
  })
}
