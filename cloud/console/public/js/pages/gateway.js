// Gateway page: its status and problems, link-health charts (backlog and replication lag over
// time), its devices, dead-letter samples and the rule set it runs.
import { api, attempt, listOf } from '../api.js'
import { lineChart } from '../charts.js'
import { chip, fill, fmtAgo, fmtBytes, fmtDuration, fmtNum, fmtTime, h, NA, table, tile } from '../dom.js'
import { deadLetterTable, reasonCounts } from '../dead-letters.js'
import { deliveryHelp, gatewayDeliveryTiles } from '../delivery.js'
import { judged, statusChip } from '../health.js'
import { lagOf, problemsOf } from './problems.js'

export function mount (root, [gw]) {
  const status = h('span')
  const problems = h('div', { class: 'reasons' })
  const tiles = h('div', { class: 'tiles' })
  const healthNote = h('span', { class: 'muted' })
  const backlogEl = h('div', { class: 'chart', dataset: { chart: 'backlog' } })
  const lagEl = h('div', { class: 'chart', dataset: { chart: 'lag' } })
  const devices = h('div', {}, h('p', { class: 'muted' }, 'Loading…'))
  const delivery = h('div', { class: 'tiles', id: 'delivery' })
  const deadLetters = h('div')
  const alerts = h('div')
  const decisions = h('div')
  root.append(
    h('div', { class: 'page-head' }, h('a', { class: 'crumbs', href: '#/fleet' }, 'Fleet ›'), h('h1', {}, gw), status, problems),
    tiles,
    h('div', { class: 'grid' },
      h('div', { class: 'card' }, h('h2', {}, 'Backlog (events) ', healthNote), backlogEl),
      h('div', { class: 'card' }, h('h2', {}, 'Replication lag'), lagEl)),
    h('div', { class: 'card' }, h('h2', {}, 'Where is the data (summed over devices)'), deliveryHelp(), delivery),
    h('div', { class: 'card' }, h('h2', {}, 'Devices'), devices),
    h('div', { class: 'grid' },
      h('div', { class: 'card' }, h('h2', {}, 'Dead letters'), deadLetters),
      h('div', { class: 'card' }, h('h2', {}, 'Alerts'), alerts),
      h('div', { class: 'card' }, h('h2', {}, 'Recent decisions'), decisions)),
  )
  const backlogChart = lineChart(backlogEl, { series: [{ label: 'backlog', value: (v) => fmtNum(v) }], yLabel: 'events' })
  const lagChart = lineChart(lagEl, { series: [{ label: 'lag', color: '#b91c1c', value: (v) => fmtDuration(v * 1000) }], yLabel: 'seconds' })
  let healthApi = true
  // The last status read: if a later read fails, it is shown again, judged on the clock of now.
  let lastStatus = null

  // Online or "offline since …", then the link as last reported: an offline gateway's link state
  // is its last heartbeat's, marked as such.
  function drawStatus (g, stale) {
    const link = g.online ? chip(`uplink ${g.linkState}`, g.linkState === 'up' ? 'ok' : 'warn') : chip(`last reported: uplink ${g.linkState || '?'}`)
    const channel = g.online ? chip(`rules/commands ${g.cloudChannelState || '?'}`, g.cloudChannelState === 'attached' ? 'ok' : 'warn') : chip(`last reported: rules/commands ${g.cloudChannelState || '?'}`)
    fill(status, statusChip(g), ' ', link, ' ', channel, stale ? h('span', { class: 'error' }, ' · the API did not answer: last known status') : null)
    fill(problems, problemsOf(g).map((p) => p.text).join(' · '))
  }

  return {
    unmount () { backlogChart.destroy(); lagChart.destroy() },
    async refresh (ctx) {
      const [gr, dl, al, dr, hr] = await Promise.all([
        attempt(() => api.gateway(gw)),
        attempt(() => api.deadLetters(gw)),
        attempt(() => api.alerts({ gateway: gw })),
        attempt(() => api.decisions({ gateway: gw, limit: 10 })),
        healthApi ? attempt(() => api.gatewayHealth(gw)) : Promise.resolve({ unavailable: true }),
      ])
      if (!gr.ok) {
        fill(devices, h('p', { class: 'error' }, gr.error?.status === 404 ? `The cloud knows no gateway ${gw}.` : `Cannot read ${gw}: ${gr.error?.message}`))
        if (lastStatus) drawStatus(judged(lastStatus), true)
        return
      }
      lastStatus = gr.data.status
      // From the same answer as the devices: the page reads the gateway's device documents once.
      fill(delivery, gr.data.delivery ? gatewayDeliveryTiles(gr.data.delivery) : NA())
      const g = judged(gr.data.status)
      if (g) {
        drawStatus(g, false)
        fill(tiles,
          tile('Backlog', fmtNum(g.backlogEvents), fmtBytes(g.backlogBytes), g.backlogEvents > 0 ? 'warn' : '', { dataset: { tile: 'backlog' } }),
          tile('Replication lag', fmtDuration(lagOf(g)), g.backlogEvents > 0 ? `oldest unsent ${fmtDuration(g.oldestUnsentAgeMs)}` : 'no backlog · last ingest → applied', lagOf(g) >= 60_000 ? 'warn' : '', { dataset: { tile: 'lag' } }),
          tile('Last heartbeat', fmtAgo(g.lastSeenMs), g.online ? `gateway ${g.version}` : `offline since ${fmtTime(g.lastSeenMs)}`, g.online ? '' : 'bad', { dataset: { tile: 'heartbeat' } }),
          tile('Ingest', fmtNum(g.ingestEventsPerSec, 1), `events/s · uplink ${fmtNum(g.uplinkEventsPerSec, 1)}/s`),
          tile('Devices connected', fmtNum(g.connectedDevices), g.online ? `${gr.data.devices.length} known` : 'as last reported'),
          tile('Rejected / quarantined', `${fmtNum(g.rejectedTotal)} / ${g.quarantinedTotal === undefined ? '–' : fmtNum(g.quarantinedTotal)}`, `${fmtNum(g.shedEventsTotal)} shed`),
          tile('Decision p99', g.decisionP99Ms === undefined ? '–' : `${fmtNum(g.decisionP99Ms, 2)} ms`),
          tile('Rule set', g.ruleSetVersion || (g.ruleSetVersion === undefined ? '–' : 'none'), h('a', { href: `#/rules/${encodeURIComponent(gw)}` }, 'view / edit'), '', { dataset: { tile: 'rules' } }),
        )
      } else {
        fill(status, chip('no heartbeat yet', 'warn'))
      }

      // Link health: the cloud's series if it keeps one, else what this browser sampled since it opened.
      let points
      if (hr.ok) {
        points = listOf(hr.data, 'samples', 'points', 'series', 'health')
        fill(healthNote, '')
      } else {
        if (hr.unavailable) healthApi = false
        points = ctx.samples.get(gw) ?? []
        fill(healthNote, h('span', { class: 'muted' }, '· sampled by this browser since it opened'))
      }
      const series = withGaps(points.map((p) => ({ t: p.tsMs ?? p.t, backlog: p.backlogEvents ?? null, lag: p.replicationLagMs ?? p.oldestUnsentAgeMs ?? null })))
      const xs = series.map((p) => p.t)
      backlogChart.setData(xs, series.map((p) => p.backlog))
      lagChart.setData(xs, series.map((p) => p.lag === null ? null : p.lag / 1000))

      const devRows = [...gr.data.devices].sort((a, b) => a.deviceId.localeCompare(b.deviceId)).map((d) => {
        const href = `#/devices/${encodeURIComponent(gw)}/${encodeURIComponent(d.deviceId)}`
        return h('tr', { class: `clickable ${d.gapsOpen > 0 ? 'problem-warn' : ''}`, dataset: { device: d.deviceId }, onclick: () => { location.hash = href } },
          h('td', {}, h('a', { href }, d.deviceId)),
          h('td', {}, d.lastEventTsMs ? fmtAgo(d.lastEventTsMs) : '–'),
          h('td', { class: 'num' }, fmtNum(d.received)),
          h('td', { class: 'num' }, fmtNum(d.duplicates)),
          h('td', { class: 'num' }, d.gapsOpen > 0 ? chip(fmtNum(d.gapsOpen), 'warn') : '0'))
      })
      fill(devices, devRows.length
        ? table(['Device', 'Last event', { label: 'Received', class: 'num' }, { label: 'Duplicates dropped', class: 'num' }, { label: 'Open gaps', class: 'num' }], devRows, { id: 'devices-table' })
        : h('p', { class: 'muted' }, 'No device of this gateway has reached the cloud yet.'))

      if (dl.unavailable) fill(deadLetters, NA())
      else if (!dl.ok) fill(deadLetters, h('p', { class: 'error' }, dl.error.message))
      else {
        const items = listOf(dl.data, 'deadLetters')
        const counted = Object.keys(dl.data.byReason ?? {}).length > 0
        fill(deadLetters, counted || items.length
          ? [h('p', { class: 'muted' }, `${fmtNum(dl.data.quarantinedTotal ?? 0)} quarantined since the gateway started, by reason:`), reasonCounts(dl.data.byReason),
              items.length ? deadLetterTable(items.slice(0, 50), true) : h('p', { class: 'muted' }, 'None reported in detail (the gateway reports at most outbox.deadLetterReportsPerSec).')]
          : h('p', { class: 'muted' }, 'None: every payload was accepted.'))
      }

      if (al.unavailable) fill(alerts, NA())
      else if (!al.ok) fill(alerts, h('p', { class: 'error' }, al.error.message))
      else {
        const items = listOf(al.data, 'alerts')
        fill(alerts, items.length
          ? table(['Alert', 'Device', 'Severity', 'State', 'Raised'], items.slice(0, 20).map((a) => h('tr', { class: a.active && !a.acknowledged ? 'problem-bad' : '' },
            h('td', { class: 'mono' }, a.alertId), h('td', {}, a.deviceId || '–'), h('td', {}, a.severity || '–'), h('td', {}, alertStateChip(a)), h('td', {}, fmtTime(a.raisedTsMs)))))
          : h('p', { class: 'muted' }, 'No alerts.'))
      }

      if (dr.unavailable) fill(decisions, NA())
      else if (!dr.ok) fill(decisions, h('p', { class: 'error' }, dr.error.message))
      else {
        const items = listOf(dr.data, 'decisions')
        fill(decisions, items.length
          ? table(['When', 'Rule', 'Device', 'Kind', { label: 'Took', class: 'num' }], items.map((d) => h('tr', {},
            h('td', {}, fmtTime(d.tsMs)), h('td', { class: 'mono' }, d.ruleId), h('td', {}, d.deviceId), h('td', {}, d.kind), h('td', { class: 'num' }, `${fmtNum(d.durationMs, 2)} ms`))))
          : h('p', { class: 'muted' }, 'No decisions yet.'))
      }
    },
  }
}

/** active / acknowledged / cleared, as a chip. */
export function alertStateChip (a) {
  if (!a.active) return chip('cleared', 'ok')
  return a.acknowledged ? chip('acknowledged', 'warn') : chip('active', 'bad')
}

// Heartbeats come every few seconds; a longer silence (the link was down) is drawn as a break in the
// line rather than a straight line across what nobody saw.
const SILENCE_MS = 10_000

function withGaps (points) {
  const out = []
  for (const p of points) {
    const prev = out[out.length - 1]
    if (prev && p.t - prev.t > SILENCE_MS) out.push({ t: prev.t + 1, backlog: null, lag: null })
    out.push(p)
  }
  return out
}
