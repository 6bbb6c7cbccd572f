// deploy/grafana/ (#15): the dashboards and the Prometheus alert rules name only metrics that a real
// gateway process and a real cloud expose on /metrics; promtool accepts the rules and the scrape
// config and the rules' unit tests pass (promtool: Debian package `prometheus`, installed by
// deploy/setup.sh).
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml } from 'yaml'
import { provision, spawnGateway, startNats, tempDir, waitFor } from '../devkit/index.ts'
import { deferrer, startCloud } from './harness/cloud.ts'

const GRAFANA = fileURLToPath(new URL('../deploy/grafana/', import.meta.url))
const PROM = join(GRAFANA, 'prometheus')

// PromQL words that are not metric names.
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'inf', 'nan'])
// Series Prometheus makes itself, not found on any /metrics.
const SYNTHETIC = new Set(['up', 'scrape_duration_seconds'])

/** The metric names an expression (PromQL, or a Grafana label_values() query) reads. */
export function metricNames (expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, ' ') // strings
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // ranges and subqueries
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ') // label lists
    .replace(/\blabel_values\s*\(\s*([^,)]+)(?:,[^)]*)?\)/g, ' $1 ') // Grafana: label_values(metric, label)
    .replace(/\$\w+/g, ' ') // Grafana variables
  const names = new Set<string>()
  for (const m of s.matchAll(/(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const calls = s.slice(m.index + m[0].length).trimStart().startsWith('(') // a function or an aggregation
    if (!calls && !KEYWORDS.has(m[0].toLowerCase())) names.add(m[0])
  }
  return [...names]
}

/** Every series name a /metrics text can produce: its TYPE lines, with a histogram's and a summary's parts. */
function exposed (text: string): Set<string> {
  const out = new Set<string>()
  for (const m of text.matchAll(/^# TYPE (\S+) (\w+)$/gm)) {
    out.add(m[1])
    if (m[2] === 'histogram') for (const p of ['_bucket', '_sum', '_count']) out.add(m[1] + p)
    if (m[2] === 'summary') for (const p of ['_sum', '_count']) out.add(m[1] + p)
  }
  return out
}

interface Panel { title?: string, panels?: Panel[], targets?: Array<{ expr?: string }> }
interface Dashboard { uid: string, title: string, panels: Panel[], templating?: { list: Array<{ query?: string | { query?: string } }> } }

/** [where, expr] of every query of a dashboard: panel targets (rows included) and variables. */
function dashboardQueries (d: Dashboard): Array<[string, string]> {
  const out: Array<[string, string]> = []
  const walk = (ps: Panel[]): void => {
    for (const p of ps) {
      for (const t of p.targets ?? []) if (t.expr) out.push([`${d.uid}: ${p.title}`, t.expr])
      walk(p.panels ?? [])
    }
  }
  walk(d.panels)
  for (const v of d.templating?.list ?? []) {
    const q = typeof v.query === 'string' ? v.query : v.query?.query
    if (q && /label_values\(/.test(q)) out.push([`${d.uid}: variable`, q])
  }
  return out
}

interface RuleFile { groups: Array<{ name: string, rules: Array<{ alert?: string, record?: string, expr: string }> }> }

test('grafana: the expression parser finds metric names, and only them', () => {
  assert.deepEqual(metricNames('histogram_quantile(0.99, sum by (instance, le) (rate(gateway_decision_seconds_bucket{instance=~"$instance"}[$__rate_interval]))) > 0.002').sort(), ['gateway_decision_seconds_bucket'])
  assert.deepEqual(metricNames('(a_bytes - b_bytes) / (deriv(b_bytes[30m]) > 0) < 4 * 3600 and on (instance) up == 1 or vector(1e-9)').sort(), ['a_bytes', 'b_bytes', 'up'])
  assert.deepEqual(metricNames('label_values(gateway_uplink_up, instance)'), ['gateway_uplink_up'])
  assert.deepEqual(metricNames('max by (gateway) (rec:rule_name) == bool 0'), ['rec:rule_name'])
})

test('grafana: every metric a dashboard or an alert rule names exists on a real gateway\'s or the cloud\'s /metrics', { timeout: 120000 }, async (t) => {
  const defer = deferrer(t)
  const nats = await startNats()
  defer(() => nats.cleanup())
  await provision(nats.url)
  const { cloud, api } = await startCloud(nats, { offlineTimeoutMs: 2000 })
  defer(() => cloud.close())
  // A gateway process as deployed (process metrics on), connected to the cloud's NATS.
  const dir = tempDir('grafana-gw-')
  defer(() => dir.cleanup())
  const gw = await spawnGateway(dir.dir, ['gatewayId=gw-grafana', `uplink.servers=${nats.url}`, 'mqtt.allowAnonymous=true'])
  defer(() => gw.kill('SIGKILL'))
  // The uplink's metrics are its thread's (gateway/uplink/uplink-thread.ts): read once it runs.
  await waitFor(async () => ((await (await fetch(`http://127.0.0.1:${gw.ports.http}/readyz`)).json()) as { uplink?: { link?: string } }).uplink?.link === 'up', 'the gateway\'s uplink to connect', 30000)
  const metrics = new Set([
    ...exposed(await (await fetch(`http://127.0.0.1:${gw.ports.http}/metrics`)).text()),
    ...exposed(await (await fetch(`${api}/metrics`)).text()),
  ])
  assert.ok(metrics.has('gateway_uplink_up') && metrics.has('cloud_fleet_gateway_online'), 'both /metrics were read')

  const rules = parseYaml(readFileSync(join(PROM, 'alerts.yaml'), 'utf8')) as RuleFile
  const recorded = new Set(rules.groups.flatMap((g) => g.rules.flatMap((r) => r.record ? [r.record] : [])))
  const queries: Array<[string, string]> = rules.groups.flatMap((g) => g.rules.map((r) => [`alerts.yaml: ${r.alert ?? r.record}`, r.expr] as [string, string]))
  const dashboards = readdirSync(join(GRAFANA, 'dashboards')).filter((f) => f.endsWith('.json'))
  assert.deepEqual(dashboards.sort(), ['cloud.json', 'gateway.json'])
  for (const f of dashboards) queries.push(...dashboardQueries(JSON.parse(readFileSync(join(GRAFANA, 'dashboards', f), 'utf8')) as Dashboard))

  const unknown: string[] = []
  const named = new Set<string>()
  for (const [where, expr] of queries) {
    for (const name of metricNames(expr)) {
      named.add(name)
      if (!metrics.has(name) && !recorded.has(name) && !SYNTHETIC.has(name)) unknown.push(`${where}: ${name}`)
    }
  }
  assert.deepEqual(unknown, [], 'names that no /metrics has')
  // The alerts the issue asks for are all there, each reading the metric it is about.
  const alerts = new Map(rules.groups.flatMap((g) => g.rules.flatMap((r) => r.alert ? [[r.alert, r.expr] as const] : [])))
  for (const [alert, metric] of [['GatewayOldestUnsentHigh', 'gateway_outbox_oldest_age_seconds'], ['GatewayDiskBudgetFullSoon', 'gateway:outbox_budget_full_in_seconds'],
    ['GatewayUplinkStalled', 'gateway_uplink_stalled'], ['GatewayOffline', 'cloud_fleet_gateway_online'], ['GatewayDecisionLatencyHigh', 'gateway_decision_seconds_bucket'],
    ['GatewayQuarantineRateHigh', 'gateway_dead_letters_total'], ['AggregatorApplyLag', 'cloud_aggregator_consumer_lag_messages']] as const) {
    assert.ok(metricNames(alerts.get(alert) ?? '').includes(metric), `alert ${alert} reads ${metric}`)
  }
  assert.ok(named.size >= 40, `the dashboards and rules name ${named.size} metrics`)

  // The cloud's per-gateway gauges, which GatewayOffline reads, follow the heartbeats: 1, then 0 once silent.
  const online = async (): Promise<string | undefined> => /^cloud_fleet_gateway_online\{gateway="gw-grafana"\} (\d+)$/m.exec(await (await fetch(`${api}/metrics`)).text())?.[1]
  await waitFor(async () => await online() === '1', 'gw-grafana online in the cloud\'s gauge', 20000)
  await gw.kill('SIGKILL')
  await waitFor(async () => await online() === '0', 'gw-grafana offline in the cloud\'s gauge once its heartbeats stop', 20000)
  assert.match(await (await fetch(`${api}/metrics`)).text(), /^cloud_fleet_gateway_heartbeat_age_seconds\{gateway="gw-grafana"\} [\d.]+$/m)
})

test('grafana: promtool accepts the rules and the scrape config, and the rules\' unit tests pass', () => {
  const run = (...args: string[]): void => {
    const r = spawnSync('promtool', args, { cwd: PROM, encoding: 'utf8' })
    assert.ok(!r.error, `promtool not found (${r.error?.message}): bash deploy/setup.sh installs it (Debian package prometheus)`)
    assert.equal(r.status, 0, `promtool ${args.join(' ')}:\n${r.stdout}${r.stderr}`)
  }
  run('check', 'rules', 'alerts.yaml')
  run('check', 'config', 'prometheus.example.yml')
  run('test', 'rules', 'alerts.test.yaml')
})
