// Outbox footprint and restart: N buffered events (full: 1M and 10M; quick: 200k, projected) — bytes on disk per event,
// time for a gateway to start on that outbox (in-process: opening the database and loading its
// state, without Node/tsx start-up), and the gateway child's RSS with an empty versus a full outbox
// (the backlog lives on disk, so memory must not grow with it). Targets (DESIGN): 10M events in
// <= 1 GB; restart with 10M buffered ready in <= 2 s.
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { Gateway, createLogger, parseConfig } from '../gateway/index.ts'
import { spawnGateway, tempDir } from '../devkit/index.ts'
import { stopGateway } from './children.ts'
import { scrapeAll } from './metrics-scrape.ts'
import { fillOutbox } from './outbox-fill.ts'
import { DEPLOYED_GATEWAY, type BenchOptions, type BenchReport } from './bench-types.ts'

const TARGET_BYTES_PER_10M = 1e9
const TARGET_RESTART_MS = 2000
const RSS = 'gateway_process_resident_memory_bytes'

function dbBytes (dataDir: string): number {
  let total = 0
  for (const f of ['gateway.db', 'gateway.db-wal']) {
    try { total += statSync(join(dataDir, f)).size } catch { /* absent */ }
  }
  return total
}

async function startMs (dataDir: string): Promise<number> {
  const cfg = parseConfig({ dataDir, logLevel: 'silent', mqtt: { host: '127.0.0.1', port: 0, wsPort: null }, http: { port: null } })
  const gw = new Gateway(cfg, createLogger('silent', 'bench'), { defaultMetrics: false })
  const t0 = performance.now()
  await gw.start()
  const ms = performance.now() - t0
  await gw.close()
  return ms
}

async function childRss (dataDir: string): Promise<number | null> {
  const gw = await spawnGateway(dataDir, ['logLevel=warn'], DEPLOYED_GATEWAY)
  try {
    // Let start-up garbage settle, then read what the process holds.
    await new Promise((resolve) => setTimeout(resolve, 1500))
    return (await scrapeAll(gw.ports.http!)).values.get(RSS) ?? null
  } finally {
    await stopGateway(gw)
  }
}

interface SizeResult { events: number, fillEventsPerSec: number, fileBytes: number, bytesPerEvent: number, projected10MBytes: number, meanEventBytes: number, restartMs: number, rssFullBytes: number | null }

/** Fills a fresh outbox with `events`, then measures its size, the restart time and a gateway child's RSS on it. */
async function measureSize (events: number): Promise<SizeResult & { filled: number }> {
  const full = tempDir('bench-footprint-')
  try {
    process.stderr.write(`footprint: filling an outbox with ${events.toLocaleString('en-US')} events...\n`)
    const fill = await fillOutbox(full.dir, { events, devices: 1000, burst: 20000 })
    const bytes = dbBytes(full.dir)
    const restartMs = await startMs(full.dir)
    const rssFullBytes = await childRss(full.dir)
    const bytesPerEvent = bytes / events
    return { events, filled: fill.events, fillEventsPerSec: fill.eventsPerSec, fileBytes: bytes, bytesPerEvent, projected10MBytes: bytesPerEvent * 10_000_000, meanEventBytes: fill.meanEventBytes, restartMs, rssFullBytes }
  } finally {
    full.cleanup()
  }
}

export async function footprint (opts: BenchOptions): Promise<BenchReport> {
  // Full: the two backlog sizes the issue asks about; quick: a small one, projected to 10M.
  const sizes = opts.quick ? [200_000] : [1_000_000, 10_000_000]
  const empty = tempDir('bench-footprint-empty-')
  try {
    const rssEmpty = await childRss(empty.dir)
    const measured: Array<SizeResult & { filled: number }> = []
    for (const events of sizes) measured.push(await measureSize(events))
    const largest = measured[measured.length - 1]
    const mb = (b: number | null): string => b === null ? '-' : `${(b / 1e6).toFixed(0)} MB`
    return {
      settings: { sizes, devices: 1000, readingsPerEvent: 3 },
      results: measured.map(({ filled: _filled, ...r }) => ({ ...r, rssEmptyBytes: rssEmpty })),
      ratios: [{ name: 'projected 10M bytes / 1 GB target', value: largest.projected10MBytes / TARGET_BYTES_PER_10M }, { name: 'restart ms / 2 s target', value: largest.restartMs / TARGET_RESTART_MS },
        ...measured.map((r) => ({ name: `RSS with ${r.events} buffered / RSS empty`, value: rssEmpty && r.rssFullBytes ? r.rssFullBytes / rssEmpty : null }))],
      table: {
        columns: ['buffered events', 'file size', 'bytes/event', '10M projected', 'start (in-process)', 'RSS empty', 'RSS full'],
        rows: measured.map((r) => [r.events.toLocaleString('en-US'), mb(r.fileBytes), r.bytesPerEvent.toFixed(1), `${(r.projected10MBytes / 1e9).toFixed(2)} GB (target ≤ 1 GB)`, `${r.restartMs.toFixed(0)} ms (target ≤ 2000)`, mb(rssEmpty), mb(r.rssFullBytes)]),
      },
      notes: ['bytes include the WAL; events carry 3 readings, a device id of 11 characters (stored once per device: rows name it by number) and two timestamps',
        'start = Gateway.start() on the full outbox: opening SQLite, loading counters and totals, listeners; Node and tsx start-up come on top',
        'RSS = the gateway child (started as in production) 1.5 s after start, empty outbox versus the filled one: memory must stay flat as the backlog grows'],
      failures: measured.filter((r) => r.filled !== r.events).map((r) => `filled ${r.filled} of ${r.events}`),
    }
  } finally {
    empty.cleanup()
  }
}
