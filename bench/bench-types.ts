// What every benchmark takes and hands back; run.ts prints the table and stores the rest as JSON.

export interface BenchOptions {
  /** Short measurements (a few seconds each) for a smoke run; numbers are noisier. */
  quick: boolean
  /** `--scenarios a,b`: only these of a benchmark's scenarios (decide), to look into one; default all. */
  scenarios?: string[]
}

/** What a benchmark hands back: run.ts prints the table and stores the rest as JSON. */
export interface BenchReport {
  settings: Record<string, unknown>
  results: unknown[]
  /** Target ÷ peer, as plain numbers. */
  ratios: unknown[]
  table: { columns: string[], rows: string[][] }
  notes: string[]
  /** Anything that makes the figures untrustworthy (lost acks, disconnects, errors). */
  failures: string[]
}

export type Bench = (opts: BenchOptions) => Promise<BenchReport>

/**
 * How the benchmarks start a gateway: as deployed, the build of `npm run build` (`node
 * dist/gateway/main.js`, as the systemd unit runs it), not the sources through tsx. run.ts builds
 * first, so dist/ is the checkout's code. (memory measures both runtimes on purpose.)
 * BENCH_GATEWAY_RUNTIME=tsx runs the sources instead, to compare with a checkout older than the build.
 */
export const DEPLOYED_GATEWAY: { runtime: 'compiled' | 'tsx' } = { runtime: process.env.BENCH_GATEWAY_RUNTIME === 'tsx' ? 'tsx' : 'compiled' }
