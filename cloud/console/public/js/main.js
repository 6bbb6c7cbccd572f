// The console's shell: hash routes to pages, one live source driving refreshes, and the fleet
// sampler that keeps a short per-gateway history of backlog and lag for the link-health charts
// when the cloud has no /api/gateways/:id/health.
import { api, attempt, listOf } from './api.js'
import { fill } from './dom.js'
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
  fleet: null,
  fleetError: null,
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

let current = null
let refreshing = false

async function refresh () {
  if (refreshing) return
  refreshing = true
  try {
    const r = await attempt(() => api.fleet())
    if (r.ok) { ctx.fleet = r.data; ctx.fleetError = null; sample(r.data) } else ctx.fleetError = r.error ?? new Error('fleet not available')
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
  const indicator = document.getElementById('live')
  ctx.live = new LiveSource({
    onTick: refresh,
    onEvent: (type, data) => {
      ctx.events.unshift({ type, data, atMs: Date.now() })
      if (ctx.events.length > 200) ctx.events.length = 200
      current?.instance?.onEvent?.(type, data)
    },
    onMode: (mode) => {
      indicator.className = `live ${mode}`
      indicator.textContent = mode === 'sse' ? 'live' : 'polling 2 s'
      indicator.dataset.mode = mode
    },
  })
  window.addEventListener('hashchange', route)
  route()
  ctx.live.start()
}

void start()
