// Rules: which rule set each gateway runs against what the cloud stores for it, and an editor to
// view, validate and push a gateway's rule set. The cloud stores it in the RULES bucket; the gateway
// applies it and reports the version in its heartbeat, which ends the "pending" state here.
import { offlineText } from '../health.js'
import { api, attempt, listOf } from '../api.js'
import { chip, fill, h, NA, table } from '../dom.js'

const EXAMPLE = `version: v1
rules:
  - id: room-warm
    devices: [room-1]
    when: { reading: temperature, above: 8, hysteresis: 1 }
    then:
      - command: { device: cooler-1, name: cooler, args: { on: true } }
      - raiseAlert: { id: room-warm, severity: critical, message: "room above 8 C" }
    else:
      - command: { device: cooler-1, name: cooler, args: { on: false } }
      - clearAlert: { id: room-warm }
`

export function mount (root, [selected]) {
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'))
  const editorCard = h('div', { class: 'card' })
  const message = h('p', { class: 'message', role: 'status', id: 'rules-message' })
  const textarea = h('textarea', { id: 'rules-text', spellcheck: false })
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Rules')),
    h('div', { class: 'grid' }, h('div', { class: 'card' }, h('h2', {}, 'Rule set per gateway'), list), editorCard))
  let loadedFor = null
  let pushed = null

  async function load (gw) {
    loadedFor = gw
    fill(editorCard, h('h2', {}, `Rule set of ${gw}`), h('p', { class: 'muted' }, 'Loading…'))
    const r = await attempt(() => api.rules(gw))
    if (r.unavailable) { fill(editorCard, h('h2', {}, `Rule set of ${gw}`), NA()); return }
    if (!r.ok && r.error.status !== 404) { fill(editorCard, h('h2', {}, `Rule set of ${gw}`), h('p', { class: 'error' }, r.error.message)); return }
    textarea.value = r.ok ? r.data.text : EXAMPLE
    const status = r.ok
      ? h('p', { class: 'muted' }, `Stored: ${r.data.version ?? '?'} (revision ${r.data.revision}) · the gateway runs ${r.data.runningVersion || 'none'} `, r.data.inSync ? chip('in sync', 'ok') : chip('not in sync', 'warn'))
      : h('p', { class: 'muted' }, 'Nothing pushed from the cloud yet: the gateway runs its local rules file, if any. An example to start from:')
    fill(editorCard, h('h2', {}, `Rule set of ${gw}`), status, textarea,
      h('div', { class: 'row' },
        h('button', { type: 'button', class: 'secondary', id: 'rules-validate', onclick: validate }, 'Validate'),
        h('button', { type: 'button', id: 'rules-push', onclick: push }, 'Push to gateway')),
      message)
  }

  async function validate () {
    const v = await attempt(() => api.validateRules(loadedFor, textarea.value))
    fill(message, v.ok ? [chip('valid', 'ok'), ` version ${v.data.version ?? '?'}`] : v.unavailable ? 'Validation is not available on this cloud: push checks it.' : h('span', { class: 'error' }, v.error.message))
  }

  async function push () {
    const gw = loadedFor
    const p = await attempt(() => api.putRules(gw, textarea.value))
    if (!p.ok) { fill(message, p.unavailable ? 'Pushing is not available on this cloud.' : h('span', { class: 'error' }, `Refused: ${p.error.message}`)); return }
    pushed = { gw, version: p.data.version }
    fill(message, `Pushed ${pushed.version} to ${gw} (revision ${p.data.revision}); waiting for the gateway to run it…`)
    await load(gw)
  }

  async function refresh (c) {
    const r = await attempt(() => api.rulesList())
    // Without the rules API, the fleet's heartbeats still tell which version each gateway runs.
    const rows = r.ok ? listOf(r.data, 'gateways') : (c?.fleet?.gateways ?? []).map((g) => ({ gatewayId: g.gatewayId, runningVersion: g.ruleSetVersion, version: null, inSync: null }))
    const known = new Map((c?.fleet?.gateways ?? []).map((g) => [g.gatewayId, g]))
    fill(list, rows.length ? table(['Gateway', 'Runs', 'Stored in the cloud', ''], rows.map((g) => h('tr', { class: g.gatewayId === loadedFor ? 'problem-warn' : '', dataset: { gw: g.gatewayId } },
      h('td', {}, g.gatewayId, known.get(g.gatewayId)?.online === false ? h('span', { class: 'muted' }, ` (${offlineText(known.get(g.gatewayId))})`) : null),
      h('td', { class: 'mono' }, h('span', { dataset: { running: g.runningVersion ?? '' } }, g.runningVersion || 'none')),
      h('td', { class: 'mono' }, g.version ?? '–', ' ', g.inSync === true ? chip('in sync', 'ok') : g.version ? chip('pending', 'warn') : null),
      h('td', {}, h('a', { href: `#/rules/${encodeURIComponent(g.gatewayId)}` }, 'edit'))))) : h('p', { class: 'muted' }, 'No gateways yet.'))
    if (pushed && rows.find((g) => g.gatewayId === pushed.gw)?.runningVersion === pushed.version) {
      fill(message, chip('running', 'ok'), ` ${pushed.gw} runs ${pushed.version}.`)
      pushed = null
    }
    const gw = selected ?? rows[0]?.gatewayId
    if (gw && loadedFor !== gw) await load(gw)
  }

  return { refresh }
}
