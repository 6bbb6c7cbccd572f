// A client of the cloud's API behind the console login, for tests and simulators: logs in with
// POST /login and sends the session cookie with every request, as the browser does.

/** Logs in to the cloud at `api` (http://host:port); resolves with the session cookie (name=value). */
export async function consoleLogin (api: string, user: string, password: string): Promise<string> {
  const r = await fetch(`${api}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user, password }) })
  const cookie = (r.headers.get('set-cookie') ?? '').split(';')[0]
  if (r.status !== 200 || !cookie) throw new Error(`console login as ${user} at ${api}: HTTP ${r.status} ${await r.text()}`)
  return cookie
}

/** fetch with a session cookie added to the request's headers. */
export function withSession (cookie: string): (url: string, init?: RequestInit) => Promise<Response> {
  return (url, init = {}) => {
    const headers = new Headers(init.headers)
    headers.set('cookie', cookie)
    return fetch(url, { ...init, headers })
  }
}
