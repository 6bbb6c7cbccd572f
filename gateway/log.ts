// The one root logger of the gateway process; components take log.child({ component }).
import { pino, type Logger } from 'pino'

export type { Logger }

/** Creates the root logger; credentials are redacted wherever they appear. */
export function createLogger (level: string, gatewayId: string): Logger {
  return pino({
    level,
    base: { gatewayId },
    redact: { paths: ['password', 'secret', 'pass', 'token', '*.password', '*.secret', '*.pass', '*.token', 'credentials', '*.credentials', 'config.uplink.pass', 'config.uplink.token'], censor: '[redacted]' },
  })
}
