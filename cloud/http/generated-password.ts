// The console's generated password: with neither console.password nor console.passwordHash set, the
// first start makes a random password, shows it once and keeps only its scrypt hash in
// console.stateDir, so that a restart keeps the same password and shows nothing. "First start" is
// "no stored hash yet": delete the file to get a new password. The password is never logged again
// and the hash never.
import { randomBytes } from 'node:crypto'
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import type { CloudConfig } from '../config.ts'
import { CloudError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { hashPassword, isPasswordHash } from './auth.ts'

/** The file in console.stateDir that holds the generated password's hash. */
export const PASSWORD_HASH_FILE = 'console-password.hash'

type ConsoleConfig = CloudConfig['console']

const stateError = (message: string, cause?: unknown): CloudError =>
  new CloudError('CLOUD_ERR_CONFIG', `invalid cloud config: console.stateDir: ${message}`, { cause })

/** The stored hash, or null when there is none yet. */
function readStored (file: string): string | null {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw stateError(`cannot read ${file}: ${(err as Error).message}`, err)
  }
  const hash = text.trim()
  if (!isPasswordHash(hash)) throw stateError(`${file} does not hold an scrypt hash; delete it to generate a new console password`)
  return hash
}

/** Creates the file only if it does not exist (another process may be starting beside us); false if it did. */
function writeNew (file: string, hash: string): boolean {
  let fd: number
  try {
    fd = openSync(file, 'wx', 0o600)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false
    throw stateError(`cannot write ${file}: ${(err as Error).message}`, err)
  }
  try {
    writeSync(fd, `${hash}\n`)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  return true
}

/** Shows the password once: at warn level, or on stderr when warnings are not logged (it would be lost). */
function announce (log: Logger, user: string, password: string, file: string): void {
  const line = `console password for user ${user}: ${password} (shown once; set console.password or console.passwordHash to choose your own)`
  if (log.isLevelEnabled('warn')) log.warn({ user, file }, line)
  else process.stderr.write(`${line}\n`)
}

/**
 * The console credentials to start with: the configured ones, or else the generated password's
 * stored hash (made, stored 0600 and shown once when there is none yet).
 */
export async function consoleCredentials (cfg: ConsoleConfig, log: Logger): Promise<ConsoleConfig> {
  if (cfg.password !== undefined || cfg.passwordHash !== undefined) return cfg
  const file = join(cfg.stateDir, PASSWORD_HASH_FILE)
  const stored = readStored(file)
  if (stored !== null) return { ...cfg, passwordHash: stored }
  try {
    mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 })
  } catch (err) {
    throw stateError(`cannot create ${cfg.stateDir}: ${(err as Error).message}`, err)
  }
  const password = randomBytes(18).toString('base64url')
  const hash = await hashPassword(password)
  if (!writeNew(file, hash)) {
    // Another process stored one first: its password is the one shown (by it), not ours.
    const theirs = readStored(file)
    if (theirs === null) throw stateError(`${file} vanished while it was being created; start again`)
    return { ...cfg, passwordHash: theirs }
  }
  announce(log, cfg.user, password, file)
  return { ...cfg, passwordHash: hash }
}
