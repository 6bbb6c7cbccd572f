// What the console may claim. A gateway is online only while its last heartbeat is younger than the
// cloud's offline timeout, judged again in the browser on every refresh (on the server's clock), so a
// page showing old data (the API unreachable, a slow refresh) never keeps saying "online". And the
// live badge says whether the console itself is current: green only while the API answers and the
// live stream is open; red when requests fail or the stream drops.
import { chip, fmtAgo, fmtTime, h } from './dom.js'

/** The server's clock and offline timeout, from the latest fleet answer. */
const clock = { skewMs: 0, offlineTimeoutMs: null }

/** Takes the clock and timeout an /api/fleet answer carries. */
export function noteServer (fleet) {
  if (Number.isFinite(fleet?.nowMs)) clock.skewMs = fleet.nowMs - Date.now()
  if (Number.isFinite(fleet?.offlineTimeoutMs)) clock.offlineTimeoutMs = fleet.offlineTimeoutMs
}

const serverNow = () => Date.now() + clock.skewMs

/** Online by the cloud's answer and still within the timeout now. */
export function isOnline (g) {
  if (!g?.online) return false
  return clock.offlineTimeoutMs === null || serverNow() - g.lastSeenMs <= clock.offlineTimeoutMs
}

/** The gateway with `online` judged now (see isOnline). */
export const judged = (g) => g && ({ ...g, online: isOnline(g) })

/** "offline since 10:42:07" (the last heartbeat), or "offline (never seen)". */
export function offlineText (g) {
  return g?.lastSeenMs ? `offline since ${fmtTime(g.lastSeenMs)}` : 'offline (never seen)'
}

/** The status chip of a gateway: "online", or "offline since …" with how long ago. */
export function statusChip (g) {
  if (isOnline(g)) return chip('online', 'ok')
  return h('span', { class: 'chip bad', dataset: { offlineSince: String(g?.lastSeenMs ?? 0) }, title: g?.lastSeenMs ? `last heartbeat ${fmtAgo(g.lastSeenMs, serverNow())}` : 'no heartbeat yet' }, offlineText(g))
}

/**
 * The live badge: tracks the API (every fleet read) and the live stream (its mode and drops), and
 * shows the worst. data-state: live | polling | stream-lost | api-down.
 */
export class LiveBadge {
  constructor (el) {
    this.el = el
    this.mode = null
    this.streamLost = false
    this.apiError = null
  }

  /** The live source's mode: 'sse' (stream open) or 'poll'; `dropped` when the stream failed. */
  stream (mode, { dropped = false } = {}) {
    this.mode = mode
    if (mode === 'sse') this.streamLost = false
    else if (dropped) this.streamLost = true
    this.draw()
  }

  /** The outcome of the latest API read: null when it answered, else the error. */
  api (err) {
    this.apiError = err ?? null
    this.draw()
  }

  draw () {
    let state, text, title
    if (this.apiError) {
      state = 'api-down'
      text = 'API unreachable'
      title = `The console cannot read the fleet (${this.apiError.message ?? this.apiError}); what it shows is from its last answer.`
    } else if (this.streamLost) {
      state = 'stream-lost'
      text = 'live stream lost · polling 2 s'
      title = 'The live stream dropped; the console polls every 2 s and tries the stream again.'
    } else if (this.mode === 'sse') {
      state = 'live'
      text = 'live'
      title = 'The API answers and the live stream is open.'
    } else if (this.mode === 'poll') {
      state = 'polling'
      text = 'polling 2 s'
      title = 'The API answers; updates are polled every 2 s.'
    } else return
    this.el.className = `live ${state === 'live' || state === 'polling' ? 'ok' : 'down'}`
    this.el.dataset.state = state
    this.el.textContent = text
    this.el.title = title
  }
}
