// The embedded MQTT broker (aedes): listeners (TCP, TLS, WebSocket), authentication, ACL, per-device
// throttling and the hand-off of telemetry to the ingest path.
import { Aedes, type AuthenticateError, type Client, type PublishPacket, type Subscription } from 'aedes'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net'
import { createServer as createTlsServer, type TLSSocket, type Server as TlsServer } from 'node:tls'
import { WebSocketServer, createWebSocketStream } from 'ws'
import type { GatewayConfig } from '../config.ts'
import type { DeviceRegistry } from '../store/device-registry.ts'
import { GatewayError } from '../errors.ts'
import type { Ingest } from '../ingest/ingest.ts'
import type { Logger } from '../log.ts'
import type { GatewayMetrics } from '../metrics.ts'
import { guardPacketSize } from './packet-size-guard.ts'
import { TokenBucket } from '../../lib/token-bucket.ts'
import { DEVICE_ID, maySubscribe, publishKind } from '../../proto/topics.ts'
import { Lifecycle } from '../../lib/lifecycle.ts'

// mqtt-packet (aedes' encoder) by default builds, on the first packet it writes, a cache of all
// 65,536 two-byte message-id Buffers: ~7 MB of heap held for good, to save a 2-byte allocation per
// QoS 1 packet. Off: each message id is encoded on the fly. Resolved from aedes' own location so it
// is the copy aedes uses.
const requireFromAedes = createRequire(createRequire(import.meta.url).resolve('aedes'))
const mqttPacketPath = requireFromAedes.resolve('mqtt-packet')
const mqttPacket = requireFromAedes(mqttPacketPath) as { writeToStream: { cacheNumbers: boolean } }
mqttPacket.writeToStream.cacheNumbers = false
// Each connection's mqtt-packet parser (mqtt-packet 9) keeps the bytes not parsed yet in a `bl`
// BufferListStream: a whole readable-stream Duplex (two stream states and their listeners, ~0.9 KB
// per connection, 9 MB with 10k devices) of which it uses only the BufferList methods (append,
// consume, slice, toString, readUInt*). handle() gives each new parser a plain BufferList instead.
const BufferList = createRequire(mqttPacketPath)('bl/BufferList.js') as new () => object

interface Session {
  deviceId: string
  bucket: TokenBucket
  /** Publishes held back by the throttle, released in order by one timer. */
  held: Array<{ releaseAt: number, run: () => void }>
  timer: NodeJS.Timeout | null
}

export interface BrokerPorts { mqtt: number, ws: number | null, tls: number | null }

/** What the broker reports about commands to actuators (the command tracker takes them). */
export interface CommandReceipts {
  /** A device's acknowledgement on devices/{id}/commands/ack. */
  acknowledged: (deviceId: string, payload: Buffer) => void
  /** A device's PUBACK of a QoS 1 command: it reached the device. */
  delivered: (deviceId: string, payload: Buffer) => void
}

export class Broker extends Lifecycle {
  readonly aedes: Aedes
  private readonly sessions = new WeakMap<Client, Session>()
  private servers: Array<NetServer | TlsServer | HttpServer> = []
  private wss: WebSocketServer | null = null
  private openConnections = 0

  constructor (
    private readonly cfg: GatewayConfig['mqtt'],
    private readonly registry: DeviceRegistry,
    private readonly ingest: Ingest,
    private readonly commands: CommandReceipts,
    private readonly log: Logger,
    private readonly metrics: GatewayMetrics,
  ) {
    super()
    this.aedes = new Aedes({ drainTimeout: 30000, connectTimeout: 10000 })
    this.aedes.preConnect = (client, _packet, done) => this.preConnect(client, done)
    this.aedes.authenticate = (client, username, password, done) => this.authenticate(client, username, password, done)
    this.aedes.authorizePublish = (client, packet, done) => this.authorizePublish(client, packet, done)
    this.aedes.authorizeSubscribe = (client, sub, done) => this.authorizeSubscribe(client, sub, done)
    this.aedes.on('clientReady', () => { this.metrics.connectionsTotal.inc(); this.metrics.connections.set(this.aedes.connectedClients) })
    this.aedes.on('clientDisconnect', (client) => {
      this.metrics.connections.set(this.aedes.connectedClients)
      this.dropHeld(client)
    })
    this.aedes.on('clientError', (client) => this.dropHeld(client))
    // The device's PUBACK of a QoS 1 command: the command reached it. aedes knows the acked packet
    // only for persistent sessions (clean: false); for clean ones it passes undefined.
    this.aedes.on('ack', (packet, client) => {
      const s = client ? this.sessions.get(client) : undefined
      if (s && packet?.cmd === 'publish' && packet.payload) this.commands.delivered(s.deviceId, packet.payload as Buffer)
    })
    this.aedes.on('clientError', (client, err) => this.log.debug({ deviceId: this.sessions.get(client)?.deviceId, err }, 'client error'))
  }

  /** Starts the listeners; resolves with the bound ports. */
  async start (): Promise<BrokerPorts> {
    await this.aedes.listen()
    const handle = (conn: Socket | TLSSocket | import('node:stream').Duplex, req?: import('node:http').IncomingMessage): void => {
      const client = this.aedes.handle(conn, req) as Client & { _parser: Parameters<typeof guardPacketSize>[0] & { _list: { length: number } } }
      if (client._parser._list.length === 0) client._parser._list = new BufferList() as typeof client._parser._list
      guardPacketSize(client._parser, this.cfg.maxPacketBytes, (length) => {
        this.metrics.rejected.inc({ reason: 'packet_too_large' })
        this.log.warn({ deviceId: this.sessions.get(client)?.deviceId, length, limit: this.cfg.maxPacketBytes }, 'packet too large: connection closed')
      })
    }
    const tcp = createNetServer((sock) => { sock.setNoDelay(true); handle(sock) })
    const ports: BrokerPorts = { mqtt: await this.listen(tcp, this.cfg.port), ws: null, tls: null }
    if (this.cfg.tls) {
      const t = this.cfg.tls
      const tls = createTlsServer({
        cert: readFileSync(t.certFile),
        key: readFileSync(t.keyFile),
        ca: t.caFile ? readFileSync(t.caFile) : undefined,
        requestCert: t.requireClientCert || Boolean(t.caFile),
        rejectUnauthorized: t.requireClientCert,
      }, (sock) => { sock.setNoDelay(true); handle(sock) })
      ports.tls = await this.listen(tls, t.port)
    }
    if (this.cfg.wsPort !== null) {
      const http = createHttpServer((_req, res) => { res.writeHead(426).end('MQTT over WebSocket only\n') })
      this.wss = new WebSocketServer({ server: http, maxPayload: this.cfg.maxPacketBytes + 8 })
      this.wss.on('connection', (ws, req) => handle(createWebSocketStream(ws), req))
      ports.ws = await this.listen(http, this.cfg.wsPort)
    }
    return ports
  }

  private listen (server: NetServer | TlsServer | HttpServer, port: number): Promise<number> {
    this.servers.push(server)
    return new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, this.cfg.host, () => {
        server.off('error', reject)
        resolve((server.address() as AddressInfo).port)
      })
    })
  }

  private preConnect (client: Client, done: (err: Error | null, ok: boolean) => void): void {
    if (this.isClosing) return done(new Error('gateway is shutting down'), false)
    if (this.aedes.connectedClients >= this.cfg.maxConnections) {
      this.metrics.rejected.inc({ reason: 'too_many_connections' })
      return done(new Error(`connection limit ${this.cfg.maxConnections} reached`), false)
    }
    void client
    done(null, true)
  }

  private authenticate (client: Client, username: string | undefined, password: Buffer | undefined, done: (err: AuthenticateError | null, ok: boolean | null) => void): void {
    const refuse = (reason: string, returnCode: 4 | 5): void => {
      this.metrics.rejected.inc({ reason })
      this.log.info({ deviceId: username ?? client.id, reason }, 'connection refused')
      const err = new Error(reason) as AuthenticateError
      err.returnCode = returnCode
      done(err, false)
    }
    let deviceId: string
    let secret: string | null
    const sock = client.conn as Partial<TLSSocket>
    const cert = sock.authorized && typeof sock.getPeerCertificate === 'function' ? sock.getPeerCertificate() : null
    const cn = cert?.subject?.CN
    if (typeof cn === 'string' && cn !== '') {
      // Mutual TLS: the verified certificate names the device; a username, if any, must agree.
      deviceId = cn
      if (username !== undefined && username !== deviceId) return refuse('certificate_mismatch', 5)
      secret = null
    } else if (username !== undefined) {
      deviceId = username
      secret = password?.toString('utf8') ?? ''
    } else if (this.cfg.allowAnonymous) {
      if (!DEVICE_ID.test(client.id)) return refuse('bad_client_id', 5)
      this.attach(client, client.id)
      return done(null, true)
    } else {
      return refuse('no_credentials', 5)
    }
    const res = this.registry.verify(deviceId, secret)
    if (!res.ok) return refuse(res.reason, res.reason === 'bad_credentials' ? 4 : 5)
    this.attach(client, deviceId)
    done(null, true)
  }

  private attach (client: Client, deviceId: string): void {
    this.sessions.set(client, { deviceId, bucket: new TokenBucket(this.cfg.ratePerDevice, this.cfg.burstPerDevice, performance.now()), held: [], timer: null })
  }

  private authorizeSubscribe (client: Client, sub: Subscription, done: (err: Error | null, sub?: Subscription | null) => void): void {
    const s = this.sessions.get(client)
    if (s && maySubscribe(s.deviceId, sub.topic)) return done(null, sub)
    this.metrics.rejected.inc({ reason: 'subscribe_not_allowed' })
    this.log.info({ deviceId: s?.deviceId, topic: sub.topic }, 'subscription refused')
    done(null, null) // SUBACK 0x80 for this filter; the connection stays up
  }

  private authorizePublish (client: Client | null, packet: PublishPacket, done: (err?: Error | null) => void): void {
    const s = client ? this.sessions.get(client) : undefined
    const kind = s ? publishKind(s.deviceId, packet.topic) : null
    if (!s || kind === null) {
      // MQTT 3.1.1 has no per-message refusal: the publish is dropped (not stored) and the connection closed.
      this.metrics.rejected.inc({ reason: 'topic_not_allowed' })
      this.log.info({ deviceId: s?.deviceId, topic: packet.topic }, 'publish outside the device topic space refused')
      return done(new GatewayError('GW_ERR_NOT_AUTHORIZED', `publish to ${packet.topic} not allowed`))
    }
    if (kind === 'command_ack') {
      this.commands.acknowledged(s.deviceId, packet.payload as Buffer)
      return done(null)
    }
    this.throttle(s, done, () => this.ingest.telemetry(s.deviceId, packet, done))
  }

  // Delays a device that publishes faster than its rate (its PUBACKs come later; others are not
  // affected). Beyond maxThrottleMs of delay the publish is refused and the device disconnected.
  private throttle (s: Session, done: (err?: Error | null) => void, run: () => void): void {
    const now = performance.now()
    const wait = s.bucket.take(now)
    if (wait === 0 && s.held.length === 0) return run()
    if (wait > this.cfg.maxThrottleMs) {
      s.bucket.refund()
      this.metrics.rejected.inc({ reason: 'rate_limited' })
      this.log.warn({ deviceId: s.deviceId, rate: this.cfg.ratePerDevice }, 'device far above its publish rate: disconnected')
      return done(new GatewayError('GW_ERR_RATE_LIMITED', `device ${s.deviceId} exceeds ${this.cfg.ratePerDevice} publishes/s`))
    }
    this.metrics.throttled.inc()
    s.held.push({ releaseAt: now + wait, run })
    if (!s.timer) this.armThrottle(s)
  }

  // Publishes still held by the throttle when their device goes away are never acknowledged, so
  // they must not be stored either: the device will resend them.
  private dropHeld (client: Client): void {
    const s = this.sessions.get(client)
    if (!s) return
    if (s.timer) clearTimeout(s.timer)
    s.timer = null
    s.held = []
  }

  private armThrottle (s: Session): void {
    const next = s.held[0]
    s.timer = setTimeout(() => {
      s.timer = null
      const now = performance.now()
      while (s.held.length > 0 && s.held[0].releaseAt <= now) s.held.shift()!.run()
      if (s.held.length > 0) this.armThrottle(s)
    }, Math.max(0, next.releaseAt - performance.now()))
  }

  /** Publishes a message from the gateway itself (e.g. a command to a device). */
  publish (topic: string, payload: Buffer, qos: 0 | 1): Promise<void> {
    return new Promise((resolve, reject) => {
      this.aedes.publish({ cmd: 'publish', topic, payload, qos, retain: false, dup: false } as PublishPacket, (err) => err ? reject(err) : resolve())
    })
  }

  /** Stops accepting connections, then closes every client and the broker. Idempotent. */
  protected async onClose (): Promise<void> {
    this.wss?.close()
    const stopped = Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
    await new Promise<void>((resolve) => this.aedes.close(() => resolve()))
    await stopped
  }

  protected onDestroy (): void {
    // The broker has nothing to flush: refusing new work and closing the sockets is all there is.
    void this.onClose()
  }
}
