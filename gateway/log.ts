// The one root logger of the gateway process; components take log.child({ component }).
import { createRootLogger, type Logger } from '../lib/log.ts'

export type { Logger }

/** Creates the root logger; credentials are redacted wherever they appear (lib/log.ts). */
export function createLogger (level: string, gatewayId: string): Logger {
  return createRootLogger(level, { gatewayId })
}
