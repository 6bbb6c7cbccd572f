// Device page: latest readings (updated live), history charts with a time-range picker (the API
// picks raw events for short ranges, else a rollup tier: the resolution used is shown), export links
// (CSV, NDJSON) of the range's raw events, delivery accounting, and the device's alerts, decisions
// and commands.
import { statusChip } from '../health.js'
import { api, attempt, listOf } from '../api.js'
import { lineChart } from '../charts.js'
import { deadLetterTable, reasonCounts } from '../dead-letters.js'
import { deliveryHelp, deviceDeliveryTiles } from '../delivery.js'
import { chip, fill, fmtAgo, fmtNum, fmtTime, h, NA, table, tile } from '../dom.js'

const RANGES = [
  { id: '15m', label: '15 min', ms: 15 * 60_000 },
  { id: '1h', label: '1 h', ms: 3600_000 },
  { id: '6h', label: '6 h', ms: 6 * 3600_000 },
  { id: '24h', label: '24 h', ms: 24 * 3600_000 },
  { id: '7d', label: '7 days', ms: 7 * 24 * 3600_000 },
  { id: '90d', label: '90 days', ms: 90 * 24 * 3600_000 },
]
const RES_LABEL = { raw: 'raw events', '1m': '1-minute rollups', '5m': '5-minute rollups', '1h': '1-hour rollups' }
/** Raw events of the range the export links ask for (the events route's bound). */
const EXPORT_LIMIT = 100000
// Long ranges change slowly: their history is re-read at most this often.
const SLOW_HISTORY_MS = 60_000

export function mount (root, [gw, dev]) {
  let range = RANGES[1]
  let historyReadMs = 0
  const charts = new Map()
  const updated = h('span', { class: 'muted' })
  // Shown only while the device's gateway is offline: its readings are then as old as that.
  const gwStatus = h('span', { dataset: { gatewayStatus: '' } })
  const meta = h('div', { class: 'tags', id: 'event-meta' })
  const readings = h('div', { class: 'readings', id: 'readings' }, h('p', { class: 'muted' }, 'Loading…'))
  const accounting = h('div', { class: 'tiles', id: 'accounting' })
  const delivery = h('div', { class: 'tiles', id: 'delivery' })
  const picker = h('div', { class: 'segmented', id: 'range' })
  const chartsEl = h('div', { class: 'grid', id: 'history' })
  const resolution = h('span', { class: 'muted', id: 'history-res' })
  const exports = h('span', { class: 'tags', id: 'history-export' })
  const lists = { alerts: h('div'), decisions: h('div'), commands: h('div'), deadLetters: h('div') }
  const drawPicker = () => fill(picker, RANGES.map((r) => h('button', { type: 'button', class: r === range ? 'active' : '', dataset: { range: r.id }, onclick: () => { range = r; historyReadMs = 0; drawPicker(); void loadHistory() } }, r.label)))
  drawPicker()
  root.append(
    h('div', { class: 'page-head' },
      h('span', { class: 'crumbs' }, h('a', { href: '#/fleet' }, 'Fleet'), ' › ', h('a', { href: `#/gateways/${encodeURIComponent(gw)}` }, gw), ' ›'),
      h('h1', {}, dev), gwStatus, updated,
      h('a', { href: `#/commands/${encodeURIComponent(gw)}/${encodeURIComponent(dev)}` }, 'Send a command…')),
    h('div', { class: 'card' }, h('h2', {}, 'Latest readings'), readings, meta),
    h('div', { class: 'card' }, h('h2', {}, 'Where is my data'), deliveryHelp(), delivery),
    h('div', { class: 'card' }, h('h2', {}, 'Delivery accounting'), accounting),
    h('div', { class: 'card' }, h('div', { class: 'page-head' }, h('h2', {}, 'History'), picker, resolution, exports), chartsEl),
    h('div', { class: 'grid' },
      h('div', { class: 'card' }, h('h2', {}, 'Alerts'), lists.alerts),
      h('div', { class: 'card' }, h('h2', {}, 'Decisions'), lists.decisions),
      h('div', { class: 'card' }, h('h2', {}, 'Commands'), lists.commands),
      h('div', { class: 'card' }, h('h2', {}, 'Dead letters'), lists.deadLetters)),
  )

  async function loadHistory () {
    const to = Date.now()
    const from = to - range.ms
    const r = await attempt(() => api.history(gw, dev, { from, to, res: 'auto' }))
    historyReadMs = Date.now()
    const base = `/api/devices/${encodeURIComponent(gw)}/${encodeURIComponent(dev)}/events?from=${from}&to=${to}&limit=${EXPORT_LIMIT}`
    fill(exports, h('span', { class: 'muted' }, 'export raw events:'),
      h('a', { href: `${base}&format=csv`, download: '', dataset: { export: 'csv' } }, 'CSV'),
      h('a', { href: `${base}&format=ndjson`, download: '', dataset: { export: 'ndjson' } }, 'NDJSON'))
    if (!r.ok) { fill(chartsEl, r.unavailable ? NA() : h('p', { class: 'error' }, r.error.message)); return }
    const raw = r.data.res === 'raw'
    fill(resolution, raw ? `${RES_LABEL.raw}: each point one reading${r.data.next !== null ? ' (the first 5,000)' : ''}` : `${RES_LABEL[r.data.res] ?? r.data.res}: avg per bucket, with min and max`)
    resolution.dataset.res = r.data.res
    // Raw events as points: the value is its own avg, min and max.
    const buckets = raw
      ? (r.data.events ?? []).map((e) => ({ start: e.eventTsMs, readings: Object.fromEntries(Object.entries(e.readings).map(([n, v]) => [n, { avg: v, min: v, max: v }])) }))
      : r.data.buckets
    const names = [...new Set(buckets.flatMap((b) => Object.keys(b.readings)))].sort()
    if (names.length === 0) { for (const c of charts.values()) c.chart.destroy(); charts.clear(); fill(chartsEl, h('p', { class: 'muted' }, 'No readings in this range.')); return }
    for (const [name, c] of charts) if (!names.includes(name)) { c.chart.destroy(); c.el.remove(); charts.delete(name) }
    if (chartsEl.querySelector('p')) fill(chartsEl)
    for (const name of names) {
      let c = charts.get(name)
      if (!c) {
        const plot = h('div', { class: 'chart' })
        const el = h('div', { dataset: { chart: name } }, h('div', { class: 'chart-title' }, name), plot)
        chartsEl.append(el)
        const fmt = (v) => fmtNum(v, 2)
        c = { el, chart: lineChart(plot, { series: [{ label: 'avg', value: fmt }, { label: 'min', color: '#93a3c4', width: 1, dash: [4, 4], value: fmt }, { label: 'max', color: '#93a3c4', width: 1, dash: [4, 4], value: fmt }] }) }
        charts.set(name, c)
      }
      const pick = (f) => buckets.map((b) => b.readings[name]?.[f] ?? null)
      c.chart.setData(buckets.map((b) => b.start), pick('avg'), pick('min'), pick('max'))
      c.chart.setRange(to - range.ms, to)
    }
  }

  const listInto = (el, r, key, row, headers, empty) => {
    if (r.unavailable) return fill(el, NA())
    if (!r.ok) return fill(el, h('p', { class: 'error' }, r.error.message))
    const items = listOf(r.data, key)
    fill(el, items.length ? table(headers, items.slice(0, 20).map(row)) : h('p', { class: 'muted' }, empty))
  }

  return {
    unmount () { for (const c of charts.values()) c.chart.destroy() },
    async refresh (ctx) {
      const g = ctx?.fleet?.gateways.find((x) => x.gatewayId === gw)
      fill(gwStatus, g && !g.online ? statusChip(g) : null, g && !g.online ? h('span', { class: 'muted' }, ` its gateway ${gw} is offline: readings since its last heartbeat have not reached the cloud`) : null)
      const [dr, control, lr] = await Promise.all([
        attempt(() => api.device(gw, dev)),
        attempt(() => api.deviceControl(gw, dev)),
        attempt(() => api.deviceDelivery(gw, dev)),
      ])
      if (lr.ok) fill(delivery, deviceDeliveryTiles(lr.data))
      else fill(delivery, lr.unavailable ? NA() : h('p', { class: lr.error?.status === 404 ? 'muted' : 'error' }, lr.error?.status === 404 ? 'Its gateway has not reported this device yet.' : lr.error?.message))
      // One answer holds the device's references to its alerts, decisions and commands.
      const part = (key) => control.ok ? { ok: true, data: control.data[key] ?? [] } : control
      const [ar, der, cr] = [part('alerts'), part('decisions'), part('commands')]
      if (!dr.ok) {
        fill(readings, h('p', { class: 'error' }, dr.error?.status === 404 ? `No data from ${gw}/${dev} yet.` : `Cannot read the device: ${dr.error?.message}`))
      } else {
        const d = dr.data
        fill(updated, d.latest ? `last event ${fmtAgo(d.latest.eventTsMs)} · seq ${d.latest.seq}` : 'no event yet')
        // The latest event's labels and MQTT 5 user properties (e.g. traceparent), as key=value chips.
        const tags = [...Object.entries(d.latest?.labels ?? {}).map(([k, v]) => ['label', k, v]), ...Object.entries(d.latest?.userProperties ?? {}).map(([k, v]) => ['property', k, v])]
        fill(meta, tags.map(([kind, k, v]) => h('span', { class: 'chip', title: kind === 'label' ? 'label' : 'MQTT 5 user property', dataset: { [kind]: k } }, `${k}=${v}`)))
        const entries = Object.entries(d.latest?.readings ?? {}).sort(([a], [b]) => a.localeCompare(b))
        const before = new Map([...readings.querySelectorAll('[data-reading]')].map((el) => [el.dataset.reading, el.dataset.value]))
        fill(readings, entries.length ? entries.map(([name, r]) => {
          const el = tile(name, fmtNum(r.value, 3), `${fmtTime(r.eventTsMs)} · seq ${r.seq}`, '', { dataset: { reading: name, value: String(r.value) } })
          el.classList.add('reading')
          if (before.has(name) && before.get(name) !== String(r.value)) el.classList.add('changed')
          return el
        }) : h('p', { class: 'muted' }, 'No readings yet.'))
        const a = d.accounting
        fill(accounting,
          tile('Received', fmtNum(a.received), 'distinct events applied', '', { dataset: { acct: 'received' } }),
          tile('Duplicates dropped', fmtNum(a.duplicates), 'redelivered, applied once', '', { dataset: { acct: 'duplicates' } }),
          tile('Open gaps', fmtNum(a.gapsOpen), `${fmtNum(a.gapRangesOpen)} holes, may still arrive`, a.gapsOpen > 0 ? 'warn' : '', { dataset: { acct: 'gaps' } }),
          tile('Explained gaps', fmtNum(a.gapsExplained), 'shed at the gateway', a.gapsExplained > 0 ? 'warn' : ''),
          tile('Filled late', fmtNum(a.gapsClosed), 'arrived out of order'),
          tile('Highest seq', fmtNum(a.highestSeq), a.received + a.gapsExplained === a.highestSeq ? 'all accounted for' : 'some still missing'),
        )
      }
      if (Date.now() - historyReadMs > (range.ms > 6 * 3600_000 ? SLOW_HISTORY_MS : 0)) await loadHistory()
      listInto(lists.alerts, ar, 'alerts', (x) => h('tr', { dataset: { alert: x.alertId } }, h('td', {}, fmtTime(x.tsMs)), h('td', { class: 'mono' }, x.alertId), h('td', {}, chip(x.change, x.change === 'raised' ? 'bad' : 'ok')), h('td', { style: 'white-space: normal' }, x.message)), ['When', 'Alert', 'Change', 'Message'], 'No alerts.')
      listInto(lists.decisions, der, 'decisions', (x) => h('tr', { dataset: { decision: x.ruleId } }, h('td', {}, fmtTime(x.tsMs)), h('td', { class: 'mono' }, x.ruleId), h('td', {}, x.kind), h('td', { class: 'num' }, `${fmtNum(x.durationMs, 2)} ms`)), ['When', 'Rule', 'Kind', 'Took'], 'No decisions.')
      if (!control.ok) fill(lists.deadLetters, control.unavailable ? NA() : h('p', { class: 'error' }, control.error.message))
      else {
        const dead = control.data.deadLetters ?? []
        const byReason = {}
        for (const d of dead) byReason[d.reason] = (byReason[d.reason] ?? 0) + 1
        fill(lists.deadLetters, dead.length
          ? [h('p', { class: 'muted' }, `The last ${fmtNum(dead.length)} reported, by reason:`), reasonCounts(byReason), deadLetterTable(dead.slice(0, 20), false)]
          : h('p', { class: 'muted' }, 'None: every payload of this device was accepted.'))
      }
      listInto(lists.commands, cr, 'commands', (x) => h('tr', { dataset: { command: x.commandId } }, h('td', {}, fmtTime(x.statusTsMs)), h('td', {}, x.name), h('td', {}, commandChip(x.status))), ['When', 'Command', 'Status'], 'No commands.')
    },
  }
}

export function commandChip (status) {
  const kind = { acknowledged: 'ok', delivered: 'info', sent: 'info', queued: '', timed_out: 'bad', expired: 'bad', rejected: 'bad' }[status] ?? ''
  return chip(status ?? '?', kind)
}
