// Fleet overview: every gateway, problems first and highlighted, with the link and ingest numbers
// an operator checks first.
import { chip, fill, fmtAgo, fmtBytes, fmtDuration, fmtNum, fmtTime, h, table, tile } from '../dom.js'
import { statusChip } from '../health.js'
import { lagOf, problemsOf, severity, sortProblemsFirst } from './problems.js'

export function mount (root) {
  const updated = h('span', { class: 'muted' })
  const stale = h('p', { class: 'stale', id: 'stale', role: 'alert', hidden: true })
  const tiles = h('div', { class: 'tiles' })
  const body = h('div', { class: 'card' }, h('p', { class: 'muted' }, 'Loading…'))
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Fleet'), updated), stale, tiles, body)

  return {
    refresh (ctx) {
      if (!ctx.fleet) {
        fill(body, h('p', { class: 'error' }, `Cannot read the fleet: ${ctx.fleetError?.message ?? 'no answer'}`))
        return
      }
      // Old data is shown as old: the API did not answer the latest read.
      stale.hidden = !ctx.fleetError
      fill(stale, ctx.fleetError ? `Cannot reach the API (${ctx.fleetError.message}): the fleet as of ${fmtTime(ctx.fleet.atMs)}; a gateway whose heartbeat is overdue since then shows offline.` : '')
      const gws = ctx.fleet.gateways
      const problems = gws.filter((g) => severity(g) > 0)
      const bad = gws.filter((g) => severity(g) === 2)
      const sum = (f) => gws.reduce((n, g) => n + (g[f] ?? 0), 0)
      const maxLag = Math.max(0, ...gws.map(lagOf))
      fill(updated, `${ctx.fleet.online} of ${ctx.fleet.total} gateways online · updated ${fmtTime(ctx.fleet.atMs)}`)
      fill(tiles,
        tile('Gateways online', `${ctx.fleet.online} / ${ctx.fleet.total}`, null, ctx.fleet.online < ctx.fleet.total ? 'bad' : '', { dataset: { tile: 'online' } }),
        tile('Problems', String(problems.length), problems.length ? problems.slice(0, 3).map((g) => g.gatewayId).join(', ') : 'none', bad.length ? 'bad' : problems.length ? 'warn' : '', { dataset: { tile: 'problems' } }),
        tile('Backlog', fmtNum(sum('backlogEvents')), `events · ${fmtBytes(sum('backlogBytes'))}`, '', { dataset: { tile: 'backlog' } }),
        tile('Worst replication lag', fmtDuration(maxLag), 'how far the cloud is behind', maxLag >= 60_000 ? 'warn' : ''),
        tile('Ingest', fmtNum(sum('ingestEventsPerSec'), 1), 'events/s', ''),
        tile('Connected devices', fmtNum(sum('connectedDevices')), null, ''),
        tile('Rejected / quarantined', `${fmtNum(sum('rejectedTotal'))} / ${'quarantinedTotal' in (gws[0] ?? {}) ? fmtNum(sum('quarantinedTotal')) : '–'}`, null, ''),
      )
      if (gws.length === 0) {
        fill(body, h('p', { class: 'muted' }, 'No gateway has reported yet. Gateways appear here with their first heartbeat.'))
        return
      }
      const rows = sortProblemsFirst(gws).map((g) => {
        const sev = severity(g)
        const probs = problemsOf(g)
        const open = () => { location.hash = `#/gateways/${encodeURIComponent(g.gatewayId)}` }
        return h('tr', { class: `clickable ${sev === 2 ? 'problem-bad' : sev === 1 ? 'problem-warn' : ''}`, dataset: { gw: g.gatewayId, severity: String(sev) }, onclick: open },
          h('td', {}, h('a', { href: `#/gateways/${encodeURIComponent(g.gatewayId)}` }, g.gatewayId), probs.length ? h('div', { class: 'reasons' }, probs.map((p) => p.text).join(' · ')) : null),
          h('td', { dataset: { field: 'online' } }, statusChip(g), h('div', { class: 'muted' }, fmtAgo(g.lastSeenMs))),
          // An offline gateway's numbers are its last heartbeat's: shown, but marked as such.
          h('td', { dataset: { field: 'link' } }, g.online ? chip(g.linkState || '?', g.linkState === 'up' ? 'ok' : g.linkState === 'refused' ? 'bad' : 'warn') : chip(`last: ${g.linkState || '?'}`)),
          h('td', { class: 'num', dataset: { field: 'backlog' } }, fmtNum(g.backlogEvents), h('div', { class: 'muted' }, fmtBytes(g.backlogBytes))),
          h('td', { class: 'num', dataset: { field: 'lag' } }, fmtDuration(lagOf(g)), g.backlogEvents > 0 ? h('div', { class: 'muted' }, `oldest ${fmtDuration(g.oldestUnsentAgeMs)}`) : null),
          h('td', { class: 'num' }, fmtAgo(g.lastAckTsMs)),
          h('td', { class: 'num', dataset: { field: 'ingest' } }, fmtNum(g.ingestEventsPerSec, 1)),
          h('td', { class: 'num' }, fmtNum(g.uplinkEventsPerSec, 1)),
          h('td', { class: 'num' }, fmtNum(g.connectedDevices)),
          h('td', { class: 'num' }, fmtNum(g.rejectedTotal), ' / ', g.quarantinedTotal === undefined ? '–' : fmtNum(g.quarantinedTotal)),
          h('td', { class: 'num' }, fmtNum(g.shedEventsTotal)),
          h('td', { class: 'num' }, g.decisionP99Ms === undefined ? '–' : `${fmtNum(g.decisionP99Ms, 2)} ms`),
          h('td', { class: 'mono' }, g.ruleSetVersion || '–'),
        )
      })
      fill(body, table([
        'Gateway', 'Status', 'Uplink', { label: 'Backlog', class: 'num' }, { label: 'Repl. lag', class: 'num' }, { label: 'Last ack', class: 'num' },
        { label: 'Ingest/s', class: 'num' }, { label: 'Uplink/s', class: 'num' }, { label: 'Devices', class: 'num' }, { label: 'Rejected / quar.', class: 'num' },
        { label: 'Shed', class: 'num' }, { label: 'Decision p99', class: 'num' }, 'Rules',
      ], rows, { id: 'fleet-table' }))
    },
  }
}
