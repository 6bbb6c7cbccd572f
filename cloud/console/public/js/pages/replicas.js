// Replicas: the aggregator replicas of this cloud, the partitions each applies with their lag, and
// the holder of every partition's lease (README "Scaling out"). Any replica serves the same list.
import { api, attempt } from '../api.js'
import { chip, fill, fmtAgo, h, NA, table } from '../dom.js'

export function mount (root) {
  const note = h('span', { class: 'muted' })
  const replicas = h('div', {}, h('p', { class: 'muted' }, 'Loading…'))
  const leases = h('div')
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Replicas'), note),
    h('div', { class: 'card' }, h('h2', {}, 'Aggregator replicas'), replicas),
    h('div', { class: 'card' }, h('h2', {}, 'Partitions'), leases))

  async function refresh () {
    const r = await attempt(() => api.replicas())
    if (r.unavailable) { fill(note, ''); fill(replicas, NA()); fill(leases, NA()); return }
    if (!r.ok) { fill(replicas, h('p', { class: 'error' }, r.error.message)); return }
    const { partitions, replicas: list = [], leases: held = [] } = r.data
    const live = list.filter((x) => x.live)
    const free = held.filter((l) => !l.owner || !l.ownerLive)
    fill(note, `${live.length} live replica${live.length === 1 ? '' : 's'} · ${partitions} partitions${free.length ? ` · ${free.length} without a live holder` : ''} · updated ${new Date().toLocaleTimeString()}`)
    fill(replicas, list.length
      ? table(['Replica', 'State', 'Host', 'Partitions', 'Lag (batches)', 'Handovers (acquired / released / lost)', 'Seen'], list.map((x) => h('tr', { class: x.live ? '' : 'problem-warn', dataset: { replica: x.replicaId } },
        h('td', { class: 'mono' }, x.replicaId),
        h('td', {}, chip(x.live ? 'live' : 'silent', x.live ? 'ok' : 'warn')),
        h('td', {}, `${x.host} (pid ${x.pid})`),
        h('td', { class: 'mono', dataset: { field: 'partitions' } }, x.partitions.join(' ') || '– (standby)'),
        h('td', {}, Object.values(x.lag ?? {}).reduce((s, n) => s + n, 0).toLocaleString()),
        h('td', {}, `${x.handovers.acquired} / ${x.handovers.released} / ${x.handovers.lost}`),
        h('td', {}, fmtAgo(x.atMs)),
      )), { id: 'replicas-table' })
      : h('p', { class: 'muted' }, 'No aggregator replica registered (API-only replicas do not register).'))
    fill(leases, table(['Partition', 'Held by', ''], held.map((l) => h('tr', { class: l.owner && l.ownerLive ? '' : 'problem-warn' },
      h('td', { class: 'mono' }, l.partition === 'u' ? 'u (unmapped)' : l.partition),
      h('td', { class: 'mono' }, l.owner || '–'),
      h('td', {}, l.owner && l.ownerLive ? chip('applied', 'ok') : chip(l.owner ? 'holder silent: taken over after the lease TTL' : 'free', 'warn')),
    )), { id: 'leases-table' }))
  }
  return { refresh }
}
