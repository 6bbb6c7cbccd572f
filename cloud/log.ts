// The one root logger of a cloud process; components take log.child({ component }).
import { pino, type Logger } from 'pino'

export type { Logger }

/** Creates the root logger; credentials are redacted wherever they appear. */
export function createLogger (level: string, base: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { service: 'cloud', ...base },
    redact: { paths: ['pass', 'token', '*.pass', '*.token', 'creds', '*.creds', 'config.nats.pass', 'config.nats.token'], censor: '[redacted]' },
  })
}
