// Live updates for the console: server-sent events pushed whenever a view changes.
//
// The source is a watch on the VIEWS KV bucket (headers only, updates only), not an in-process
// emitter: the views are written by any aggregator replica (and by API replicas: operator acks,
// queued commands), and the bucket's stream is the one ordered log of every such write, so an API
// replica sees what every writer changed with nothing added to the apply path. Headers only keeps it
// small (a key and a revision per write, no document); the rollups live in their own buckets
// (ROLLUP_*), so their writes do not reach this watch. One watch per API replica,
// started with the first client and stopped with the last.
//
// Writes are coalesced per key (at most one read per key per coalesceMs), then the document is read
// once to make a small message; alert, command and decision documents are diffed against the last
// summary seen, so a message says what changed (alert raised/cleared/acknowledged, command status,
// new decision). A client that cannot keep up (write() returned false) misses messages until its
// socket drains and then gets a `resync` event: refetch what it shows.
import type { ServerResponse } from 'node:http'
import { KvWatchInclude, type KV, type KvWatchEntry } from '@nats-io/kv'
import type { DeviceDoc } from '../apply/apply.ts'
import { isAcknowledged, type AlertsDoc, type CommandsDoc, type DecisionsDoc } from '../apply/control/index.ts'
import type { Logger } from '../log.ts'
import type { FleetViews } from '../views/views.ts'
import { Lifecycle } from '../../lib/lifecycle.ts'

export interface LiveFilter { gatewayId?: string, deviceId?: string, types?: ReadonlySet<string> }

/** One pushed message: `event: <type>`, `data: <this as JSON>`. */
export interface LiveMessage { type: 'device' | 'gateway' | 'alert' | 'command' | 'decision', gatewayId: string, deviceId?: string, rev: number, [k: string]: unknown }

export const LIVE_TYPES: ReadonlySet<string> = new Set(['device', 'gateway', 'alert', 'command', 'decision'])

export interface LiveEventsOptions {
  /** Least time between two messages for the same view document (ms). */
  coalesceMs?: number
  /** Documents waiting to be read; beyond it everything pending is dropped and clients get `resync`. */
  maxDirty?: number
  /** Connected clients; more are refused (503). */
  maxClients?: number
  /** Comment line sent to idle clients so proxies keep the stream open (ms). */
  keepAliveMs?: number
}

interface Client { res: ServerResponse, filter: LiveFilter, congested: boolean, missed: boolean, told: boolean }

const PREFIXES = new Set(['dev', 'gw', 'alr', 'cmd', 'dec'])

export class LiveEvents extends Lifecycle {
  private readonly clients = new Set<Client>()
  private readonly dirty = new Map<string, number>()
  private readonly summaries = new Map<string, Map<string, string> | number>()
  private readonly opts: Required<LiveEventsOptions>
  private watch: AsyncIterable<KvWatchEntry> & { stop: () => void } | null = null
  private starting: Promise<void> | null = null
  private flushTimer: NodeJS.Timeout | null = null
  private keepAlive: NodeJS.Timeout | null = null
  private flushing = false

  constructor (private readonly kv: KV, private readonly views: FleetViews, private readonly log: Logger, opts: LiveEventsOptions = {}) {
    super()
    this.opts = { coalesceMs: opts.coalesceMs ?? 250, maxDirty: opts.maxDirty ?? 10_000, maxClients: opts.maxClients ?? 1000, keepAliveMs: opts.keepAliveMs ?? 15_000 }
  }

  /** Clients connected now. */
  get size (): number { return this.clients.size }

  /** True when attach() would take a client now (not closed, below maxClients). */
  accepting (): boolean { return !this.isClosing && this.clients.size < this.opts.maxClients }

  /** Takes over a response as an event stream; false when full or closed (see accepting()). */
  attach (res: ServerResponse, filter: LiveFilter): boolean {
    if (!this.accepting()) return false
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache, no-transform', connection: 'keep-alive', 'x-accel-buffering': 'no' })
    const client: Client = { res, filter, congested: false, missed: false, told: false }
    this.clients.add(client)
    res.on('drain', () => {
      client.congested = false
      if (client.missed) {
        client.missed = false
        this.write(client, 'event: resync\ndata: {}\n\n')
      }
    })
    // 'close' on the response: the connection ended (the request's own 'close' says less).
    const gone = (): void => { this.detach(client) }
    res.on('close', gone)
    res.on('error', gone)
    this.write(client, `retry: 3000\nevent: hello\ndata: ${JSON.stringify({ source: 'kv-watch', types: [...LIVE_TYPES] })}\n\n`)
    this.keepAlive ??= setInterval(() => { for (const c of this.clients) this.write(c, ': keep-alive\n\n') }, this.opts.keepAliveMs)
    this.keepAlive.unref()
    if (this.watch) this.tellReady()
    else void this.ensureWatch()
    return true
  }

  /** Ends every stream and stops the watch. Idempotent. */
  protected onClose (): void {
    for (const c of [...this.clients]) {
      c.res.end()
      c.res.socket?.destroySoon()
    }
    this.clients.clear()
    this.stopWatch()
  }

  // The client went away (or its stream failed): release the socket at once rather than wait for
  // the peer to finish closing it.
  private detach (c: Client): void {
    if (!this.clients.delete(c)) return
    if (!c.res.destroyed) c.res.destroy()
    if (this.clients.size === 0) this.stopWatch()
  }

  private stopWatch (): void {
    this.watch?.stop()
    this.watch = null
    if (this.flushTimer) clearTimeout(this.flushTimer)
    this.flushTimer = null
    if (this.keepAlive) clearInterval(this.keepAlive)
    this.keepAlive = null
    this.dirty.clear()
    this.summaries.clear()
  }

  private ensureWatch (): Promise<void> {
    if (this.watch || this.isClosing) return Promise.resolve()
    this.starting ??= this.startWatch().catch((err) => {
      this.log.warn({ err }, 'live events: cannot watch the views bucket; retrying')
      setTimeout(() => { if (this.clients.size > 0) void this.ensureWatch() }, 2000).unref()
    }).finally(() => { this.starting = null })
    return this.starting
  }

  private async startWatch (): Promise<void> {
    const w = await this.kv.watch({ key: '>', headers_only: true, include: KvWatchInclude.UpdatesOnly, ignoreDeletes: true })
    if (this.isClosing || this.clients.size === 0) { w.stop(); return }
    this.watch = w
    // What alert, command and decision documents hold now, so the first change is told as a change.
    await this.prime()
    this.tellReady()
    void (async () => {
      try {
        for await (const e of w) this.changed(e.key, e.revision)
      } catch (err) {
        this.log.warn({ err }, 'live events: views watch ended')
      }
      if (this.watch === w) {
        // Ended under us (e.g. the connection closed): clients refetch; a new watch starts if any remain.
        this.watch = null
        this.broadcastRaw('event: resync\ndata: {}\n\n')
        if (!this.isClosing && this.clients.size > 0) setTimeout(() => { void this.ensureWatch() }, 1000).unref()
      }
    })()
  }

  /** `ready`: from now on every change is pushed (sent once per client, when the watch runs). */
  private tellReady (): void {
    for (const c of this.clients) {
      if (c.told) continue
      c.told = true
      this.write(c, 'event: ready\ndata: {}\n\n')
    }
  }

  private async prime (): Promise<void> {
    const keys = (await Promise.all(['alr', 'cmd', 'dec'].map((p) => this.views.store.keys([p])))).flat()
    for (let i = 0; i < keys.length; i += 32) {
      await Promise.all(keys.slice(i, i + 32).map(async (key) => {
        const d = await this.views.store.get<unknown>(key)
        if (d) this.diff(key, d.value, 0, true)
      }))
    }
  }

  private changed (key: string, rev: number): void {
    const prefix = key.slice(0, key.indexOf('.'))
    if (!PREFIXES.has(prefix)) return
    if (this.dirty.size >= this.opts.maxDirty && !this.dirty.has(key)) {
      // Overflow policy: drop what is pending, tell clients to refetch.
      this.dirty.clear()
      this.broadcastRaw('event: resync\ndata: {}\n\n')
    }
    this.dirty.set(key, rev)
    this.flushTimer ??= setTimeout(() => { this.flushTimer = null; void this.flush() }, this.opts.coalesceMs)
  }

  private async flush (): Promise<void> {
    if (this.flushing) {
      this.flushTimer ??= setTimeout(() => { this.flushTimer = null; void this.flush() }, this.opts.coalesceMs)
      return
    }
    this.flushing = true
    try {
      const batch = [...this.dirty]
      this.dirty.clear()
      for (let i = 0; i < batch.length; i += 32) {
        const msgs = await Promise.all(batch.slice(i, i + 32).map(([key, rev]) => this.messagesFor(key, rev).catch((err) => {
          this.log.debug({ err, key }, 'live events: view not read')
          return []
        })))
        for (const m of msgs.flat()) this.broadcast(m)
      }
    } finally {
      this.flushing = false
    }
  }

  /** The messages a changed view document gives (none when nothing a client sees changed). */
  private async messagesFor (key: string, rev: number): Promise<LiveMessage[]> {
    const [prefix, gatewayId] = key.split('.')
    if (prefix === 'gw') {
      const g = await this.views.gateway(gatewayId)
      return g ? [{ ...g, type: 'gateway', gatewayId, rev }] : []
    }
    const d = await this.views.store.get<unknown>(key)
    if (!d) return []
    if (prefix === 'dev') {
      const doc = d.value as DeviceDoc
      const l = doc.latest
      const readings = l ? Object.fromEntries(Object.entries(l.readings).map(([n, r]) => [n, r.value])) : {}
      return [{ type: 'device', gatewayId, deviceId: doc.deviceId, rev: d.rev, seq: l?.seq ?? 0, eventTsMs: l?.eventTsMs ?? null, readings, received: doc.acct.received }]
    }
    return this.diff(key, d.value, d.rev)
  }

  /**
   * Compares an alert, command or decision document with the last summary of it; returns what
   * changed. Every document that existed when the watch started was summarised then (priming), so
   * one without a summary is new: everything in it is a change.
   */
  private diff (key: string, value: unknown, rev: number, priming = false): LiveMessage[] {
    const [prefix, gatewayId] = key.split('.')
    const out: LiveMessage[] = []
    if (prefix === 'dec') {
      const doc = value as DecisionsDoc
      const prev = this.summaries.get(key) ?? 0
      const top = doc.items[0]?.seq ?? 0
      this.summaries.set(key, top)
      if (typeof prev !== 'number' || priming) return out
      // Oldest first, at most 20 per flush (a burst is summarised by the last ones).
      for (const d of doc.items.filter((x) => x.seq > prev).slice(0, 20).reverse()) {
        out.push({ type: 'decision', gatewayId, deviceId: d.deviceId, rev, seq: d.seq, ruleId: d.ruleId, kind: d.kind, durationMs: d.durationMs, tsMs: d.tsMs })
      }
      return out
    }
    const had = this.summaries.get(key)
    const prev = priming ? null : had instanceof Map ? had : new Map<string, string>()
    const next = new Map<string, string>()
    if (prefix === 'alr') {
      // Every transition since the last summary, in seq order: raised, cleared, acknowledged.
      for (const a of (value as AlertsDoc).alerts) {
        const acked = isAcknowledged(a)
        const sum = `${a.raisedSeq}:${a.clearedSeq}:${acked}`
        next.set(a.alertId, sum)
        if (prev === null || prev.get(a.alertId) === sum) continue
        const [wasRaised, wasCleared, wasAcked] = (prev.get(a.alertId) ?? '0:0:false').split(':')
        const base = { type: 'alert' as const, gatewayId, deviceId: a.deviceId, rev, alertId: a.alertId, active: a.active, acknowledged: acked, severity: a.severity, message: a.message }
        const changes: Array<[number, string]> = []
        if (a.raisedSeq !== Number(wasRaised)) changes.push([a.raisedSeq, 'raised'])
        if (a.clearedSeq !== Number(wasCleared)) changes.push([a.clearedSeq, 'cleared'])
        changes.sort((x, y) => x[0] - y[0])
        if (acked && wasAcked !== 'true') changes.push([Infinity, 'acknowledged'])
        for (const [, change] of changes) out.push({ ...base, change })
      }
    } else if (prefix === 'cmd') {
      // One message per new timeline entry (so sent, delivered, acknowledged are each told), in seq order.
      for (const c of (value as CommandsDoc).commands) {
        const seqs = c.timeline.map((e) => e.seq)
        next.set(c.commandId, seqs.join(','))
        if (prev === null) continue
        const was = new Set((prev.get(c.commandId) ?? '').split(',').filter(Boolean).map(Number))
        for (const e of c.timeline) {
          if (was.has(e.seq)) continue
          out.push({ type: 'command', gatewayId, deviceId: c.deviceId, rev, commandId: c.commandId, name: c.name, status: e.status, current: c.status, terminal: c.terminal })
        }
      }
    }
    this.summaries.set(key, next)
    return out
  }

  private broadcast (m: LiveMessage): void {
    const chunk = `id: ${m.rev}\nevent: ${m.type}\ndata: ${JSON.stringify(m)}\n\n`
    for (const c of this.clients) {
      const f = c.filter
      if (f.gatewayId && f.gatewayId !== m.gatewayId) continue
      if (f.deviceId && f.deviceId !== m.deviceId) continue
      if (f.types && !f.types.has(m.type)) continue
      this.write(c, chunk)
    }
  }

  private broadcastRaw (chunk: string): void {
    for (const c of this.clients) this.write(c, chunk)
  }

  // Never more than the socket's buffer per client: while it is full, messages are missed (and a
  // resync follows the drain).
  private write (c: Client, chunk: string): void {
    if (c.congested) { c.missed = true; return }
    if (!c.res.write(chunk)) c.congested = true
  }

  protected onDestroy (): void {
    this.onClose()
  }
}

/** Parses `types=device,alert` into the set of known types (undefined = all). */
export function parseTypes (v: string | undefined): ReadonlySet<string> | undefined | null {
  if (!v) return undefined
  const types = new Set(v.split(',').map((t) => t.trim()).filter(Boolean))
  for (const t of types) if (!LIVE_TYPES.has(t)) return null
  return types
}
