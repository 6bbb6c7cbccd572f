// Reads a gateway's Prometheus /metrics in one request: samples summed over label sets, and the
// cumulative buckets of histograms, from which quantiles are derived the way Prometheus does.

export interface Scrape {
  /** Sum over all label sets of each sample name (histogram parts keep their _bucket/_sum/_count names). */
  values: Map<string, number>
  /** Each series as printed, name{labels} -> value. */
  series: Map<string, number>
  /** Histogram name -> cumulative count per upper bound (le), ascending, +Inf last. */
  buckets: Map<string, Array<{ le: number, count: number }>>
}

/** One GET of /metrics on 127.0.0.1:httpPort, parsed. */
export async function scrapeAll (httpPort: number): Promise<Scrape> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text()
  return parseMetrics(text)
}

export function parseMetrics (text: string): Scrape {
  const values = new Map<string, number>()
  const series = new Map<string, number>()
  const byLe = new Map<string, Map<number, number>>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const space = line.lastIndexOf(' ')
    const brace = line.indexOf('{')
    const name = brace >= 0 && brace < space ? line.slice(0, brace) : line.slice(0, space)
    const value = Number(line.slice(space + 1))
    values.set(name, (values.get(name) ?? 0) + value)
    series.set(line.slice(0, space), value)
    if (name.endsWith('_bucket')) {
      const le = /le="([^"]+)"/.exec(line)?.[1]
      if (le === undefined) continue
      const hist = name.slice(0, -'_bucket'.length)
      const m = byLe.get(hist) ?? new Map<number, number>()
      const bound = le === '+Inf' ? Infinity : Number(le)
      m.set(bound, (m.get(bound) ?? 0) + value)
      byLe.set(hist, m)
    }
  }
  const buckets = new Map<string, Array<{ le: number, count: number }>>()
  for (const [hist, m] of byLe) buckets.set(hist, [...m].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le))
  return { values, series, buckets }
}

/** Bucket counts observed between two scrapes of the same histogram. */
export function bucketDelta (before: Scrape, after: Scrape, hist: string): Array<{ le: number, count: number }> {
  const a = after.buckets.get(hist) ?? []
  const b = new Map((before.buckets.get(hist) ?? []).map((x) => [x.le, x.count]))
  return a.map((x) => ({ le: x.le, count: x.count - (b.get(x.le) ?? 0) }))
}

/**
 * The q-quantile (0..1) of cumulative buckets, interpolated linearly inside its bucket like
 * Prometheus' histogram_quantile (the first bucket starts at 0; a quantile in +Inf reports the
 * highest finite bound). Null when the histogram is empty.
 */
export function bucketQuantile (buckets: Array<{ le: number, count: number }>, q: number): number | null {
  const total = buckets.length > 0 ? buckets[buckets.length - 1].count : 0
  if (total <= 0) return null
  const rank = q * total
  let prevLe = 0
  let prevCount = 0
  for (const b of buckets) {
    if (b.count >= rank) {
      if (b.le === Infinity) return prevLe
      const inBucket = b.count - prevCount
      return inBucket > 0 ? prevLe + (b.le - prevLe) * (rank - prevCount) / inBucket : b.le
    }
    prevLe = b.le
    prevCount = b.count
  }
  return prevLe
}
