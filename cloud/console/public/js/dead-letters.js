// Dead letters (payloads a gateway quarantined): counts by reason and the recent ones, each with its
// payload's first bytes as text when they are printable UTF-8, else as hex. Used by the gateway and
// device pages.
import { chip, fmtNum, fmtTime, h, table } from './dom.js'

/** The payload head (base64) as display text: UTF-8 if printable, else hex bytes. */
export function payloadText (b64, totalBytes) {
  const bytes = Uint8Array.from(atob(b64 ?? ''), (c) => c.charCodeAt(0))
  let text = null
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes)
    if (/[\u0000-\u0008\u000e-\u001f\u007f]/.test(text)) text = null
  } catch { text = null }
  const shown = text !== null ? text : [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ')
  const cut = totalBytes > bytes.length ? ` … (${fmtNum(totalBytes)} bytes)` : ''
  return { kind: text !== null ? 'text' : 'hex', text: shown + cut }
}

/** Chips of the counts by reason, largest first. */
export function reasonCounts (byReason) {
  const entries = Object.entries(byReason ?? {}).sort(([, a], [, b]) => b - a)
  return h('div', { class: 'reasons', dataset: { deadLetterCounts: '' } }, entries.map(([reason, n]) => chip(`${reason}: ${fmtNum(n)}`, 'bad')))
}

/** A table of dead-letter entries (newest first); `withDevice` adds the device column. */
export function deadLetterTable (items, withDevice) {
  const headers = ['When', ...(withDevice ? ['Device'] : []), 'Reason', 'Detail', 'Payload']
  return table(headers, items.map((d) => {
    const p = payloadText(d.payloadBase64, d.payloadBytes)
    return h('tr', { dataset: { deadLetter: String(d.seq) } },
      h('td', {}, fmtTime(d.tsMs)),
      ...(withDevice ? [h('td', {}, d.deviceId || '–')] : []),
      h('td', {}, chip(d.reason, 'bad')),
      h('td', { style: 'white-space: normal' }, d.detail),
      h('td', { class: 'mono', dataset: { payload: p.kind }, title: d.topic }, p.text.slice(0, 200)))
  }), { id: withDevice ? 'dead-letters-table' : 'device-dead-letters-table' })
}
