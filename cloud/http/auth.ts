// The console's login: one operator account from config, its password kept only as an scrypt hash,
// always required (with no password configured, the composition hands in a generated one's hash:
// generated-password.ts),
// and stateless signed session tokens so that any number of console replicas with the same config
// accept each other's sessions (the signing key is derived from the credentials: changing the
// password logs everyone out). Failed logins are counted and slowed per client address.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { Counter, type Registry } from 'prom-client'
import type { CloudConfig } from '../config.ts'
import { CloudError } from '../errors.ts'
import { hashPassword, parseHash, scrypt, SCRYPT, verifyHash, type ParsedHash } from './password-hash.ts'

export { hashPassword, isPasswordHash } from './password-hash.ts'
import type { Logger } from '../log.ts'

// Failed-login slowdown: the first failure waits BASE, each further failure from the same address
// doubles it up to MAX; the count is forgotten after FORGET_MS without a failure.
const FAIL_DELAY_BASE_MS = 300
const FAIL_DELAY_MAX_MS = 5000
const FAIL_FORGET_MS = 15 * 60_000
// Bounded state: addresses with recent failures, and logged-out tokens until they expire.
// Overflow policy for both: the oldest entry is dropped.
const MAX_TRACKED_ADDRESSES = 10_000
const MAX_REVOKED = 10_000


export interface Session { user: string, expiresAtMs: number }

export type LoginResult = { ok: true, token: string, session: Session } | { ok: false, delayMs: number }

export class ConsoleAuth {
  readonly ttlMs: number
  private readonly revoked = new Map<string, number>()
  private readonly failures = new Map<string, { count: number, lastMs: number }>()
  private readonly logins: Counter<'result'>

  private constructor (
    /** The configured operator account (the login page offers it). */
    readonly user: string,
    private readonly hash: ParsedHash,
    private readonly sessionKey: Buffer,
    ttlMs: number,
    registry: Registry,
    private readonly log: Logger,
  ) {
    this.ttlMs = ttlMs
    this.logins = new Counter({ name: 'cloud_console_logins_total', help: 'Console login attempts, by result (ok, failed)', labelNames: ['result'], registers: [registry] })
  }

  /**
   * Builds the login from config. A clear `password` is hashed here and not kept. There is no
   * login-free mode: without credentials this refuses (the composition generates them first).
   */
  static async create (cfg: CloudConfig['console'], opts: { registry: Registry, log: Logger }): Promise<ConsoleAuth> {
    let hash: ParsedHash
    let keyMaterial: string
    if (cfg.passwordHash !== undefined) {
      const parsed = parseHash(cfg.passwordHash)
      if (!parsed) throw new CloudError('CLOUD_ERR_CONFIG', 'invalid cloud config: console.passwordHash: not an scrypt hash (scrypt$N$r$p$salt$hash); make one with `node --import tsx cloud/hash-password.ts`')
      hash = parsed
      keyMaterial = cfg.passwordHash
    } else if (cfg.password !== undefined) {
      hash = parseHash(await hashPassword(cfg.password))!
      // Derived without a random salt so that replicas given the same password agree on sessions.
      keyMaterial = (await scrypt(cfg.password, `iot-console-session:${cfg.user}`, 32, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p })).toString('base64url')
    } else {
      throw new CloudError('CLOUD_ERR_CONFIG', 'invalid cloud config: console.password or console.passwordHash is required (consoleCredentials() generates one)')
    }
    const sessionKey = createHmac('sha256', 'iot-console-session-key/v1').update(`${cfg.user}\n${keyMaterial}`).digest()
    return new ConsoleAuth(cfg.user, hash, sessionKey, cfg.sessionTtlMs, opts.registry, opts.log)
  }

  /** Checks credentials; a failure resolves only after the address's slowdown delay. */
  async login (user: string, password: string, address: string, now = Date.now()): Promise<LoginResult> {
    const r = await this.check(user, password, address, now)
    if (!r.ok) return r
    this.log.info({ user, address }, 'console login')
    const session = { user: this.user, expiresAtMs: now + this.ttlMs }
    return { ok: true, token: this.sign(session), session }
  }

  /**
   * Credentials sent with one request (HTTP Basic, for scripts): the same check, counting and
   * slowdown as a login, but no session is made and a success is logged at debug only.
   */
  async authenticate (user: string, password: string, address: string, now = Date.now()): Promise<boolean> {
    const r = await this.check(user, password, address, now)
    if (r.ok) this.log.debug({ user, address }, 'console request authenticated (basic)')
    return r.ok
  }

  private async check (user: string, password: string, address: string, now: number): Promise<{ ok: true } | { ok: false, delayMs: number }> {
    // The hash is checked even for a wrong user name, so timing does not tell which was wrong.
    const passwordOk = await verifyHash(this.hash, password)
    const userOk = user.length === this.user.length && timingSafeEqual(Buffer.from(user), Buffer.from(this.user))
    if (passwordOk && userOk) {
      this.failures.delete(address)
      this.logins.inc({ result: 'ok' })
      return { ok: true }
    }
    this.logins.inc({ result: 'failed' })
    const f = this.failures.get(address)
    const count = f && now - f.lastMs < FAIL_FORGET_MS ? f.count + 1 : 1
    this.failures.delete(address)
    this.failures.set(address, { count, lastMs: now })
    if (this.failures.size > MAX_TRACKED_ADDRESSES) this.failures.delete(this.failures.keys().next().value!)
    const delayMs = Math.min(FAIL_DELAY_MAX_MS, FAIL_DELAY_BASE_MS * 2 ** (count - 1))
    // Never the password: only who tried, from where, and how often.
    this.log.warn({ user, address, failures: count, delayMs }, 'console login failed')
    await new Promise((resolve) => setTimeout(resolve, delayMs))
    return { ok: false, delayMs }
  }

  /** The session a token carries, or null if it is forged, expired or logged out. */
  verify (token: string | undefined, now = Date.now()): Session | null {
    if (!token) return null
    const dot = token.lastIndexOf('.')
    if (dot <= 0) return null
    const body = token.slice(0, dot)
    const mac = Buffer.from(token.slice(dot + 1), 'base64url')
    const want = this.mac(body)
    if (mac.length !== want.length || !timingSafeEqual(mac, want)) return null
    let claims: { u?: unknown, e?: unknown, n?: unknown }
    try { claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) } catch { return null }
    if (typeof claims.u !== 'string' || typeof claims.e !== 'number' || typeof claims.n !== 'string') return null
    if (claims.e <= now || this.revoked.has(claims.n)) return null
    return { user: claims.u, expiresAtMs: claims.e }
  }

  /** Logs a token out on this replica (others accept it until it expires: sessions are stateless). */
  revoke (token: string | undefined, now = Date.now()): void {
    if (!token || !this.verify(token, now)) return
    const body = token.slice(0, token.lastIndexOf('.'))
    const claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as { e: number, n: string }
    for (const [n, exp] of this.revoked) if (exp <= now) this.revoked.delete(n)
    this.revoked.set(claims.n, claims.e)
    if (this.revoked.size > MAX_REVOKED) this.revoked.delete(this.revoked.keys().next().value!)
  }

  private sign (s: Session): string {
    const body = Buffer.from(JSON.stringify({ u: s.user, e: s.expiresAtMs, n: randomBytes(16).toString('base64url') })).toString('base64url')
    return `${body}.${this.mac(body).toString('base64url')}`
  }

  private mac (body: string): Buffer {
    return createHmac('sha256', this.sessionKey).update(body).digest()
  }
}
