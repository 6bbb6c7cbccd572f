// Puts the operator's console on the API's fastify instance: the login page and its routes, the
// session guard in front of everything but the operations endpoints, and the static web UI
// (cloud/console/public) with the charting library served from node_modules.
import { createRequire } from 'node:module'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { fastifyCookie } from '@fastify/cookie'
import fastifyStatic from '@fastify/static'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ConsoleAuth } from '../http/auth.ts'

export const SESSION_COOKIE = 'iot_console'

/** Reachable without a session: operations endpoints (scrapers, probes) and what the login page needs. */
const OPEN_PATHS = new Set(['/healthz', '/readyz', '/metrics', '/login', '/console/app.css', '/console/favicon.svg'])

const PUBLIC_DIR = fileURLToPath(new URL('./public/', import.meta.url))
const UPLOT_DIR = dirname(createRequire(import.meta.url).resolve('uplot/dist/uPlot.iife.min.js'))

export interface ConsoleServerOptions { auth: ConsoleAuth }

const pathOf = (req: FastifyRequest): string => {
  const q = req.url.indexOf('?')
  return q < 0 ? req.url : req.url.slice(0, q)
}

/** Only a local path may be a redirect target after login (no open redirect). */
const safeNext = (next: unknown): string => typeof next === 'string' && /^\/(?!\/)[\w\-./#?=&%]*$/.test(next) ? next : '/console/'

function tokenOf (req: FastifyRequest): string | undefined {
  const header = req.headers.cookie
  return header ? fastifyCookie.parse(header)[SESSION_COOKIE] : undefined
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

/** Registers the console (routes, guard, static files) on app. Call before the app starts listening. */
export function registerConsole (app: FastifyInstance, opts: ConsoleServerOptions): void {
  const { auth } = opts
  // Registered (not only imported) because it loads its cookie codec when registered; the guard
  // below parses the header itself so that it does not depend on hook order.
  app.register(fastifyCookie)

  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const path = pathOf(req)
    if (OPEN_PATHS.has(path)) return
    if (crossSite(req)) return reply.code(403).send({ error: 'forbidden', message: 'cross-site request refused' })
    if (auth.verify(tokenOf(req))) return
    if (path.startsWith('/api/') || req.method !== 'GET') return reply.code(401).send({ error: 'unauthorized', message: 'log in first (POST /login)' })
    return reply.redirect(`/login?next=${encodeURIComponent(req.url)}`, 302)
  })

  app.get('/', async (_req, reply) => reply.redirect('/console/', 302))
  app.get('/login', async (_req, reply) => reply.header('cache-control', 'no-store').sendFile('login.html', PUBLIC_DIR))

  app.get('/api/session', async (req) => {
    const s = auth.verify(tokenOf(req))
    return { user: s?.user ?? null, expiresAtMs: s?.expiresAtMs ?? null, loginRequired: auth.required }
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
    scope.post<{ Body: { user?: unknown, password?: unknown, next?: unknown } }>('/login', { bodyLimit: 4096 }, async (req, reply) => {
      const body = req.body ?? {}
      const asJson = (req.headers['content-type'] ?? '').startsWith('application/json')
      const next = safeNext(body.next)
      const r = await auth.login(typeof body.user === 'string' ? body.user : '', typeof body.password === 'string' ? body.password : '', req.ip)
      if (!r.ok) {
        if (asJson) return reply.code(401).send({ error: 'unauthorized', message: 'wrong user name or password' })
        return reply.redirect(`/login?error=1&next=${encodeURIComponent(next)}`, 303)
      }
      reply.header('set-cookie', sessionCookie(req, r.token, Math.floor(auth.ttlMs / 1000)))
      return asJson ? reply.send({ user: r.session.user, expiresAtMs: r.session.expiresAtMs, next }) : reply.redirect(next, 303)
    })
  })

  app.register(fastifyStatic, { root: PUBLIC_DIR, prefix: '/console/', index: 'index.html', redirect: true, cacheControl: false, setHeaders: (reply) => { reply.header('cache-control', 'no-cache') } })
  app.register(fastifyStatic, { root: UPLOT_DIR, prefix: '/console/vendor/uplot/', decorateReply: false })
}
