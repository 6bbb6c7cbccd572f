// Small DOM and formatting helpers shared by the pages (no framework: a page builds its elements
// with h() and updates them in place on every refresh).

/** Creates an element: h('td', { class: 'num', dataset: { gw: id } }, 'text', childNode). */
export function h (tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue
    if (k === 'class') el.className = v
    else if (k === 'dataset') Object.assign(el.dataset, v)
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v)
    else if (k in el && typeof v !== 'string') el[k] = v
    else el.setAttribute(k, v === true ? '' : String(v))
  }
  for (const c of children.flat()) if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c))
  return el
}

/** Replaces an element's children. */
export function fill (el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== undefined && c !== null && c !== false).map((c) => c instanceof Node ? c : document.createTextNode(String(c))))
  return el
}

export const NA = () => h('span', { class: 'unavailable' }, 'not available')

export function fmtNum (n, digits = 0) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–'
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: 0 })
}

export function fmtBytes (n) {
  if (n === undefined || n === null) return '–'
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++ }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`
}

/** A duration in ms as "850 ms", "12 s", "4 min 10 s", "3 h 5 min", "2 d 4 h". */
export function fmtDuration (ms) {
  if (ms === undefined || ms === null || !Number.isFinite(ms)) return '–'
  if (ms < 1000) return `${Math.round(ms)} ms`
  const s = Math.round(ms / 1000)
  if (s < 60) return `${s} s`
  const m = Math.floor(s / 60)
  if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`
  const hrs = Math.floor(m / 60)
  if (hrs < 48) return m % 60 ? `${hrs} h ${m % 60} min` : `${hrs} h`
  return `${Math.floor(hrs / 24)} d ${hrs % 24} h`
}

/** "12 s ago" for a timestamp in ms since the epoch; "never" for 0 or missing. */
export function fmtAgo (tsMs, now = Date.now()) {
  if (!tsMs) return 'never'
  return `${fmtDuration(Math.max(0, now - tsMs))} ago`
}

export function fmtTime (tsMs) {
  if (!tsMs) return '–'
  const d = new Date(tsMs)
  const today = new Date().toDateString() === d.toDateString()
  return today ? d.toLocaleTimeString() : d.toLocaleString()
}

export function chip (text, kind = '') {
  return h('span', { class: `chip ${kind}` }, text)
}

/** A labelled number tile. */
export function tile (label, value, sub, kind = '', attrs = {}) {
  return h('div', { class: `tile ${kind}`, ...attrs }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), sub ? h('div', { class: 'sub' }, sub) : null)
}

export function table (headers, rows, attrs = {}) {
  return h('div', { class: 'table-wrap' }, h('table', attrs,
    h('thead', {}, h('tr', {}, headers.map((x) => typeof x === 'string' ? h('th', {}, x) : h('th', { class: x.class }, x.label)))),
    h('tbody', {}, rows)))
}

export const escapeId = (s) => encodeURIComponent(s)
