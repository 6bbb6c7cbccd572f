// GC pauses of a benchmark's gateway child, measured from outside the product: gc-trace-preload.mjs
// is preloaded into the child (node --import, see gcTraceWrapper) and appends every GC pause its
// PerformanceObserver reports to a file. The bench reads the file and keeps the pauses inside its
// own measured window, so no gateway code and no metric changes just to be measured.
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ENV = 'BENCH_GC_TRACE_FILE'
/**
 * Extra node flags for the gateway child, to look into a scenario: e.g. `--cpu-prof --cpu-prof-dir=DIR`
 * (a V8 CPU profile per thread) or `--max-semi-space-size=32` (a GC setting to compare).
 */
const FLAGS_ENV = 'BENCH_GATEWAY_NODE_FLAGS'
const PRELOAD = fileURLToPath(new URL('./gc-trace-preload.mjs', import.meta.url))

export interface GcStats {
  /** Pauses that started inside the window. */
  count: number
  /** Sum, p99 and max of their durations, ms (null with no pause). */
  totalMs: number
  p99Ms: number | null
  maxMs: number | null
}

/**
 * The `wrapper` for spawnGateway that preloads gc-trace-preload.mjs into the child with its trace file
 * in dataDir; returns the wrapper and the file to read with gcStats().
 */
export function gcTraceWrapper (dataDir: string): { wrapper: string[], file: string } {
  const file = join(dataDir, 'gc-trace.txt')
  const flags = (process.env[FLAGS_ENV] ?? '').split(/\s+/).filter((f) => f !== '').map((f) => ` ${JSON.stringify(f)}`).join('')
  // $1 is node, the rest its arguments (spawnGateway appends them); the preload goes first.
  return { wrapper: ['env', `${ENV}=${file}`, 'bash', '-c', `exec "$1" --import "$0"${flags} "\${@:2}"`, PRELOAD], file }
}

/** GC pauses recorded in `file` that started between fromMs and toMs (epoch ms). */
export function gcStats (file: string, fromMs: number, toMs: number): GcStats {
  const pauses = existsSync(file)
    ? readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map((l) => l.split(' ').map(Number))
      .filter(([t]) => t >= fromMs && t <= toMs).map(([, d]) => d).sort((a, b) => a - b)
    : []
  const p99 = pauses.length === 0 ? null : pauses[Math.min(pauses.length - 1, Math.ceil(pauses.length * 0.99) - 1)]
  return { count: pauses.length, totalMs: pauses.reduce((s, d) => s + d, 0), p99Ms: p99, maxMs: pauses.at(-1) ?? null }
}

/** "count / p99 / max ms" for a table cell. */
export function formatGc (gc: GcStats | null): string {
  if (gc === null) return '-'
  return `${gc.count} / ${gc.p99Ms?.toFixed(1) ?? '-'} / ${gc.maxMs?.toFixed(1) ?? '-'}`
}
