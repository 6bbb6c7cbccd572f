// Console passwords as scrypt hashes: `scrypt$N$r$p$<salt>$<hash>` (base64url), the format of
// console.passwordHash; made by hashPassword (and `cloud/hash-password.ts`), checked by verifyHash.
import { randomBytes, scrypt as scryptCb, timingSafeEqual, type BinaryLike, type ScryptOptions } from 'node:crypto'

export const scrypt = (password: BinaryLike, salt: BinaryLike, keylen: number, opts: ScryptOptions): Promise<Buffer> =>
  new Promise((resolve, reject) => scryptCb(password, salt, keylen, opts, (err, key) => err ? reject(err) : resolve(key)))

// scrypt cost (interactive-login strength: ~50 ms and 16 MB per check on this machine kind).
export const SCRYPT = { N: 16384, r: 8, p: 1, keylen: 32 }
const HASH_PREFIX = 'scrypt'

/** Hashes a password as `scrypt$N$r$p$<salt>$<hash>` (base64url), the format of console.passwordHash. */
export async function hashPassword (password: string): Promise<string> {
  const salt = randomBytes(16)
  const key = await scrypt(password, salt, SCRYPT.keylen, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p, maxmem: 64 * 1024 * 1024 })
  return [HASH_PREFIX, SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString('base64url'), key.toString('base64url')].join('$')
}

export interface ParsedHash { N: number, r: number, p: number, salt: Buffer, key: Buffer }

export function parseHash (hash: string): ParsedHash | null {
  const parts = hash.split('$')
  if (parts.length !== 6 || parts[0] !== HASH_PREFIX) return null
  const [N, r, p] = parts.slice(1, 4).map(Number)
  const salt = Buffer.from(parts[4], 'base64url')
  const key = Buffer.from(parts[5], 'base64url')
  if (![N, r, p].every((x) => Number.isInteger(x) && x > 0) || (N & (N - 1)) !== 0 || salt.length < 8 || key.length < 16) return null
  return { N, r, p, salt, key }
}

/** Whether `hash` has the form of console.passwordHash (what hashPassword makes). */
export const isPasswordHash = (hash: string): boolean => parseHash(hash) !== null

export async function verifyHash (h: ParsedHash, password: string): Promise<boolean> {
  const key = await scrypt(password, h.salt, h.key.length, { N: h.N, r: h.r, p: h.p, maxmem: 256 * h.N * h.r + 1024 * 1024 })
  return timingSafeEqual(key, h.key)
}
