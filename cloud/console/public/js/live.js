// Live updates. Server-sent events from /api/events when the cloud offers them; otherwise (or while
// the stream is down) a poll every 2 s. Either way the console calls onTick() to refresh the page:
// an event schedules a refresh right away (coalesced), and a slow tick keeps time-based state
// (online → offline, ages) current even when nothing is sent.

const POLL_MS = 2000
const SSE_SAFETY_TICK_MS = 10000
const SSE_RETRY_MS = 30000
const COALESCE_MS = 250
// A busy fleet sends many events: refresh at most this often because of them.
const MIN_EVENT_REFRESH_MS = 1000
// Event names the stream may use besides the default "message".
const EVENT_NAMES = ['device', 'gateway', 'alert', 'command', 'decision', 'resync']

export class LiveSource {
  constructor ({ url = '/api/events', onTick, onEvent, onMode }) {
    this.url = url
    this.onTick = onTick
    this.onEvent = onEvent ?? (() => {})
    this.onMode = onMode ?? (() => {})
    this.mode = null
    this.timer = null
    this.pending = null
    this.es = null
    this.retry = null
  }

  start () {
    if (typeof EventSource === 'function' && !new URLSearchParams(location.search).has('poll')) this.trySse()
    else this.setMode('poll')
  }

  trySse () {
    const es = new EventSource(this.url)
    this.es = es
    es.onopen = () => this.setMode('sse')
    const handle = (ev) => {
      let data = ev.data
      try { data = JSON.parse(ev.data) } catch { /* plain text event */ }
      this.onEvent(ev.type, data)
      this.soon()
    }
    es.onmessage = handle
    for (const name of EVENT_NAMES) es.addEventListener(name, handle)
    es.onerror = () => {
      // CLOSED: the endpoint is missing or refused us; CONNECTING: the browser is reconnecting.
      // Poll in both cases; a closed stream is tried again later.
      if (es.readyState === EventSource.CLOSED) {
        es.close()
        this.es = null
        clearTimeout(this.retry)
        this.retry = setTimeout(() => this.trySse(), SSE_RETRY_MS)
      }
      this.setMode('poll', { dropped: true })
    }
  }

  /** `dropped`: the stream failed (as opposed to polling by choice); onMode hears it either way. */
  setMode (mode, { dropped = false } = {}) {
    if (this.mode === mode && this.dropped === dropped) return
    this.dropped = dropped
    const changed = this.mode !== mode
    this.mode = mode
    this.onMode(mode, { dropped })
    if (!changed) return
    clearInterval(this.timer)
    this.timer = setInterval(() => this.tick(), mode === 'sse' ? SSE_SAFETY_TICK_MS : POLL_MS)
    this.soon()
  }

  /** Refresh now-ish: several events in a burst make one refresh. */
  soon () {
    if (this.pending) return
    const wait = Math.max(COALESCE_MS, (this.lastTickMs ?? 0) + MIN_EVENT_REFRESH_MS - Date.now())
    this.pending = setTimeout(() => { this.pending = null; this.tick() }, wait)
  }

  tick () {
    this.lastTickMs = Date.now()
    Promise.resolve(this.onTick()).catch((err) => console.warn('refresh failed', err))
  }

  stop () {
    clearInterval(this.timer)
    clearTimeout(this.pending)
    clearTimeout(this.retry)
    this.es?.close()
  }
}
