// The logger factory of every process: pino JSON lines, pino's standard `err` serializer (code and
// cause survive), and one redaction list, so no credential is logged by either process.
import { pino, type DestinationStream, type Logger } from 'pino'

export type { Logger }

// Every key that can hold a credential, at the top level and one level down (config sections,
// connection options), plus the config paths that nest deeper.
const SECRET_KEYS = ['password', 'passwordHash', 'secret', 'pass', 'token', 'credentials', 'creds', 'nkey', 'seed', 'authorization', 'cookie']
export const REDACT_PATHS = [
  ...SECRET_KEYS,
  ...SECRET_KEYS.map((k) => `*.${k}`),
  'config.uplink.pass', 'config.uplink.token', 'config.nats.pass', 'config.nats.token', 'config.console.password', 'config.console.passwordHash',
  'req.headers.authorization', 'req.headers.cookie',
]

/** Creates a process's root logger with `base` fields on every line; components take log.child({ component }). */
export function createRootLogger (level: string, base: Record<string, unknown>, destination?: DestinationStream): Logger {
  const options = { level, base, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }
  return destination ? pino(options, destination) : pino(options)
}
