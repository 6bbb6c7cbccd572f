// Every call the console makes to the JSON API, in one place. An endpoint the running cloud does not
// have (fastify's "Route ... not found") raises Unavailable, and the page shows "not available"
// instead of failing; a missing session sends the browser to the login page.

export class Unavailable extends Error {}
export class ApiError extends Error {
  constructor (status, body) {
    super(body?.message ?? `HTTP ${status}`)
    this.status = status
    this.body = body
  }
}

/** A rule set goes as text: JSON when it parses as JSON, YAML otherwise. */
function ruleSetType (text) {
  try { JSON.parse(text); return 'application/json' } catch { return 'application/yaml' }
}

async function call (method, path, body, { text = false } = {}) {
  const init = { method, headers: { accept: 'application/json' }, credentials: 'same-origin' }
  if (body !== undefined) {
    if (typeof body === 'string') { init.body = body; init.headers['content-type'] = ruleSetType(body) } else { init.body = JSON.stringify(body); init.headers['content-type'] = 'application/json' }
  }
  const r = await fetch(path, init)
  if (r.status === 401) {
    location.href = `/login?next=${encodeURIComponent(location.pathname + location.hash)}`
    throw new ApiError(401, { message: 'not logged in' })
  }
  const raw = await r.text()
  let data = raw
  if (!text) { try { data = raw ? JSON.parse(raw) : null } catch { data = raw } }
  if (r.status === 404 && typeof data === 'object' && data && /^Route .* not found$/.test(data.message ?? '')) throw new Unavailable(path)
  if (r.status === 405 || r.status === 501) throw new Unavailable(path)
  if (!r.ok) throw new ApiError(r.status, typeof data === 'object' ? data : { message: String(data) })
  return data
}

/** A list from whatever envelope the API uses: [..] or { items | alerts | ...: [..] }. */
export function listOf (data, ...keys) {
  if (Array.isArray(data)) return data
  for (const k of [...keys, 'items', 'results', 'data']) if (Array.isArray(data?.[k])) return data[k]
  return []
}

const q = (params) => {
  const s = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ''))
  return s.size ? `?${s}` : ''
}
const seg = encodeURIComponent

export const api = {
  session: () => call('GET', '/api/session'),
  fleet: () => call('GET', '/api/fleet'),
  gateway: (gw) => call('GET', `/api/gateways/${seg(gw)}`),
  gatewayHealth: (gw, params = {}) => call('GET', `/api/gateways/${seg(gw)}/health${q(params)}`),
  deadLetters: (gw) => call('GET', `/api/gateways/${seg(gw)}/dead-letters`),
  device: (gw, dev) => call('GET', `/api/devices/${seg(gw)}/${seg(dev)}`),
  deviceDelivery: (gw, dev) => call('GET', `/api/devices/${seg(gw)}/${seg(dev)}/delivery`),
  history: (gw, dev, params) => call('GET', `/api/devices/${seg(gw)}/${seg(dev)}/history${q(params)}`),
  accounting: (gw) => call('GET', `/api/accounting${q({ gateway: gw })}`),
  deviceControl: (gw, dev) => call('GET', `/api/devices/${seg(gw)}/${seg(dev)}/control`),
  alerts: (params = {}) => call('GET', `/api/alerts${q(params)}`),
  replicas: () => call('GET', '/api/replicas'),
  ackAlert: (a, by) => call('POST', `/api/alerts/${seg(a.gatewayId)}/${seg(a.alertId)}/ack`, { by }),
  decisions: (params = {}) => call('GET', `/api/decisions${q(params)}`),
  commands: (params = {}) => call('GET', `/api/commands${q(params)}`),
  sendCommand: (cmd) => call('POST', '/api/commands', cmd),
  command: (gw, id) => call('GET', `/api/commands/${seg(gw)}/${seg(id)}`),
  rulesList: () => call('GET', '/api/rules'),
  rules: (gw) => call('GET', `/api/rules/${seg(gw)}`),
  putRules: (gw, text) => call('PUT', `/api/rules/${seg(gw)}`, text),
  validateRules: (gw, text) => call('POST', `/api/rules/${seg(gw)}/validate`, text),
  logout: () => call('POST', '/logout'),
}

/** Runs an API call; resolves { ok, data } or { unavailable } or { error }. Never throws. */
export async function attempt (fn) {
  try {
    return { ok: true, data: await fn() }
  } catch (err) {
    if (err instanceof Unavailable) return { unavailable: true }
    return { error: err }
  }
}
