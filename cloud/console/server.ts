// Serves the operator's console, the static web UI (cloud/console/public), on the API's fastify
// instance: the login page, the app under /console/, and the charting library from node_modules.
// The session guard and the login routes are the API's (cloud/http/session.ts); the console only
// names the files the login page needs before a session exists.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import type { FastifyInstance } from 'fastify'

/** What the login page loads before there is a session (the guard lets these through). */
export const CONSOLE_OPEN_PATHS: readonly string[] = ['/console/app.css', '/console/favicon.svg']

const PUBLIC_DIR = fileURLToPath(new URL('./public/', import.meta.url))
const UPLOT_DIR = dirname(createRequire(import.meta.url).resolve('uplot/dist/uPlot.iife.min.js'))

const escapeAttr = (s: string): string => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

/**
 * Registers the console's pages and static files on app. Call before the app starts listening.
 * The login page offers the configured operator account (`user`), so that only the password is typed.
 */
export function registerConsole (app: FastifyInstance, opts: { user: string }): void {
  const loginPage = readFileSync(join(PUBLIC_DIR, 'login.html'), 'utf8').replace('value="{{user}}"', `value="${escapeAttr(opts.user)}"`)
  app.get('/', async (_req, reply) => reply.redirect('/console/', 302))
  app.get('/login', async (_req, reply) => reply.header('cache-control', 'no-store').type('text/html; charset=utf-8').send(loginPage))
  app.register(fastifyStatic, { root: PUBLIC_DIR, prefix: '/console/', index: 'index.html', redirect: true, cacheControl: false, setHeaders: (reply) => { reply.header('cache-control', 'no-cache') } })
  app.register(fastifyStatic, { root: UPLOT_DIR, prefix: '/console/vendor/uplot/', decorateReply: false })
}
