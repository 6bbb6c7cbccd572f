// Alerts: every alert's state (active and unacknowledged first, as the cloud orders them) with an
// acknowledge button, and the live feed of raise/clear events, newest first. Alerts clear at the
// gateway, when the rule that raised them sees the condition end.
import { api, attempt } from '../api.js'
import { chip, fill, fmtAgo, fmtTime, h, NA, table } from '../dom.js'
import { alertStateChip } from './gateway.js'

const SEVERITY_KIND = { critical: 'bad', warning: 'warn', info: 'info' }

export function mount (root) {
  const note = h('span', { class: 'muted' })
  const states = h('div', {}, h('p', { class: 'muted' }, 'Loading…'))
  const feed = h('div')
  const message = h('p', { class: 'message', role: 'status', id: 'alerts-message' })
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Alerts'), note), message,
    h('div', { class: 'card' }, h('h2', {}, 'Alerts by state'), states),
    h('div', { class: 'card' }, h('h2', {}, 'Live feed'), feed))

  const ack = async (a) => {
    const r = await attempt(() => api.ackAlert(a, document.getElementById('user')?.textContent || 'operator'))
    fill(message, r.ok ? `Acknowledged ${a.alertId} on ${a.gatewayId}.` : r.unavailable ? 'Acknowledging is not available on this cloud.' : h('span', { class: 'error' }, `Failed: ${r.error.message}`))
    await refresh()
  }

  const devLink = (gw, dev) => dev ? h('a', { href: `#/devices/${encodeURIComponent(gw)}/${encodeURIComponent(dev)}` }, dev) : '–'

  async function refresh () {
    const r = await attempt(() => api.alerts())
    if (r.unavailable) { fill(note, ''); fill(states, NA()); fill(feed, NA()); return }
    if (!r.ok) { fill(states, h('p', { class: 'error' }, r.error.message)); return }
    const { alerts = [], events = [] } = r.data
    const active = alerts.filter((a) => a.active)
    fill(note, `${active.length} active (${active.filter((a) => !a.acknowledged).length} unacknowledged) · updated ${new Date().toLocaleTimeString()}`)
    fill(states, alerts.length
      ? table(['Alert', 'Gateway', 'Device', 'Severity', 'Message', 'State', 'Raised', ''], alerts.map((a) => h('tr', { class: a.active && !a.acknowledged ? 'problem-bad' : a.active ? 'problem-warn' : '', dataset: { alert: a.alertId, gw: a.gatewayId } },
        h('td', { class: 'mono' }, a.alertId),
        h('td', {}, h('a', { href: `#/gateways/${encodeURIComponent(a.gatewayId)}` }, a.gatewayId)),
        h('td', {}, devLink(a.gatewayId, a.deviceId)),
        h('td', {}, chip(a.severity || '–', SEVERITY_KIND[a.severity] ?? '')),
        h('td', { style: 'white-space: normal' }, a.message),
        h('td', { dataset: { field: 'state' } }, alertStateChip(a), a.ack && a.acknowledged ? h('div', { class: 'muted' }, `by ${a.ack.by} ${fmtAgo(a.ack.atMs ?? a.ack.tsMs)}`) : null),
        h('td', {}, fmtTime(a.raisedTsMs), !a.active && a.clearedTsMs ? h('div', { class: 'muted' }, `cleared ${fmtTime(a.clearedTsMs)}`) : null),
        h('td', {}, a.active && !a.acknowledged ? h('button', { class: 'small secondary', type: 'button', onclick: () => ack(a) }, 'Acknowledge') : null),
      )), { id: 'alerts-table' })
      : h('p', { class: 'muted' }, 'No alerts. Rules raise them at the gateways; they appear here as they arrive.'))
    fill(feed, events.length
      ? table(['When', 'Gateway', 'Device', 'Alert', 'Change', 'Message'], events.slice(0, 100).map((e) => h('tr', {},
        h('td', {}, fmtTime(e.tsMs)), h('td', {}, e.gatewayId), h('td', {}, devLink(e.gatewayId, e.deviceId)), h('td', { class: 'mono' }, e.alertId),
        h('td', {}, chip(e.change, e.change === 'raised' ? 'bad' : 'ok')), h('td', { style: 'white-space: normal' }, e.message))), { id: 'alert-feed' })
      : h('p', { class: 'muted' }, 'Nothing raised or cleared yet.'))
  }
  return { refresh }
}
