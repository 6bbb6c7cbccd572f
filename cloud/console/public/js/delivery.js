// The per-device delivery ledger ("where is my data"): one device's marks as tiles (device page), and
// a gateway's sum (gateway page). Accepted and replicated are the gateway's figures as of its last
// report (stale ones say so); applied and shed are the cloud's own accounting.
import { chip, fmtAgo, fmtDuration, fmtNum, h, tile } from './dom.js'

const seq = (v) => v === null || v === undefined ? '–' : fmtNum(v)

/** Tiles of one device's ledger (GET /api/devices/:gw/:device/delivery). */
export function deviceDeliveryTiles (d) {
  const behind = (d.acceptedSeq ?? 0) - (d.replicatedSeq ?? 0)
  const unapplied = (d.replicatedSeq ?? 0) - (d.appliedSeq ?? 0)
  const shedCount = d.shedSettled + d.shed.reduce((s, [a, b]) => s + b - a + 1, 0)
  const reported = d.reportedMs === null ? 'never reported by its gateway' : `reported ${fmtAgo(d.reportedMs, d.nowMs)}`
  return [
    tile('Accepted at the gateway', seq(d.acceptedSeq), d.stale ? chip(`stale: ${reported}`, 'warn') : reported, d.stale ? 'warn' : '', { dataset: { delivery: 'accepted' } }),
    tile('Replicated', seq(d.replicatedSeq), behind > 0 ? `${fmtNum(behind)} behind accepted` : 'acknowledged by JetStream', behind > 0 ? 'warn' : '', { dataset: { delivery: 'replicated' } }),
    tile('Applied in the cloud', seq(d.appliedSeq), unapplied > 0 ? `${fmtNum(unapplied)} behind replicated` : unapplied < 0 ? 'ahead of the acks the gateway heard' : 'highest seq applied', unapplied > 0 ? 'warn' : '', { dataset: { delivery: 'applied' } }),
    tile('Oldest unsent', d.oldestUnsentAgeMs ? `${d.oldestUnsentAgeBound ? '≤ ' : ''}${fmtDuration(d.oldestUnsentAgeMs)}` : d.oldestUnsentAgeMs === 0 ? 'none' : '–', d.oldestUnsentAgeMs ? 'waiting at the gateway' : 'nothing waiting', d.oldestUnsentAgeMs ? 'warn' : '', { dataset: { delivery: 'unsent' } }),
    tile('Shed at the gateway', fmtNum(shedCount), d.shed.length ? d.shed.slice(0, 5).map(([a, b]) => a === b ? `${a}` : `${a}–${b}`).join(', ') + (d.shed.length > 5 ? ' …' : '') : 'over the disk budget', shedCount > 0 ? 'warn' : '', { dataset: { delivery: 'shed' } }),
  ]
}

/** Tiles of a gateway's ledger summed over its devices (the `delivery` of GET /api/gateways/:id). */
export function gatewayDeliveryTiles (s) {
  return [
    tile('Accepted (seqs)', fmtNum(s.acceptedSeqSum), `${fmtNum(s.devices)} devices${s.staleDevices ? `, ${fmtNum(s.staleDevices)} stale` : ''}`, s.staleDevices ? 'warn' : '', { dataset: { delivery: 'accepted' } }),
    tile('Replicated', fmtNum(s.replicatedSeqSum), `${fmtNum(Math.max(0, s.acceptedSeqSum - s.replicatedSeqSum))} not yet`, s.acceptedSeqSum > s.replicatedSeqSum ? 'warn' : '', { dataset: { delivery: 'replicated' } }),
    tile('Applied in the cloud', fmtNum(s.appliedSeqSum), `${fmtNum(s.devicesBehind)} devices behind`, s.devicesBehind ? 'warn' : '', { dataset: { delivery: 'applied' } }),
    tile('Oldest unsent', s.oldestUnsentAgeMs ? fmtDuration(s.oldestUnsentAgeMs) : 'none', `${fmtNum(s.shedSeqs)} shed`, s.oldestUnsentAgeMs ? 'warn' : '', { dataset: { delivery: 'unsent' } }),
  ]
}

export const deliveryHelp = () => h('p', { class: 'muted' }, 'Where the data is: highest seq accepted at the gateway, replicated to JetStream, applied in the cloud.')
