// Commands: send a command to a device and watch it go queued → sent → delivered → acknowledged
// (or timed out / expired / rejected). The list is the cloud's recent commands (from rules and from
// operators); the ones sent from this browser are marked.
import { api, attempt, listOf } from '../api.js'
import { fill, fmtTime, h, NA, table } from '../dom.js'
import { commandChip } from './device.js'

const STORE_KEY = 'console.sentCommands'
const mine = () => { try { return new Set(JSON.parse(sessionStorage.getItem(STORE_KEY) ?? '[]')) } catch { return new Set() } }

export function mount (root, [gwParam, devParam]) {
  const sent = mine()
  const gwSelect = h('select', { name: 'gateway', id: 'cmd-gateway', onchange: () => void loadDevices() })
  const devSelect = h('select', { name: 'device', id: 'cmd-device' })
  const name = h('input', { name: 'name', id: 'cmd-name', placeholder: 'e.g. cooler', required: true })
  const args = h('input', { name: 'args', id: 'cmd-args', placeholder: '{"on": true}', class: 'mono' })
  const ttl = h('input', { name: 'ttl', id: 'cmd-ttl', type: 'number', min: 1, value: 60 })
  const message = h('p', { class: 'message', role: 'status', id: 'cmd-message' })
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'))
  const form = h('form', { id: 'command-form', onsubmit: (ev) => { ev.preventDefault(); void send() } },
    h('div', { class: 'row' },
      h('label', {}, 'Gateway', gwSelect), h('label', {}, 'Device', devSelect), h('label', {}, 'Command', name),
      h('label', {}, 'Arguments (JSON object)', args), h('label', {}, 'Expires after (s)', ttl), h('button', { type: 'submit' }, 'Send')),
    message)
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Commands')), h('div', { class: 'card' }, h('h2', {}, 'Send a command'), form), h('div', { class: 'card' }, h('h2', {}, 'Recent commands'), list))
  let gatewaysShown = ''

  async function loadDevices () {
    const gw = gwSelect.value
    if (!gw) return
    const r = await attempt(() => api.gateway(gw))
    const ids = r.ok ? r.data.devices.map((d) => d.deviceId).sort() : []
    const keep = devSelect.value || devParam
    fill(devSelect, ids.map((id) => h('option', { value: id, selected: id === keep }, id)))
  }

  async function send () {
    let parsed
    try { parsed = args.value.trim() ? JSON.parse(args.value) : {} } catch { parsed = null }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) { fill(message, h('span', { class: 'error' }, 'Arguments must be a JSON object, e.g. {"on": true}.')); return }
    const body = { gatewayId: gwSelect.value, deviceId: devSelect.value, name: name.value.trim(), args: parsed, ttlMs: Math.round(Number(ttl.value) * 1000) }
    if (!body.gatewayId || !body.deviceId || !body.name) { fill(message, h('span', { class: 'error' }, 'Choose a gateway and a device, and name the command.')); return }
    const r = await attempt(() => api.sendCommand(body))
    if (!r.ok) { fill(message, r.unavailable ? 'Sending commands is not available on this cloud.' : h('span', { class: 'error' }, `Refused: ${r.error.message}`)); return }
    sent.add(r.data.id)
    sessionStorage.setItem(STORE_KEY, JSON.stringify([...sent].slice(-100)))
    fill(message, `Command ${r.data.id} queued for ${body.deviceId}.`)
    await refreshList()
  }

  async function refreshList () {
    const r = await attempt(() => api.commands({ limit: 50 }))
    if (r.unavailable) { fill(list, NA()); return }
    if (!r.ok) { fill(list, h('p', { class: 'error' }, r.error.message)); return }
    const items = listOf(r.data, 'commands')
    fill(list, items.length ? table(['Last change', 'Gateway', 'Device', 'Command', 'From', 'Status', 'Progress'], items.map((c) => h('tr', { class: sent.has(c.commandId) ? 'problem-warn' : '', dataset: { command: c.commandId } },
      h('td', {}, fmtTime(c.statusTsMs)), h('td', {}, c.gatewayId),
      h('td', {}, h('a', { href: `#/devices/${encodeURIComponent(c.gatewayId)}/${encodeURIComponent(c.deviceId)}` }, c.deviceId)),
      h('td', { class: 'mono' }, `${c.name} ${c.args ? JSON.stringify(c.args) : ''}`),
      h('td', {}, c.source === 'rule' ? `rule ${c.ruleId}` : sent.has(c.commandId) ? 'you' : c.source),
      h('td', { dataset: { field: 'status' } }, commandChip(c.status)),
      h('td', { class: 'muted' }, (c.timeline ?? []).map((t) => t.status).join(' → '), c.attempts > 1 ? ` (${c.attempts} attempts)` : ''))), { id: 'commands-table' })
      : h('p', { class: 'muted' }, 'No commands yet.'))
  }

  return {
    async refresh (c) {
      const ids = (c.fleet?.gateways ?? []).map((g) => g.gatewayId).sort()
      if (ids.join() !== gatewaysShown) {
        const keep = gwSelect.value || gwParam
        fill(gwSelect, ids.map((id) => h('option', { value: id, selected: id === keep }, id)))
        gatewaysShown = ids.join()
        await loadDevices()
      }
      await refreshList()
    },
  }
}
