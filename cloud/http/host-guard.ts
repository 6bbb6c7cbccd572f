// The Host check in front of every route (API, login, console files) but the probes. A DNS-rebinding
// page (evil.example, made to resolve to this server) is same-origin with itself, so the Origin
// check of session.ts lets it through; its requests still carry `Host: evil.example`, which no
// configured name matches. Loopback names are always allowed: a browser sends them only for a page
// that was itself loaded from a loopback name.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { CloudError } from '../errors.ts'

/** Answer any Host: scrapers and probes address the server by whatever name they were given. */
export const ANY_HOST_PATHS: readonly string[] = ['/healthz', '/readyz', '/metrics']

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]']
const WILDCARD_ADDRESSES = new Set(['0.0.0.0', '::', '[::]'])

/** The path of a request, without its query string. */
export const pathOf = (req: FastifyRequest): string => {
  const q = req.url.indexOf('?')
  return q < 0 ? req.url : req.url.slice(0, q)
}

/** The name in a Host value or config entry, lower-case, without port or final dot ('[::1]:8080' -> '[::1]'). */
export function hostName (value: string): string {
  const h = value.trim().toLowerCase()
  let name: string
  if (h.startsWith('[')) name = h.slice(0, h.indexOf(']') + 1) || h
  else if (h.indexOf(':') !== h.lastIndexOf(':')) name = `[${h}]` // a bare IPv6 address (config only)
  else name = h.split(':')[0]
  return name.endsWith('.') ? name.slice(0, -1) : name
}

/** The names a server on `httpHost` answers to: loopback, httpHost unless a wildcard address, and `extra`. */
export function allowedHostNames (httpHost: string, extra: readonly string[] = []): Set<string> {
  const names = new Set(LOOPBACK_NAMES)
  if (!WILDCARD_ADDRESSES.has(httpHost.trim())) names.add(hostName(httpHost))
  for (const e of extra) names.add(hostName(e))
  return names
}

/** Registers the Host check; call before any other hook or route (the session guard runs after it). */
export function registerHostGuard (app: FastifyInstance, allowed: ReadonlySet<string>): void {
  const open = new Set(ANY_HOST_PATHS)
  app.addHook('onRequest', async (req: FastifyRequest) => {
    if (open.has(pathOf(req))) return
    const host = req.headers.host ?? ''
    if (allowed.has(hostName(host))) return
    throw new CloudError('CLOUD_ERR_HOST_NOT_ALLOWED', `this server does not answer to the host "${host.slice(0, 100)}" (http.allowedHosts)`)
  })
}
