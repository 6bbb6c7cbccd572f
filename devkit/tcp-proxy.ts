// A TCP fault-injection proxy for tests: sits on an ephemeral 127.0.0.1 port in front of a target
// and can cut the link, black-hole it (connections stay open, bytes go nowhere), add latency (in
// both directions or in one) and limit bandwidth.
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net'

export interface ProxyTarget { host: string, port: number }

/** up: client to target; down: target to client. */
export type ProxyDirection = 'both' | 'up' | 'down'

export interface Proxy {
  /** The proxy's listening port on 127.0.0.1. */
  readonly port: number
  /** Destroys every current connection and closes new ones at once until restore(). */
  cut: () => void
  /**
   * Black-holes the link: every connection, current or new, stays open but the bytes sent either way
   * are dropped, as on a path that silently loses packets. Peers notice only by their own timeouts.
   */
  hold: () => void
  /**
   * Lets connections through again. Connections that lived through a hold are destroyed (their byte
   * streams lost data, as TCP would have given up on them by now); the next ones pass.
   */
  restore: () => void
  /** Delays every chunk by ms in the given direction(s), default both (applies to data arriving from now on). */
  setLatency: (ms: number, direction?: ProxyDirection) => void
  /** Limits each direction of each connection to bytesPerSec; null removes the limit. */
  setBandwidth: (bytesPerSec: number | null) => void
  /** Destroys all connections and stops listening. Idempotent. */
  close: () => Promise<void>
}

interface Link { latencyMs: number, bytesPerSec: number | null, blackHole: boolean }

// Bytes queued (delayed or throttled) per direction before the source is paused.
const HIGH_WATER = 1024 * 1024
// Throttled data is written in slices of this many ms worth of bandwidth, to keep the rate smooth.
const SLICE_MS = 50

/**
 * One direction of one connection: an ordered queue of chunks, each released no earlier than its
 * due time and no faster than the bandwidth allows. The source is paused while the destination
 * needs a drain or too much is queued.
 */
class Pipe {
  private readonly queue: { chunk: Buffer, due: number }[] = []
  private queued = 0
  private timer: NodeJS.Timeout | null = null
  private waitingDrain = false
  private nextFree = 0
  private ended = false

  constructor (private readonly src: Socket, private readonly dst: Socket, private readonly link: Link) {
    src.on('data', (chunk: Buffer) => {
      if (dst.destroyed || this.link.blackHole) return
      this.queue.push({ chunk, due: Date.now() + this.link.latencyMs })
      this.queued += chunk.length
      this.flush()
    })
    src.on('end', () => { this.ended = true; this.flush() })
    dst.on('drain', () => { this.waitingDrain = false; this.flush() })
  }

  /** Re-evaluates timing after a change of settings. */
  kick (): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    this.flush()
  }

  stop (): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    this.queue.length = 0
  }

  /** Drops what is queued and keeps reading the source (into the black hole). */
  discard (): void {
    this.stop()
    this.queued = 0
    this.waitingDrain = false
    if (!this.src.destroyed && this.src.isPaused()) this.src.resume()
  }

  private flush (): void {
    if (this.timer || this.waitingDrain || this.dst.destroyed) return this.flowControl()
    while (this.queue.length > 0) {
      const head = this.queue[0]
      const now = Date.now()
      const bps = this.link.bytesPerSec
      const wait = Math.max(head.due - now, bps ? this.nextFree - now : 0)
      if (wait > 0) {
        this.timer = setTimeout(() => { this.timer = null; this.flush() }, Math.ceil(wait))
        return this.flowControl()
      }
      let piece = head.chunk
      if (bps) {
        const slice = Math.max(1, Math.floor(bps * SLICE_MS / 1000))
        piece = head.chunk.subarray(0, slice)
        this.nextFree = Math.max(now, this.nextFree) + piece.length * 1000 / bps
      }
      if (piece.length === head.chunk.length) this.queue.shift()
      else head.chunk = head.chunk.subarray(piece.length)
      this.queued -= piece.length
      if (!this.dst.write(piece)) {
        this.waitingDrain = true
        return this.flowControl()
      }
    }
    if (this.ended && !this.dst.writableEnded) this.dst.end()
    this.flowControl()
  }

  private flowControl (): void {
    if (this.src.destroyed || this.ended) return
    const hold = this.waitingDrain || this.queued >= HIGH_WATER
    if (hold && !this.src.isPaused()) this.src.pause()
    else if (!hold && this.src.isPaused()) this.src.resume()
  }
}

/** Starts a proxy on an ephemeral 127.0.0.1 port forwarding to target. */
export async function startProxy (target: ProxyTarget): Promise<Proxy> {
  const up: Link = { latencyMs: 0, bytesPerSec: null, blackHole: false }
  const down: Link = { latencyMs: 0, bytesPerSec: null, blackHole: false }
  const sockets = new Set<Socket>()
  // Sockets that were open during a hold: restore() destroys them.
  const held = new Set<Socket>()
  const pipes = new Set<Pipe>()
  let isCut = false
  let closed: Promise<void> | null = null

  const destroyAll = (): void => {
    for (const p of pipes) p.stop()
    for (const s of sockets) s.destroy()
  }

  // allowHalfOpen: a FIN from one side is forwarded after the queued data instead of closing both.
  const server: Server = createServer({ allowHalfOpen: true }, (client) => {
    if (isCut) {
      client.destroy()
      return
    }
    const upstream = tcpConnect({ host: target.host, port: target.port, allowHalfOpen: true })
    const toUpstream = new Pipe(client, upstream, up)
    const toClient = new Pipe(upstream, client, down)
    const side = (s: Socket, other: Socket, into: Pipe): void => {
      sockets.add(s)
      pipes.add(into)
      s.on('error', () => {})
      s.on('close', (hadError) => {
        sockets.delete(s)
        held.delete(s)
        into.stop()
        pipes.delete(into)
        // A reset (or a failed upstream connect) is passed on at once; after a clean close the
        // pipe out of s still delivers what it holds, then ends the other side.
        if (hadError) other.destroy()
      })
    }
    side(client, upstream, toClient)
    side(upstream, client, toUpstream)
    if (up.blackHole) { held.add(client); held.add(upstream) }
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve() })
  })
  const address = server.address()
  if (!address || typeof address === 'string') throw new Error('proxy has no TCP address')

  return {
    port: address.port,
    cut: () => {
      isCut = true
      destroyAll()
    },
    hold: () => {
      up.blackHole = true
      down.blackHole = true
      // What is queued in the pipes is lost too.
      for (const p of pipes) p.discard()
      for (const s of sockets) held.add(s)
    },
    restore: () => {
      isCut = false
      if (up.blackHole) {
        up.blackHole = false
        down.blackHole = false
        for (const s of held) s.destroy()
        held.clear()
      }
    },
    setLatency: (ms: number, direction: ProxyDirection = 'both') => {
      if (!(ms >= 0)) throw new RangeError(`latency must be >= 0 ms, got ${ms}`)
      if (direction !== 'down') up.latencyMs = ms
      if (direction !== 'up') down.latencyMs = ms
    },
    setBandwidth: (bytesPerSec: number | null) => {
      if (bytesPerSec !== null && !(bytesPerSec > 0)) throw new RangeError(`bandwidth must be > 0 bytes/s or null, got ${bytesPerSec}`)
      up.bytesPerSec = bytesPerSec
      down.bytesPerSec = bytesPerSec
      for (const p of pipes) p.kick()
    },
    close: () => {
      closed ??= new Promise<void>((resolve) => {
        isCut = true
        server.close(() => resolve())
        destroyAll()
      })
      return closed
    },
  }
}
