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
import { brokerRefusal, connectRefused, malformedDisconnect, publishRefusedV5, quarantinedV5, type BrokerError, type ConnectRefusal } from './answers.ts'
import { DeviceConnections } from './device-connections.ts'
import { DeviceSession } from './device-session.ts'
import { boundUserProperties } from './user-properties.ts'
import { DEVICE_ID, commandAckTopic, commandTopic, unknownOwnTopic, maySubscribe, publishKind } from '../../proto/topics.ts'
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

export interface BrokerPorts { mqtt: number, ws: number | null, tls: number | null }

/** What the broker reports about commands to actuators (the command tracker takes them). */
export interface CommandReceipts {
  /** A device's acknowledgement on devices/{id}/commands/ack (MQTT 5: with the command's Correlation Data). */
  acknowledged: (deviceId: string, payload: Buffer, correlationData?: Buffer) => void
  /** A device's PUBACK of a QoS 1 command: it reached the device. */
  delivered: (deviceId: string, payload: Buffer) => void
}

export class Broker extends Lifecycle {
  readonly aedes: Aedes
  private readonly sessions = new WeakMap<Client, DeviceSession>()
  private readonly devices: DeviceConnections
  private servers: Array<NetServer | TlsServer | HttpServer> = []
  private wss: WebSocketServer | null = null

  constructor (
    private readonly cfg: GatewayConfig['mqtt'],
    private readonly registry: DeviceRegistry,
    private readonly ingest: Ingest,
    private readonly commands: CommandReceipts,
    private readonly log: Logger,
    private readonly metrics: GatewayMetrics,
  ) {
    super()
    this.devices = new DeviceConnections(cfg)
    this.aedes = new Aedes({
      drainTimeout: 30000,
      connectTimeout: 10000,
      // Refused as soon as a read holds the header: MQTT 5 devices get DISCONNECT 0x95, others a close.
      maximumPacketSize: cfg.maxPacketBytes,
      // MQTT 5, in CONNACK: Receive Maximum (enforced in authorizePublish), Topic Alias Maximum (enforced by aedes).
      receiveMaximum: cfg.receiveMaximum,
      topicAliasMaximum: cfg.topicAliasMaximum,
      // MQTT 5 Server Keep Alive; 3.1.1 devices are not refused for their keep-alive (patch, moscajs/aedes#836).
      keepaliveLimit: cfg.maxKeepAliveSeconds,
      keepaliveLimitV4: false,
      // Sessions kept for disconnected devices: each ends after at most this long, and no more of
      // them wait to expire than there are connection slots.
      sessionExpiryIntervalLimit: cfg.maxSessionExpirySeconds,
      pendingSessionsLimit: cfg.maxConnections,
    })
    this.aedes.preConnect = (client, _packet, done) => this.preConnect(client, done)
    this.aedes.authenticate = (client, username, password, done) => this.authenticate(client, username, password, done)
    this.aedes.authorizePublish = (client, packet, done) => this.authorizePublish(client, packet, done)
    this.aedes.authorizeSubscribe = (client, sub, done) => this.authorizeSubscribe(client, sub, done)
    this.aedes.on('clientReady', () => { this.metrics.connectionsTotal.inc(); this.metrics.connections.set(this.aedes.connectedClients) })
    this.aedes.on('clientDisconnect', (client) => {
      this.metrics.connections.set(this.aedes.connectedClients)
      this.sessions.get(client)?.dropHeld()
    })
    // The device's PUBACK of a QoS 1 command: the command reached it. aedes knows the acked packet
    // only for persistent sessions (clean: false); for clean ones it passes undefined.
    this.aedes.on('ack', (packet, client) => {
      const s = client ? this.sessions.get(client) : undefined
      if (s && packet?.cmd === 'publish' && packet.payload) this.commands.delivered(s.deviceId, packet.payload as Buffer)
    })
    // A client error closes the connection, except an MQTT 5 publish refused with a reason code
    // (it is answered and counted where it is refused).
    this.aedes.on('clientError', (client, err) => this.clientError(client, err))
    this.aedes.on('keepaliveTimeout', (client) => {
      this.metrics.keepaliveTimeouts.inc()
      this.log.info({ deviceId: this.sessions.get(client)?.deviceId, clientId: client.id?.slice(0, 64) }, 'device silent beyond its keep-alive: disconnected')
    })
    this.aedes.on('connectionError', (client, err) => this.clientError(client, err))
  }

  /** Starts the listeners; resolves with the bound ports. */
  async start (): Promise<BrokerPorts> {
    await this.aedes.listen()
    const handle = (conn: Socket | TLSSocket | import('node:stream').Duplex, req?: import('node:http').IncomingMessage): void => {
      const client = this.aedes.handle(conn, req) as Client & { _parser: { _list: { length: number }, prependListener: (ev: 'error', fn: (err: BrokerError) => void) => void } }
      if (client._parser._list.length === 0) client._parser._list = new BufferList() as typeof client._parser._list
      // A parser error is a malformed packet: marked before aedes reports it and closes the
      // connection; an MQTT 5 device is told why first (the write leaves before aedes' close).
      client._parser.prependListener('error', (err) => {
        err.malformed = true
        if (client.version === 5 && client.connected && !client.closed) conn.write(malformedDisconnect(err))
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

  // Counts (and logs at info) what aedes refused by itself; the gateway's own refusals were counted
  // where they were made.
  private clientError (client: Client, err: BrokerError): void {
    const deviceId = this.sessions.get(client)?.deviceId
    const reason = brokerRefusal(err)
    if (reason === null) {
      if (err.counted !== true && !(err instanceof GatewayError)) this.log.debug({ deviceId, clientId: client.id?.slice(0, 64), err }, 'client error')
      return
    }
    this.metrics.rejected.inc({ reason })
    this.log.info({ deviceId, clientId: client.id?.slice(0, 64), reason, detail: err.message.slice(0, 200), size: err.size, limit: reason === 'packet_too_large' ? this.cfg.maxPacketBytes : undefined }, 'connection refused by the broker')
  }

  private preConnect (client: Client, done: (err: Error | null, ok: boolean) => void): void {
    void client
    done(null, true)
  }

  private authenticate (client: Client, username: string | undefined, password: Buffer | undefined, done: (err: AuthenticateError | null, ok: boolean | null) => void): void {
    const refuse = (reason: ConnectRefusal, message: string): void => {
      this.metrics.rejected.inc({ reason })
      // The client id is cut: it is the device's to choose, and may be long.
      this.log.info({ deviceId: username ?? client.id.slice(0, 64), clientId: client.id.slice(0, 64), version: client.version, reason }, 'connection refused')
      done(connectRefused(reason, message), false)
    }
    if (this.isClosing) return refuse('shutting_down', 'gateway is shutting down')
    if (!this.devices.lengthOk(client.id)) return refuse('client_id_too_long', `client id longer than ${this.cfg.maxClientIdBytes} bytes`)
    if (this.aedes.connectedClients >= this.cfg.maxConnections) return refuse('too_many_connections', `connection limit ${this.cfg.maxConnections} reached`)
    let deviceId: string
    let secret: string | null
    const sock = client.conn as Partial<TLSSocket>
    const cert = sock.authorized && typeof sock.getPeerCertificate === 'function' ? sock.getPeerCertificate() : null
    const cn = cert?.subject?.CN
    if (typeof cn === 'string' && cn !== '') {
      // Mutual TLS: the verified certificate names the device; a username, if any, must agree.
      deviceId = cn
      if (username !== undefined && username !== deviceId) return refuse('certificate_mismatch', 'user name differs from the certificate')
      secret = null
    } else if (username !== undefined) {
      deviceId = username
      secret = password?.toString('utf8') ?? ''
    } else if (this.cfg.allowAnonymous) {
      if (!DEVICE_ID.test(client.id)) return refuse('bad_client_id', 'client id is not a valid device id')
      return this.admit(client, client.id, refuse, done)
    } else {
      return refuse('no_credentials', 'user name and password required')
    }
    const res = this.registry.verify(deviceId, secret)
    if (!res.ok) return refuse(res.reason, res.reason === 'bad_credentials' ? 'bad user name or password' : 'not authorized')
    this.admit(client, deviceId, refuse, done)
  }

  private admit (client: Client, deviceId: string, refuse: (reason: ConnectRefusal, message: string) => void, done: (err: null, ok: true) => void): void {
    const refusal = this.devices.admit(client, deviceId)
    if (refusal === 'client_id_not_bound') return refuse(refusal, 'client id must be the device id')
    if (refusal === 'device_connection_limit') return refuse(refusal, `device already holds ${this.cfg.maxConnectionsPerDevice} connection(s)`)
    this.sessions.set(client, new DeviceSession(deviceId, client.version ?? 4, this.cfg.ratePerDevice, this.cfg.burstPerDevice))
    done(null, true)
  }

  // Every refused filter of a SUBSCRIBE is answered (SUBACK 0x80, or 0x87 with MQTT 5) and counted;
  // the log gets one line per packet, however many filters it holds.
  private authorizeSubscribe (client: Client, sub: Subscription, done: (err: Error | null, sub?: Subscription | null) => void): void {
    const s = this.sessions.get(client)
    if (s && maySubscribe(s.deviceId, sub.topic)) return done(null, sub)
    this.metrics.rejected.inc({ reason: 'subscribe_not_allowed' })
    if (s) s.refusedFilter(sub.topic, (first, count) => this.log.info({ deviceId: s.deviceId, topic: first.slice(0, 256), filters: count }, 'subscription refused'))
    done(null, null) // the connection stays up
  }

  private authorizePublish (client: Client | null, packet: PublishPacket & { releaseRead?: () => void }, done: (err?: Error | null) => void): void {
    const s = client ? this.sessions.get(client) : undefined
    if (!s) return done(new GatewayError('GW_ERR_NOT_AUTHORIZED', 'not connected as a device'))
    // MQTT 5: every refusal carries a reason code and (but for a rate or window breach) the
    // connection stays up. MQTT 3.1.1 has no per-message refusal: the publish is dropped, not
    // stored, and the connection closed; the device resends after reconnecting.
    const v5 = s.version === 5
    const counted = packet.qos > 0
    if (counted) s.unanswered++
    const inOrder = counted ? s.inOrder() : null
    let answered = false
    const answer = (err?: GatewayError | null, quarantined?: string): void => {
      const reply = (): void => {
        answered = true
        if (counted) s.unanswered--
        if (!v5) return done(err ?? null)
        if (err) return done(publishRefusedV5(err))
        done(quarantined === undefined ? null : quarantinedV5(quarantined))
      }
      // 3.1.1 has no refusal to put in order: it closes the connection at once (earlier PUBACKs
      // still waiting are lost with it; the device resends those readings and they are recognised).
      if (inOrder && !(err && !v5)) inOrder(reply)
      else reply()
    }
    this.handlePublish(s, packet, answer)
    // Pipelining (patched aedes): while this QoS 1 publish waits for its commit, the connection's
    // next packets are read, decoded and evaluated by the rules. Its PUBACK still leaves in order,
    // after its commit. Bounded: beyond receiveMaximum publishes waiting, the connection waits too.
    if (!answered && packet.qos === 1 && s.unanswered <= this.cfg.receiveMaximum && !s.throttling()) packet.releaseRead?.()
  }

  private handlePublish (s: DeviceSession, packet: PublishPacket, answer: (err?: GatewayError | null, quarantined?: string) => void): void {
    const v5 = s.version === 5
    const kind = publishKind(s.deviceId, packet.topic)
    if (kind === null) {
      const invalid = unknownOwnTopic(s.deviceId, packet.topic)
      this.metrics.rejected.inc({ reason: invalid ? 'topic_invalid' : 'topic_not_allowed' })
      this.log.info({ deviceId: s.deviceId, topic: packet.topic.slice(0, 256) }, invalid ? 'publish to a topic the gateway does not know refused' : 'publish outside the device topic space refused')
      return answer(invalid ? new GatewayError('GW_ERR_TOPIC_INVALID', `topic ${packet.topic} is not one the gateway takes`) : new GatewayError('GW_ERR_NOT_AUTHORIZED', `publish to ${packet.topic} not allowed`))
    }
    if (v5 && s.unanswered > this.cfg.receiveMaximum) {
      // Counted once: the rest of the packets read with it are refused with it.
      if (!s.overReceiveMaximum) {
        s.overReceiveMaximum = true
        this.metrics.rejected.inc({ reason: 'receive_maximum_exceeded' })
        this.log.warn({ deviceId: s.deviceId, receiveMaximum: this.cfg.receiveMaximum }, 'device above the Receive Maximum: disconnected')
      }
      return answer(new GatewayError('GW_ERR_RECEIVE_MAXIMUM', `more than ${this.cfg.receiveMaximum} publishes unacknowledged`))
    }
    if (kind === 'command_ack') {
      this.commands.acknowledged(s.deviceId, packet.payload as Buffer, packet.properties?.correlationData)
      return answer(null)
    }
    // A device above its rate is delayed (its PUBACKs come later; others are not affected); beyond
    // maxThrottleMs of delay the publish is refused and the device disconnected.
    const props = v5 ? boundUserProperties(packet.properties?.userProperties, this.cfg.maxUserProperties) : null
    if (props && props.dropped > 0) this.metrics.rejected.inc({ reason: 'user_property_dropped' }, props.dropped)
    const run = (): void => this.ingest.telemetry(s.deviceId, packet, answer, props?.kept)
    const throttled = s.throttle(this.cfg.maxThrottleMs, run)
    if (throttled === 'held') this.metrics.throttled.inc()
    if (throttled === 'refused') {
      this.metrics.rejected.inc({ reason: 'rate_limited' })
      this.log.warn({ deviceId: s.deviceId, rate: this.cfg.ratePerDevice }, 'device far above its publish rate: disconnected')
      answer(new GatewayError('GW_ERR_RATE_LIMITED', `device ${s.deviceId} exceeds ${this.cfg.ratePerDevice} publishes/s`))
    }
  }

  /**
   * Publishes a command to a device (QoS 1). An MQTT 5 device gets it as a request: Response Topic
   * its acknowledgement topic, Correlation Data the command id, and Message Expiry Interval what is
   * left of its lifetime, so a copy queued for an offline session is dropped once expired (aedes
   * checks it before delivering). MQTT 3.1.1 devices get the same message without properties.
   */
  publishCommand (deviceId: string, payload: Buffer, command: { id: string, expiresAtMs: number }): Promise<void> {
    const topic = commandTopic(deviceId)
    const properties = {
      responseTopic: commandAckTopic(deviceId),
      correlationData: Buffer.from(command.id, 'utf8'),
      messageExpiryInterval: Math.max(1, Math.ceil((command.expiresAtMs - Date.now()) / 1000)),
    }
    return new Promise((resolve, reject) => {
      this.aedes.publish({ cmd: 'publish', topic, payload, qos: 1, retain: false, dup: false, properties } as PublishPacket, (err) => err ? reject(err) : resolve())
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
