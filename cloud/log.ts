// The one root logger of a cloud process; components take log.child({ component }).
import { createRootLogger, type Logger } from '../lib/log.ts'

export type { Logger }

/** Creates the root logger; credentials are redacted wherever they appear (lib/log.ts). */
export function createLogger (level: string, base: Record<string, unknown> = {}): Logger {
  return createRootLogger(level, { service: 'cloud', ...base })
}
