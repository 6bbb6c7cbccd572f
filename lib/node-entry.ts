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
 * V8 flags the gateway is started with; V8 reads them at start-up only, so they are on its command
 * line everywhere it is started (here, package.json's `gateway` script, the systemd unit, the
 * README), and gateway/main.ts warns when they are missing. A young generation of at least 8 MB:
 * the gateway sets --optimize-for-size (gateway/main.ts), which otherwise keeps it at 1 MB, and at
 * 5k events/s a scavenge then ran every 25-50 ms, setting the decision latency's p99.
 */
export const GATEWAY_NODE_FLAGS: readonly string[] = ['--min-semi-space-size=8']

/** Node flags a script of the source tree is started with. */
const NODE_FLAGS: Record<string, readonly string[]> = { 'gateway/main.ts': GATEWAY_NODE_FLAGS }

/**
 * The node arguments that run `script`, a path of the source tree (`gateway/main.ts`), in `runtime`
 * (default: this process's own). Compiled: throws when `npm run build` has not made it.
 */
export function nodeArgsFor (script: string, runtime: Runtime = RUNTIME): string[] {
  const flags = NODE_FLAGS[script] ?? []
  if (runtime === 'tsx') return [...flags, '--import', 'tsx', join(SOURCE_ROOT, script)]
  const js = join(BUILD_ROOT, script.replace(/\.ts$/, '.js'))
  if (!existsSync(js)) throw new Error(`${js} is missing: run \`npm run build\` first`)
  return [...flags, js]
}
