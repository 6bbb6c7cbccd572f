// How to start one of the project's scripts as a child process, the way this process itself runs:
// from the sources through the tsx loader (`node --import tsx gateway/main.ts`: the demo, the tests,
// `npm run gateway`) or compiled by `npm run build` (`node dist/gateway/main.js`: production). Where
// this module runs from tells which: dist/lib/node-entry.js is compiled, lib/node-entry.ts is not.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export type Runtime = 'tsx' | 'compiled'

const HERE = fileURLToPath(new URL('..', import.meta.url))

/** How this process runs. */
export const RUNTIME: Runtime = import.meta.url.endsWith('.js') ? 'compiled' : 'tsx'

/** The repository root (sources, node_modules) and the build's root (dist/ in it). */
export const SOURCE_ROOT = RUNTIME === 'compiled' ? join(HERE, '..') : HERE
export const BUILD_ROOT = RUNTIME === 'compiled' ? HERE : join(HERE, 'dist')

/**
 * The node arguments that run `script`, a path of the source tree (`gateway/main.ts`), in `runtime`
 * (default: this process's own). Compiled: throws when `npm run build` has not made it.
 */
export function nodeArgsFor (script: string, runtime: Runtime = RUNTIME): string[] {
  if (runtime === 'tsx') return ['--import', 'tsx', join(SOURCE_ROOT, script)]
  const js = join(BUILD_ROOT, script.replace(/\.ts$/, '.js'))
  if (!existsSync(js)) throw new Error(`${js} is missing: run \`npm run build\` first`)
  return [js]
}
