// The rule-set routes (shape in cloud/API.md): store a gateway's rule set in the RULES bucket (the
// gateway watches its key and swaps its rules), check one without storing it, read what is stored
// and whether the gateway runs it. The RULES bucket is opened by the composition (cloud.ts) and
// handed in; without it the routes that need it answer 503.
import type { JetStreamClient } from '@nats-io/jetstream'
import type { KV } from '@nats-io/kv'
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { CLOUD_BUCKETS } from '../../proto/index.ts'
import { CloudError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { FleetViews } from '../views/views.ts'
import { checkRuleSetText, MAX_RULE_SET_BYTES, ruleSetSummary } from './rule-set-check.ts'
import { gatewayId, parse } from './validate.ts'

export interface RuleRoutesOptions {
  views: FleetViews
  /** The RULES bucket and the JetStream client it was opened with; null: 503. */
  rules: { kv: KV, js: JetStreamClient } | null
  log: Logger
}

const RULE_TYPES = ['application/json', 'application/yaml', 'application/x-yaml', 'text/yaml', 'text/x-yaml']
const BODY_LIMIT = MAX_RULE_SET_BYTES + 1024
const ruleParams = z.object({ gw: gatewayId })
const ruleText = z.string({ error: 'body: the rule set as YAML or JSON text' })

export function registerRuleRoutes (app: FastifyInstance, opts: RuleRoutesOptions): void {
  const { views, log } = opts
  const rules = (): { kv: KV, js: JetStreamClient } => {
    if (!opts.rules) throw new CloudError('CLOUD_ERR_UNAVAILABLE', 'no NATS connection for rule sets')
    return opts.rules
  }

  // The rule set text is taken as sent (YAML or JSON), so its scope parses every body as a string.
  app.register(async (scope) => {
    scope.removeContentTypeParser('application/json')
    scope.addContentTypeParser(RULE_TYPES, { parseAs: 'string', bodyLimit: BODY_LIMIT }, (_req, body, done) => { done(null, body) })

    scope.put('/api/rules/:gw', { bodyLimit: BODY_LIMIT }, async (req) => {
      const { gw } = parse(ruleParams, req.params)
      const text = parse(ruleText.refine((t) => t.trim() !== '', 'body: the rule set as YAML or JSON text'), req.body)
      const summary = ruleSetSummary(text)
      const { kv } = rules()
      let revision: number
      try {
        revision = await kv.put(gw, text)
      } catch (err) {
        log.warn({ err, gatewayId: gw }, 'rule set not stored')
        throw new CloudError('CLOUD_ERR_UNAVAILABLE', `rule set not stored: ${(err as Error).message}`, { cause: err })
      }
      log.info({ gatewayId: gw, version: summary.version, revision }, 'rule set pushed')
      return { gatewayId: gw, revision, ...summary }
    })

    // Checks without storing (the editor's "validate").
    scope.post('/api/rules/:gw/validate', { bodyLimit: BODY_LIMIT }, async (req) => {
      parse(ruleParams, req.params)
      return { ok: true, ...ruleSetSummary(parse(ruleText, req.body)) }
    })
  })

  app.get('/api/rules/:gw', async (req) => {
    const { gw } = parse(ruleParams, req.params)
    const { kv } = rules()
    const [entry, gateway] = await Promise.all([kv.get(gw), views.gateway(gw)])
    const running = gateway ? gateway.ruleSetVersion : null
    if (!entry || entry.operation !== 'PUT') throw new CloudError('CLOUD_ERR_NOT_FOUND', `no rule set stored for ${gw}`)
    const text = entry.string()
    const check = checkRuleSetText(text)
    const version = check.ok ? check.summary.version : null
    return { gatewayId: gw, text, revision: entry.revision, storedAtMs: entry.created.getTime(), version, runningVersion: running, inSync: version !== null && running === version }
  })

  // Every gateway with a stored rule set or a heartbeat: what is stored and what it runs.
  app.get('/api/rules', async () => {
    const { kv, js } = rules()
    const jsm = await js.jetstreamManager()
    const pre = `$KV.${CLOUD_BUCKETS.rules}.`
    const si = await jsm.streams.info(`KV_${CLOUD_BUCKETS.rules}`, { subjects_filter: `${pre}>` })
    const stored = Object.keys(si.state.subjects ?? {}).map((s) => s.slice(pre.length))
    const gateways = await views.gateways()
    const ids = [...new Set([...stored, ...gateways.map((g) => g.gatewayId)])].sort()
    const out = await Promise.all(ids.map(async (id) => {
      const e = stored.includes(id) ? await kv.get(id) : null
      const check = e && e.operation === 'PUT' ? checkRuleSetText(e.string()) : null
      const version = check?.ok ? check.summary.version : null
      const running = gateways.find((g) => g.gatewayId === id)?.ruleSetVersion ?? null
      return { gatewayId: id, version, revision: e?.operation === 'PUT' ? e.revision : null, runningVersion: running, inSync: version !== null && version === running }
    }))
    return { gateways: out }
  })
}
