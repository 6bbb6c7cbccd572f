// What every benchmark takes and hands back; run.ts prints the table and stores the rest as JSON.

export interface BenchOptions {
  /** Short measurements (a few seconds each) for a smoke run; numbers are noisier. */
  quick: boolean
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
