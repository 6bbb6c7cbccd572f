// Gateway configuration: one schema, read from a file (YAML or JSON), then the environment
// (GW_SECTION__KEY=value), then flags (--set section.key=value), validated once at start.
// Every default is set here, beside its key, and documented in README.md.
import { readFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { loadLayered, parseWith } from '../lib/config-sources.ts'
import { GATEWAY_ID, GATEWAY_ID_RULE } from '../proto/ids.ts'
import { GatewayError } from './errors.ts'

const port = z.number().int().min(0).max(65535)

const tlsSchema = z.object({
  port: port.default(8883),
  certFile: z.string(),
  keyFile: z.string(),
  /** CA for client certificates; with requireClientCert the certificate's CN names the device. */
  caFile: z.string().optional(),
  requireClientCert: z.boolean().default(false),
}).strict()

export const configSchema = z.object({
  /** Identity of this gateway in the cloud; subjects are namespaced by it. */
  gatewayId: z.string().regex(GATEWAY_ID, `must be ${GATEWAY_ID_RULE}`).default(hostname().replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 64) || 'gateway'),
  /** Where the outbox and device registry live (gateway.db). */
  dataDir: z.string().default('.data/gateway'),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** When set, the bound ports are written here as JSON once listening (used by tests and tools). */
  portsFile: z.string().optional(),
  mqtt: z.object({
    host: z.string().default('0.0.0.0'),
    port: port.default(1883),
    /** MQTT over WebSocket; null turns it off. */
    wsPort: port.nullable().default(8083),
    tls: tlsSchema.nullable().default(null),
    maxConnections: z.number().int().positive().default(20000),
    /** Connections (client ids) one device may hold at once; beyond it CONNACK 0x97 (3.1.1: 3). */
    maxConnectionsPerDevice: z.number().int().positive().default(1),
    /** The client id a device must connect with: `{device}` is its device id, `*` up to 64 characters of [A-Za-z0-9_.-]. */
    clientIdPattern: z.string().regex(/^[A-Za-z0-9_.\-*]*\{device\}[A-Za-z0-9_.\-*]*$/, 'must hold {device} once, around it only [A-Za-z0-9_.-] and *').default('{device}'),
    /** Longest client id accepted (bytes), checked before the credentials. */
    maxClientIdBytes: z.number().int().min(1).max(65535).default(128),
    /** MQTT 5 Receive Maximum: QoS 1/2 publishes a device may have unacknowledged; above it DISCONNECT 0x93. */
    receiveMaximum: z.number().int().min(1).max(65535).default(100),
    /** Longest session a device may keep after it disconnects (MQTT 5 Session Expiry Interval is cut to it; 3.1.1 persistent sessions end after it too). */
    maxSessionExpirySeconds: z.number().int().min(0).default(86400),
    /**
     * MQTT 5 Server Keep Alive: a device asking for no keep-alive (0) or a longer one is told this one
     * in CONNACK and disconnected after 1.5 times it without a packet; 0 = the device's own. MQTT 3.1.1
     * has no way to say it: those devices keep their own.
     */
    maxKeepAliveSeconds: z.number().int().min(0).max(65535).default(1200),
    /** MQTT 5 Topic Alias Maximum announced to devices (0: no aliases). */
    topicAliasMaximum: z.number().int().min(0).max(65535).default(16),
    /** Largest MQTT packet accepted (announced to MQTT 5 devices); a larger one is refused once its header is read: DISCONNECT 0x95, or a close. */
    maxPacketBytes: z.number().int().min(64).default(64 * 1024),
    /** Largest telemetry payload accepted; a larger one is quarantined with reason payload_too_large. */
    maxPayloadBytes: z.number().int().min(16).default(16 * 1024),
    /** MQTT 5 user properties of a telemetry publish kept with the event (keys up to 64 bytes, values up to 256); the rest are dropped and counted. */
    maxUserProperties: z.number().int().min(0).max(64).default(8),
    /** Per-device publish rate: sustained events/s and burst. Above it a device is throttled. */
    ratePerDevice: z.number().positive().default(1000),
    burstPerDevice: z.number().int().positive().default(2000),
    /** A device needing more than this much throttling delay is disconnected instead. */
    maxThrottleMs: z.number().int().min(0).default(5000),
    /** Devices without credentials: the MQTT client id is taken as the device id. Off by default. */
    allowAnonymous: z.boolean().default(false),
  }).strict().prefault({}),
  outbox: z.object({
    /** full: fsync on every commit, survives power loss. normal: faster, a power cut may lose the last commits (never corrupts). */
    durability: z.enum(['full', 'normal']).default('full'),
    /** Disk budget for buffered events (event bytes + per-row overhead). */
    budgetBytes: z.number().int().positive().default(1024 * 1024 * 1024),
    /** shed-oldest: drop the oldest routine telemetry (counted, gap recorded). reject-new: refuse new telemetry. */
    overflow: z.enum(['shed-oldest', 'reject-new']).default('shed-oldest'),
    /** Most events in one commit group. */
    maxGroupEvents: z.number().int().positive().default(4000),
    /** WAL checkpoints run in a worker thread this often (ms), off the broker's event loop. */
    checkpointIntervalMs: z.number().int().positive().default(200),
    /** WAL size beyond which the ingest connection checkpoints by itself (the worker fell behind). */
    maxWalBytes: z.number().int().positive().default(64 * 1024 * 1024),
    /** Bound of the in-memory queue waiting for a commit; beyond it publishes are refused. */
    maxPendingEvents: z.number().int().positive().default(100000),
    /**
     * Resend de-duplication: per device, the identities (device ts + payload hash) of the last this
     * many committed readings are remembered (8 bytes each, in memory and in the database). A
     * resend of one of them is acknowledged but not stored again. It must cover the most publishes
     * a device keeps in flight; 0 turns de-duplication off.
     */
    resendWindow: z.number().int().min(0).max(4096).default(64),
    /** Dead-letter rows kept (oldest dropped first) and bytes of payload copied into each. */
    deadLetterRows: z.number().int().positive().default(10000),
    deadLetterPayloadBytes: z.number().int().min(0).default(256),
    /**
     * Dead letters reported to the cloud (a control event in the priority lane, with the payload's
     * first deadLetterPayloadBytes), per second, in bursts of 10 s of the rate; beyond it a flood of
     * bad input is only counted (the heartbeat carries the counts by reason), so that it never
     * crowds decisions out of the priority lane. 0 = none reported.
     */
    deadLetterReportsPerSec: z.number().min(0).default(5),
  }).strict().prefault({}),
  uplink: z.object({
    /** NATS servers of the cloud; empty = no uplink (events stay buffered in the outbox). */
    servers: z.preprocess((v) => typeof v === 'string' ? v.split(',').map((x) => x.trim()).filter(Boolean) : v, z.array(z.string())).default([]),
    user: z.string().optional(),
    pass: z.string().optional(),
    token: z.string().optional(),
    /** File with an nkey seed (SU...) or a .creds file (JWT + seed). */
    nkeySeedFile: z.string().optional(),
    credsFile: z.string().optional(),
    tls: z.object({ caFile: z.string().optional(), certFile: z.string().optional(), keyFile: z.string().optional() }).strict().nullable().default(null),
    /** Events per replication batch (one JetStream message) and its byte cap. */
    batchMaxEvents: z.number().int().positive().default(2000),
    batchMaxBytes: z.number().int().min(1024).default(512 * 1024),
    /**
     * A live batch goes at most this long (ms) after the previous one, so that it carries what
     * arrived meanwhile: fewer, fuller batches (each costs two transactions and a message). Adds at
     * most this much to freshness; the priority lane never waits. 0 = a batch per commit.
     */
    liveLingerMs: z.number().int().min(0).max(1000).default(20),
    /** Batches awaiting a JetStream ack at once, for the backlog; live and priority lanes have 2 each on top. */
    maxInFlight: z.number().int().positive().default(8),
    /** Backlog drain cap in events/s (0 = as fast as the link allows). Live and priority events are not capped by it. */
    drainEventsPerSec: z.number().min(0).default(0),
    /** Uplink bandwidth cap in bytes/s over all lanes (0 = none). */
    bandwidthBytesPerSec: z.number().min(0).default(0),
    publishTimeoutMs: z.number().int().positive().default(5000),
    /** Connected, something to replicate, and no ack for this many publishTimeoutMs: the uplink is stalled and reconnects (0: never). */
    stallAfterTimeouts: z.number().int().min(0).default(3),
    /** Reconnect backoff: jittered exponential from min to max, forever. */
    reconnectMinMs: z.number().int().positive().default(250),
    reconnectMaxMs: z.number().int().positive().default(10000),
    /** Dead-link detection: a ping every pingIntervalMs, the link is dropped after maxPingOut missed. */
    pingIntervalMs: z.number().int().positive().default(5000),
    maxPingOut: z.number().int().positive().default(2),
    heartbeatMs: z.number().int().positive().default(5000),
    /**
     * CPU priority (nice, 0-19) of the uplink thread (Linux): a drain then takes only the CPU that
     * the broker and the rules leave, and decisions do not wait behind it. 0 = the process's own.
     */
    threadNice: z.number().int().min(0).max(19).default(10),
    /** The per-device delivery ledger: devices per heartbeat (changed first, then the rest in turn; 0 = none sent). */
    deliveryReportDevices: z.number().int().min(0).default(500),
    /** Outbox rows read per heartbeat period for the devices' oldest unsent events (beyond them: an age bound). */
    deliveryScanRows: z.number().int().positive().default(20000),
    /** How often the attached cloud-to-edge channel (rules watch, commands consumer) is checked; a lost one re-attaches. */
    channelVerifyMs: z.number().int().positive().default(5000),
  }).strict().prefault({}),
  rules: z.object({
    /** Rule set file (YAML or JSON), watched and hot-reloaded; a rule set pushed by the cloud replaces it. */
    file: z.string().optional(),
    /** How often time-based conditions (staleness, debounce, window close) are checked. */
    tickMs: z.number().int().min(10).default(100),
    /** How often the rules file is checked for changes. */
    watchMs: z.number().int().min(50).default(1000),
  }).strict().prefault({}),
  commands: z.object({
    /** A command not acknowledged by the device in this time is re-sent, up to maxAttempts in all. */
    ackTimeoutMs: z.number().int().positive().default(5000),
    maxAttempts: z.number().int().positive().default(3),
    /** Default lifetime of a command; past it, it is not sent (again) and is recorded as expired. */
    defaultTtlMs: z.number().int().positive().default(60000),
    /** Commands awaiting an acknowledgement; beyond it new commands are refused (recorded as rejected). */
    maxPending: z.number().int().positive().default(10000),
  }).strict().prefault({}),
  http: z.object({
    host: z.string().default('0.0.0.0'),
    /** Prometheus metrics (/metrics), /healthz and /readyz; null turns it off. */
    port: port.nullable().default(9464),
  }).strict().prefault({}),
  /** How long SIGTERM may take to flush and close before the process exits anyway. */
  shutdownTimeoutMs: z.number().int().positive().default(10000),
}).strict()

export type GatewayConfig = z.infer<typeof configSchema>
export type GatewayConfigInput = z.input<typeof configSchema>

/** Validates a config object; the error names the bad key and why. */
export function parseConfig (input: unknown): GatewayConfig {
  return parseWith(configSchema, input, configError)
}

/** Reads file, environment (GW_SECTION__KEY) and --set flags (in that order, last wins) and validates. */
export function loadConfig (opts: { file?: string, env?: NodeJS.ProcessEnv, sets?: string[] }): GatewayConfig {
  let base: Record<string, unknown> = {}
  if (opts.file) {
    let text: string
    try {
      text = readFileSync(opts.file, 'utf8')
    } catch (err) {
      throw new GatewayError('GW_ERR_CONFIG', `cannot read config file ${opts.file}: ${(err as Error).message}`, { cause: err })
    }
    try {
      base = (parseYaml(text) ?? {}) as Record<string, unknown>
    } catch (err) {
      throw new GatewayError('GW_ERR_CONFIG', `config file ${opts.file} is not valid YAML/JSON: ${(err as Error).message}`, { cause: err })
    }
  }
  return loadLayered(configSchema, { base, env: opts.env, envPrefix: 'GW_', sets: opts.sets }, configError)
}

const configError = (message: string): GatewayError => new GatewayError('GW_ERR_CONFIG', `invalid gateway config: ${message}`)
