// Shared pieces of the cloud tests: ordered cleanup, an in-process cloud on a test nats-server with
// an API client logged in to it, and reproducible shuffling.
import { Cloud } from '../../cloud/cloud.ts'
import { parseCloudConfig, type CloudConfigInput } from '../../cloud/config.ts'
import { createLogger } from '../../cloud/log.ts'
import { consoleLogin, type NatsServer, withSession } from '../../devkit/index.ts'

/** The console login of the clouds startCloud starts (the console always requires one). */
export const TEST_CONSOLE = { user: 'admin', password: 'test-console-password' }

// Session cookies by API origin, filled by startCloud: a cookie jar, as a browser keeps.
const sessions = new Map<string, string>()

/** Logs in to the cloud at `api` (configured with TEST_CONSOLE) for apiFetch. */
export async function logIn (api: string): Promise<void> {
  sessions.set(api, await consoleLogin(api, TEST_CONSOLE.user, TEST_CONSOLE.password))
}

/** fetch with the session of the cloud (logged in with logIn) that the URL points at. */
export function apiFetch (url: string, init?: RequestInit): Promise<Response> {
  const cookie = sessions.get(new URL(url).origin)
  return cookie ? withSession(cookie)(url, init) : fetch(url, init)
}

/** Cleanups run last-registered first (node:test runs after hooks first-registered first): NATS outlives its clients. */
export function deferrer (t: { after: (fn: () => Promise<void>) => void }): (fn: () => unknown) => void {
  const stack: Array<() => unknown> = []
  t.after(async () => { for (const fn of stack.reverse()) await fn() })
  return (fn) => { stack.push(fn) }
}

/** A cloud process (aggregator + API) in this process, on loopback, logging nothing, logged in for apiFetch; on one server or a cluster's urls. */
export async function startCloud (nats: NatsServer | { urls: string[] }, overrides: CloudConfigInput = {}): Promise<{ cloud: Cloud, api: string }> {
  const cloud = new Cloud(parseCloudConfig({ logLevel: 'silent', nats: { servers: 'urls' in nats ? nats.urls : [nats.url] }, http: { host: '127.0.0.1', port: 0 }, console: TEST_CONSOLE, ...overrides }), createLogger(process.env.TEST_LOG ?? 'silent'), { defaultMetrics: false })
  const ports = await cloud.start()
  const api = `http://127.0.0.1:${ports.http}`
  await logIn(api)
  return { cloud, api }
}

/** Deterministic pseudo-random numbers (the tests must be reproducible). */
export function rng (seed: number): () => number {
  let s = seed >>> 0
  return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 2 ** 32 }
}

export function shuffle<T> (xs: T[], rand: () => number): T[] {
  const a = [...xs]
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]]
  }
  return a
}
