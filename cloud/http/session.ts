// The console session on the API: the guard in front of every route but the open ones (operations
// endpoints, the login page and what it needs), and the routes that make and end a session (POST
// /login, POST /logout, GET /api/session). Browsers log in once and carry the session cookie;
// scripts send the same user and password with every request instead (HTTP Basic). The credentials and tokens are auth.ts's; the login page
// itself is static UI (cloud/console/).
import { fastifyCookie } from '@fastify/cookie'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { z } from 'zod'
import { CloudError } from '../errors.ts'
import type { ConsoleAuth } from './auth.ts'
import { pathOf } from './host-guard.ts'

export const SESSION_COOKIE = 'iot_console'

/** Reachable without a session: operations endpoints (scrapers, probes) and the login. */
const OPEN_PATHS = ['/healthz', '/readyz', '/metrics', '/login']

export interface SessionOptions {
  auth: ConsoleAuth
  /** Further paths reachable without a session (the login page's stylesheet and icon). */
  openPaths?: readonly string[]
}

/** Only a local path may be a redirect target after login (no open redirect). */
const safeNext = (next: unknown): string => typeof next === 'string' && /^\/(?!\/)[\w\-./#?=&%]*$/.test(next) ? next : '/console/'

function tokenOf (req: FastifyRequest): string | undefined {
  const header = req.headers.cookie
  return header ? fastifyCookie.parse(header)[SESSION_COOKIE] : undefined
}

/** `Authorization: Basic base64(user:password)` (RFC 7617), or null without one. */
function basicCredentials (req: FastifyRequest): { user: string, password: string } | null {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(req.headers.authorization ?? '')
  if (!m) return null
  const text = Buffer.from(m[1], 'base64').toString('utf8')
  const colon = text.indexOf(':')
  return colon < 0 ? { user: text, password: '' } : { user: text.slice(0, colon), password: text.slice(colon + 1) }
}

/** A cross-site state change is refused even if a browser were to send the cookie (SameSite=Strict is the first line). */
function crossSite (req: FastifyRequest): boolean {
  const origin = req.headers.origin
  if (!origin || req.method === 'GET' || req.method === 'HEAD') return false
  try { return new URL(origin).host !== req.headers.host } catch { return true }
}

function sessionCookie (req: FastifyRequest, value: string, maxAgeS: number): string {
  return fastifyCookie.serialize(SESSION_COOKIE, value, { httpOnly: true, sameSite: 'strict', path: '/', maxAge: maxAgeS, secure: req.protocol === 'https' })
}

// Lenient: a missing or odd field is empty (the login then fails like a wrong password).
const loginBody = z.object({
  user: z.string().catch(''),
  password: z.string().catch(''),
  next: z.unknown().optional(),
}).catch({ user: '', password: '', next: undefined })

/** Registers the session guard and the login, logout and session routes. Call before the app listens. */
export function registerSession (app: FastifyInstance, opts: SessionOptions): void {
  const { auth } = opts
  const open = new Set([...OPEN_PATHS, ...opts.openPaths ?? []])
  // Registered (not only imported) because it loads its cookie codec when registered; the guard
  // below parses the header itself so that it does not depend on hook order.
  app.register(fastifyCookie)

  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const path = pathOf(req)
    if (open.has(path)) return
    if (crossSite(req)) throw new CloudError('CLOUD_ERR_FORBIDDEN', 'cross-site request refused')
    if (auth.verify(tokenOf(req))) return
    const basic = basicCredentials(req)
    if (basic) {
      // Scripts: every request carries the user and password; a wrong pair is refused outright (no redirect).
      if (await auth.authenticate(basic.user, basic.password, req.ip)) return
      throw new CloudError('CLOUD_ERR_UNAUTHORIZED', 'wrong user name or password (HTTP Basic)')
    }
    if (path.startsWith('/api/') || req.method !== 'GET') throw new CloudError('CLOUD_ERR_UNAUTHORIZED', 'log in first (POST /login, or HTTP Basic: curl -u user:password)')
    return reply.redirect(`/login?next=${encodeURIComponent(req.url)}`, 302)
  })

  app.get('/api/session', async (req) => {
    const s = auth.verify(tokenOf(req))
    return { user: s?.user ?? null, expiresAtMs: s?.expiresAtMs ?? null, loginRequired: true }
  })

  // The login and logout forms post urlencoded (they work without JavaScript); the login page's script posts JSON.
  // The form parser is scoped to this child context so the JSON API is unaffected.
  app.register(async (scope) => {
    scope.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 4096 }, (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(body as string)))
    })
    scope.post('/logout', async (req, reply) => {
      auth.revoke(tokenOf(req))
      reply.header('set-cookie', sessionCookie(req, '', 0))
      return (req.headers.accept ?? '').includes('application/json') ? reply.send({ ok: true }) : reply.redirect('/login', 303)
    })
    scope.post('/login', { bodyLimit: 4096 }, async (req, reply) => {
      const body = loginBody.parse(req.body ?? {})
      const asJson = (req.headers['content-type'] ?? '').startsWith('application/json')
      const next = safeNext(body.next)
      const r = await auth.login(body.user, body.password, req.ip)
      if (!r.ok) {
        if (asJson) throw new CloudError('CLOUD_ERR_UNAUTHORIZED', 'wrong user name or password')
        return reply.redirect(`/login?error=1&next=${encodeURIComponent(next)}`, 303)
      }
      reply.header('set-cookie', sessionCookie(req, r.token, Math.floor(auth.ttlMs / 1000)))
      return asJson ? reply.send({ user: r.session.user, expiresAtMs: r.session.expiresAtMs, next }) : reply.redirect(next, 303)
    })
  })
}
