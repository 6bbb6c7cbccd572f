// The console's shell: hash routes to pages, one live source driving refreshes, and the fleet
// sampler that keeps a short per-gateway history of backlog and lag for the link-health charts
// when the cloud has no /api/gateways/:id/health.
import { api, attempt, listOf } from './api.js'
import { fill } from './dom.js'
import { judged, LiveBadge, noteServer } from './health.js'
import { LiveSource } from './live.js'
import * as fleetPage from './pages/fleet.js'
import * as gatewayPage from './pages/gateway.js'
import * as devicePage from './pages/device.js'
import * as alertsPage from './pages/alerts.js'
import * as rulesPage from './pages/rules.js'
import * as commandsPage from './pages/commands.js'
import * as replicasPage from './pages/replicas.js'

const ROUTES = [
  { re: /^#\/fleet$/, page: fleetPage, nav: 'fleet' },
  { re: /^#\/gateways\/([^/]+)$/, page: gatewayPage, nav: 'fleet' },
  { re: /^#\/devices\/([^/]+)\/([^/]+)$/, page: devicePage, nav: 'fleet' },
  { re: /^#\/alerts$/, page: alertsPage, nav: 'alerts' },
  { re: /^#\/rules(?:\/([^/]+))?$/, page: rulesPage, nav: 'rules' },
  { re: /^#\/commands(?:\/([^/]+)\/([^/]+))?$/, page: commandsPage, nav: 'commands' },
  { re: /^#\/replicas$/, page: replicasPage, nav: 'replicas' },
]

// 30 min of 2 s samples per gateway; the oldest sample is dropped beyond it.
const MAX_SAMPLES = 900

/** State shared by the pages: the latest fleet answer and the sampled link-health series. */
const ctx = {
  /** The fleet as shown (see present()), the last answer as received, and the error of the latest read. */
  fleet: null,
  rawFleet: null,
  fleetError: null,
  badge: null,
  samples: new Map(),
  events: [],
  live: null,
}

function sample (fleet) {
  const now = Date.now()
  for (const g of fleet.gateways) {
    let s = ctx.samples.get(g.gatewayId)
    if (!s) ctx.samples.set(g.gatewayId, (s = []))
    // One point per heartbeat the cloud stored; a silent gateway keeps its last value (drawn flat).
    s.push({ tsMs: now, backlogEvents: g.backlogEvents, oldestUnsentAgeMs: g.oldestUnsentAgeMs, replicationLagMs: g.replicationLagMs, online: g.online })
    if (s.length > MAX_SAMPLES) s.shift()
  }
}

/**
 * The fleet as the pages show it: the last answer, each gateway's online-ness judged again now (a
 * heartbeat overdue since that answer makes it offline), with the time of the answer.
 */
function present (raw, atMs) {
  const gateways = raw.gateways.map(judged)
  return { ...raw, gateways, online: gateways.filter((g) => g.online).length, total: gateways.length, atMs }
}

let current = null
let refreshing = false

async function refresh () {
  if (refreshing) return
  refreshing = true
  try {
    const r = await attempt(() => api.fleet())
    if (r.ok) {
      noteServer(r.data)
      ctx.rawFleet = { data: r.data, atMs: Date.now() }
      ctx.fleetError = null
      sample(r.data)
    } else ctx.fleetError = r.error ?? new Error('fleet not available')
    ctx.fleet = ctx.rawFleet ? present(ctx.rawFleet.data, ctx.rawFleet.atMs) : null
    ctx.badge.api(ctx.fleetError)
    updateAlertBadge()
    await current?.instance?.refresh?.(ctx)
  } finally {
    refreshing = false
  }
}

async function updateAlertBadge () {
  const badge = document.getElementById('alert-count')
  const r = await attempt(() => api.alerts({ active: 1 }))
  const active = r.ok ? listOf(r.data, 'alerts').filter((a) => a.active && !a.acknowledged).length : 0
  badge.hidden = active === 0
  badge.textContent = String(active)
}

function route () {
  const hash = location.hash || '#/fleet'
  const match = ROUTES.map((r) => ({ r, m: hash.match(r.re) })).find((x) => x.m)
  if (!match) { location.hash = '#/fleet'; return }
  current?.instance?.unmount?.()
  const root = document.getElementById('page')
  fill(root)
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.nav === match.r.nav)
  const params = match.m.slice(1).map((p) => p === undefined ? undefined : decodeURIComponent(p))
  current = { instance: match.r.page.mount(root, params, ctx) }
  void refresh()
}

async function start () {
  const s = await attempt(() => api.session())
  if (s.ok) document.getElementById('user').textContent = s.data.user
  ctx.badge = new LiveBadge(document.getElementById('live'))
  ctx.live = new LiveSource({
    onTick: refresh,
    onEvent: (type, data) => {
      ctx.events.unshift({ type, data, atMs: Date.now() })
      if (ctx.events.length > 200) ctx.events.length = 200
      current?.instance?.onEvent?.(type, data)
    },
    onMode: (mode, how) => ctx.badge.stream(mode, how),
  })
  window.addEventListener('hashchange', route)
  route()
  ctx.live.start()
}

void start()
