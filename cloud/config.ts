// Cloud configuration: one schema, from environment variables (IOT_CLOUD_SECTION__KEY=value) and then
// --set section.key=value flags, validated once at start. Every default is set here, beside its key.
import { z } from 'zod'
import { loadLayered, parseWith } from '../lib/config-sources.ts'
import { CloudError } from './errors.ts'
import { isPasswordHash } from './http/password-hash.ts'
import { MAX_PARTITIONS } from '../proto/index.ts'

// Not CLOUD_: cloud SDKs set CLOUD_* variables of their own (e.g. CLOUD_SDK_VERSION).
const ENV_PREFIX = 'IOT_CLOUD_'
const port = z.number().int().min(0).max(65535)
const list = z.preprocess((v) => typeof v === 'string' ? v.split(',').map((x) => x.trim()).filter(Boolean) : v, z.array(z.string()))

export const cloudConfigSchema = z.object({
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Start a local nats-server (JetStream, temporary store) instead of connecting to nats.servers: for a laptop. */
  embeddedNats: z.boolean().default(false),
  nats: z.object({
    servers: list.default(['nats://127.0.0.1:4222']),
    user: z.string().optional(),
    pass: z.string().optional(),
    token: z.string().optional(),
    /** A .creds file (JWT + nkey seed). */
    credsFile: z.string().optional(),
    tls: z.object({ caFile: z.string().optional(), certFile: z.string().optional(), keyFile: z.string().optional() }).strict().nullable().default(null),
  }).strict().prefault({}),
  /** Copies of every stream and KV bucket: 1 for a single server, 3 for a 3-node cluster. */
  replicas: z.union([z.literal(1), z.literal(3)]).default(1),
  /** JetStream de-duplication window of batch ids; beyond it the idempotent apply takes over. */
  duplicateWindowMs: z.number().int().positive().default(10 * 60_000),
  /** How long replicated batches stay in the streams (0 = forever). */
  streamMaxAgeMs: z.number().int().min(0).default(7 * 24 * 3600_000),
  /** At start, how long provisioning is tried again while it fails for a reason that can pass (a cluster still forming, a node down): then the start fails. */
  provisionRetryMs: z.number().int().min(0).default(60_000),
  /**
   * How long each rollup tier keeps its documents: the max_age of its KV bucket (ROLLUP_1M, ROLLUP_5M,
   * ROLLUP_1H), applied at start. Defaults: 14 days, 90 days, 730 days. README "Fleet history".
   */
  retention: z.object({
    rollup1mMs: z.number().int().min(1000).default(14 * 24 * 3600_000),
    rollup5mMs: z.number().int().min(1000).default(90 * 24 * 3600_000),
    rollup1hMs: z.number().int().min(1000).default(730 * 24 * 3600_000),
  }).strict().prefault({}),
  /** KV bucket holding the views. */
  viewsBucket: z.string().regex(/^[A-Za-z0-9_-]+$/).default('VIEWS'),
  /** A gateway with no heartbeat for this long is shown offline (gateways beat every 5 s by default). */
  offlineTimeoutMs: z.number().int().positive().default(15_000),
  /** An online gateway whose backlog has not gone lower for this long, while its link is up, is flagged "not draining". */
  drainStuckMs: z.number().int().positive().default(120_000),
  aggregator: z.object({
    /** Set false to run an API-only replica. */
    enabled: z.boolean().default(true),
    /** Prefix of the durable consumers and of the lease keys: the replicas of one cloud share it. */
    durablePrefix: z.string().regex(/^[A-Za-z0-9_-]+$/).default('aggregator'),
    /**
     * Partitions of the work by gateway: P of the NATS servers' `{{partition(P,1)}}` subject mapping
     * (deploy/nats/accounts.conf; checked at start). At most P replicas apply at once; more are standbys.
     */
    partitions: z.number().int().min(1).max(MAX_PARTITIONS).default(8),
    /** This replica's name in the lease table (default host-pid-random); a replica restarted under the same name takes its partitions back at once. */
    replicaId: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, '1-64 characters of [A-Za-z0-9_-]').optional(),
    /** A replica that stops renewing its leases (crashed, cut off) has its partitions taken over after this long. */
    leaseTtlMs: z.number().int().min(500).default(6000),
    maxBatchMessages: z.number().int().positive().default(64),
    maxRanges: z.number().int().positive().default(1000),
    cacheDocs: z.number().int().positive().default(20000),
    ackWaitMs: z.number().int().positive().default(30000),
  }).strict().prefault({}),
  http: z.object({
    host: z.string().default('0.0.0.0'),
    /** JSON API, /metrics, /healthz, /readyz; null turns it off. */
    port: port.nullable().default(8080),
    /**
     * Host names (any port) the API and console answer to besides localhost, 127.0.0.1, [::1] and
     * http.host (unless 0.0.0.0 or ::); another Host gets 421 (a DNS-rebinding guard,
     * cloud/http/host-guard.ts). Default: none. /healthz, /readyz and /metrics answer any Host.
     */
    allowedHosts: list.pipe(z.array(z.string().regex(/^(\[[0-9a-fA-F:.]+\](:\d+)?|[A-Za-z0-9.:_-]+)$/, 'a host name or address (a port is ignored), without scheme or path'))).default([]),
  }).strict().prefault({}),
  /** The console's login, in front of the web UI and the whole /api (cloud/http/session.ts, cloud/http/auth.ts). Always on. */
  console: z.object({
    user: z.string().min(1).default('admin'),
    /** scrypt hash from `cloud/hash-password.ts`; preferred over a clear password. */
    passwordHash: z.string().refine(isPasswordHash, 'not an scrypt hash (scrypt$N$r$p$salt$hash); make one with `node dist/cloud/hash-password.js`').optional(),
    /** Clear password (IOT_CLOUD_CONSOLE__PASSWORD), hashed at start. With neither, a one-time password is generated at first start (see stateDir). */
    password: z.string().min(1).optional(),
    /**
     * With neither password nor passwordHash: the first start generates a password, shows it once
     * (warn log, or stderr when warnings are not logged) and keeps only its hash here, in
     * `console-password.hash` (mode 0600), so restarts keep it. Relative to the working directory.
     */
    stateDir: z.string().min(1).default('.data/cloud'),
    /** How long a login lasts. */
    sessionTtlMs: z.number().int().positive().default(12 * 3600_000),
  }).strict().prefault({}),
  /** SIGTERM/SIGINT: finish the group being applied, close; exit after this deadline at the latest. */
  shutdownTimeoutMs: z.number().int().positive().default(10000),
}).strict()

export type CloudConfig = z.infer<typeof cloudConfigSchema>
export type CloudConfigInput = z.input<typeof cloudConfigSchema>

/** Validates a config object; the error names the bad key and why. */
export function parseCloudConfig (input: unknown): CloudConfig {
  return parseWith(cloudConfigSchema, input, configError)
}

/** Environment (IOT_CLOUD_NATS__SERVERS=...) then --set flags (later wins), validated. */
export function loadCloudConfig (opts: { env?: NodeJS.ProcessEnv, sets?: string[], base?: Record<string, unknown> }): CloudConfig {
  return loadLayered(cloudConfigSchema, { base: opts.base, env: opts.env, envPrefix: ENV_PREFIX, sets: opts.sets }, configError)
}

const configError = (message: string): CloudError => new CloudError('CLOUD_ERR_CONFIG', `invalid cloud config: ${message}`)
