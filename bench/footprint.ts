// Outbox footprint and restart: N buffered events (quick 1M, full 10M) — bytes on disk per event,
// time for a gateway to start on that outbox (in-process: opening the database and loading its
// state, without Node/tsx start-up), and the gateway child's RSS with an empty versus a full outbox
// (the backlog lives on disk, so memory must not grow with it). Targets (DESIGN): 10M events in
// <= 1 GB; restart with 10M buffered ready in <= 2 s.
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { Gateway, createLogger, parseConfig } from '../gateway/index.ts'
import { spawnGateway, tempDir } from '../test/harness/gateway.ts'
import { stopGateway } from './children.ts'
import { scrapeAll } from './metrics-scrape.ts'
import { fillOutbox } from './outbox-fill.ts'
import type { BenchOptions, BenchReport } from './run.ts'

const TARGET_BYTES_PER_10M = 1e9
const TARGET_RESTART_MS = 2000
const RSS = 'gateway_process_process_resident_memory_bytes'

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
  const gw = await spawnGateway(dataDir, ['logLevel=warn'])
  try {
    // Let start-up garbage settle, then read what the process holds.
    await new Promise((resolve) => setTimeout(resolve, 1500))
    return (await scrapeAll(gw.ports.http!)).values.get(RSS) ?? null
  } finally {
    await stopGateway(gw)
  }
}

export async function footprint (opts: BenchOptions): Promise<BenchReport> {
  const events = opts.quick ? 1_000_000 : 10_000_000
  const empty = tempDir('bench-footprint-empty-')
  const full = tempDir('bench-footprint-')
  try {
    const rssEmpty = await childRss(empty.dir)
    const fill = await fillOutbox(full.dir, { events, devices: 1000, burst: 20000 })
    const bytes = dbBytes(full.dir)
    const restart = await startMs(full.dir)
    const rssFull = await childRss(full.dir)
    const bytesPerEvent = bytes / events
    const projected10M = bytesPerEvent * 10_000_000
    const mb = (b: number | null): string => b === null ? '-' : `${(b / 1e6).toFixed(0)} MB`
    return {
      settings: { events, devices: 1000, readingsPerEvent: 3 },
      results: [{ events, fillEventsPerSec: fill.eventsPerSec, fileBytes: bytes, bytesPerEvent, projected10MBytes: projected10M, meanEventBytes: fill.meanEventBytes, restartMs: restart, rssEmptyBytes: rssEmpty, rssFullBytes: rssFull }],
      ratios: [{ name: 'projected 10M bytes / 1 GB target', value: projected10M / TARGET_BYTES_PER_10M }, { name: 'restart ms / 2 s target', value: restart / TARGET_RESTART_MS }, { name: 'RSS full / RSS empty', value: rssEmpty && rssFull ? rssFull / rssEmpty : null }],
      table: {
        columns: ['buffered events', 'file size', 'bytes/event', '10M projected', 'start (in-process)', 'RSS empty', 'RSS full'],
        rows: [[events.toLocaleString('en-US'), mb(bytes), bytesPerEvent.toFixed(1), `${(projected10M / 1e9).toFixed(2)} GB (target ≤ 1 GB)`, `${restart.toFixed(0)} ms (target ≤ 2000)`, mb(rssEmpty), mb(rssFull)]],
      },
      notes: ['bytes include the WAL; events carry 3 readings, a device id of 11 characters and two timestamps',
        'start = Gateway.start() on the full outbox: opening SQLite, loading counters and totals, listeners; Node and tsx start-up come on top'],
      failures: fill.events !== events ? [`filled ${fill.events} of ${events}`] : [],
    }
  } finally {
    empty.cleanup()
    full.cleanup()
  }
}
