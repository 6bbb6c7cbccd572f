// Whether a module is the script node was started with (`node x.js`, `node --import tsx x.ts`).
// By real path: node resolves symlinks for the module's URL but not for argv[1], so a plain compare
// is false when the script is reached through a symlink (/opt/app -> a release directory), and
// the script would silently do nothing.
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

export function isMain (moduleUrl: string): boolean {
  const script = process.argv[1]
  if (!script) return false
  try {
    return realpathSync(fileURLToPath(moduleUrl)) === realpathSync(script)
  } catch {
    return false
  }
}
