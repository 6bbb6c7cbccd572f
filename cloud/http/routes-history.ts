// A device's history: the rollup tiers by range (`history?res=auto|raw|1m|5m|1h`) and its raw
// events from the TELEMETRY stream (`events?from&to&after&limit&format=json|ndjson|csv`), paged by
// seq and bounded (shape in cloud/API.md). Reads only.
import type { FastifyInstance, FastifyReply } from 'fastify'
import { z } from 'zod'
import { CloudError } from '../errors.ts'
import { autoResolution } from '../views/history.ts'
import { MAX_RAW_LIMIT, type RawEvent, type RawEvents, type RawPage } from '../views/raw-events.ts'
import type { FleetViews } from '../views/views.ts'
import { deviceParams, parse, time } from './validate.ts'

/** `res=auto` answers raw events for ranges up to this long (when the raw history is available). */
export const RAW_AUTO_MAX_MS = 15 * 60_000
/** Events a `res=raw` history answers at most (longer: page with the events route). */
const RAW_HISTORY_LIMIT = 5000

const historyQuery = z.object({
  res: z.enum(['auto', 'raw', '1m', '5m', '1h'], { error: 'auto, raw, 1m, 5m or 1h' }).default('auto'),
  from: time,
  to: time,
})

/** The range of a history request without `from`, by res. */
const DEFAULT_RANGE_MS = { auto: 3600_000, raw: 15 * 60_000, '1m': 3600_000, '5m': 6 * 3600_000, '1h': 24 * 3600_000 } as const

const eventsQuery = z.object({
  from: time,
  to: time,
  after: z.preprocess((v) => v === '' || v === undefined ? 0 : v, z.coerce.number({ error: 'a seq (the `next` of the previous page)' }).int().min(0)),
  limit: z.preprocess((v) => v === '' || v === undefined ? 1000 : v, z.coerce.number({ error: `an integer 1..${MAX_RAW_LIMIT}` }).int().min(1).max(MAX_RAW_LIMIT)),
  format: z.enum(['json', 'ndjson', 'csv'], { error: 'json, ndjson or csv' }).default('json'),
})

/** [from, to) of a request: `to` defaults to now, `from` to `to` less the default range. */
function range (q: { from?: number, to?: number }, defaultMs: number): { from: number, to: number } {
  const to = q.to ?? Date.now()
  const from = q.from ?? to - defaultMs
  if (from >= to) throw new CloudError('CLOUD_ERR_BAD_REQUEST', 'from and to must be times (ms or ISO 8601) with from < to')
  return { from, to }
}

export function registerHistoryRoutes (app: FastifyInstance, opts: { views: FleetViews, raw: RawEvents | null }): void {
  const { views, raw } = opts
  const rawOrUnavailable = (): RawEvents => {
    if (!raw) throw new CloudError('CLOUD_ERR_UNAVAILABLE', 'raw history needs the TELEMETRY stream (NATS), not configured on this API')
    return raw
  }

  app.get('/api/devices/:gw/:device/history', async (req) => {
    const { gw, device } = parse(deviceParams, req.params)
    const q = parse(historyQuery, req.query)
    const { from, to } = range(q, DEFAULT_RANGE_MS[q.res])
    // The data that answers: the one asked for, or for auto raw events for short ranges, else the
    // finest tier that keeps the buckets few.
    const res = q.res !== 'auto' ? q.res : raw && to - from <= RAW_AUTO_MAX_MS ? 'raw' : autoResolution(from, to)
    if (res === 'raw') {
      const page = await rawOrUnavailable().page(gw, device, { from, to, limit: RAW_HISTORY_LIMIT })
      return { gatewayId: gw, deviceId: device, res, requested: q.res, from, to, buckets: [], events: page.events, next: page.next }
    }
    try {
      return { gatewayId: gw, deviceId: device, res, requested: q.res, from, to, buckets: await views.history(gw, device, from, to, res) }
    } catch (err) {
      if (err instanceof RangeError) throw new CloudError('CLOUD_ERR_BAD_REQUEST', err.message, { cause: err })
      throw err
    }
  })

  app.get('/api/devices/:gw/:device/events', async (req, reply) => {
    const { gw, device } = parse(deviceParams, req.params)
    const q = parse(eventsQuery, req.query)
    const { from, to } = range(q, 3600_000)
    const page = await rawOrUnavailable().page(gw, device, { from, to, after: q.after, limit: q.limit })
    if (q.format === 'json') return page
    return sendExport(reply, page, q.format)
  })
}

/** NDJSON (one event a line) or CSV (a column per reading name); the next page's cursor in x-next-after. */
function sendExport (reply: FastifyReply, page: RawPage, format: 'ndjson' | 'csv'): FastifyReply {
  const name = `${page.gatewayId}_${page.deviceId}_${page.from}-${page.to}`.replace(/[^A-Za-z0-9_.-]/g, '_')
  if (page.next !== null) reply.header('x-next-after', String(page.next))
  reply.header('content-disposition', `attachment; filename="${name}.${format}"`)
  if (format === 'ndjson') return reply.type('application/x-ndjson').send(page.events.map((e) => JSON.stringify(e) + '\n').join(''))
  return reply.type('text/csv; charset=utf-8').send(toCsv(page.events))
}

const csvCell = (s: string): string => /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s

/** seq, event time (ms and ISO 8601), ingest time, then a column per reading name (empty where absent). */
export function toCsv (events: RawEvent[]): string {
  const names = [...new Set(events.flatMap((e) => Object.keys(e.readings)))].sort()
  const lines = [['seq', 'eventTsMs', 'eventTime', 'ingestTsMs', ...names].map(csvCell).join(',')]
  for (const e of events) {
    lines.push([String(e.seq), String(e.eventTsMs), new Date(e.eventTsMs).toISOString(), String(e.ingestTsMs), ...names.map((n) => n in e.readings ? String(e.readings[n]) : '')].join(','))
  }
  return lines.join('\n') + '\n'
}
