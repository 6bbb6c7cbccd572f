// Fills a gateway data directory with a backlog, in this process and without any uplink: the
// gateway's own Outbox (same schema, encoding and group commit as ingest), fed in large bursts.
// The result is what an outage leaves behind: N telemetry events waiting to be replicated.
import { createLogger, parseConfig } from '../gateway/index.ts'
import { openDb } from '../gateway/store/db.ts'
import { createMetrics } from '../gateway/metrics.ts'
import { LANE_TELEMETRY, Outbox, ROW_OVERHEAD_BYTES, type IncomingEvent } from '../gateway/store/outbox.ts'

export interface FillOptions {
  events: number
  devices: number
  /** Events appended before waiting for their commit callbacks (bounded by the outbox queue). */
  burst: number
}

export interface FillResult {
  events: number
  devices: number
  /** Events per device, seq 1..perDevice (the last devices may hold one fewer). */
  perDevice: number[]
  ms: number
  eventsPerSec: number
  /** Bytes counted against the outbox budget (bodies + per-row overhead). */
  outboxBytes: number
  /** Mean stored body size: the encoded TelemetryEvent without its device_id (the row names the device by number). */
  meanEventBytes: number
}

export const deviceName = (i: number): string => `sensor-${String(i).padStart(4, '0')}`

/** Appends `events` realistic telemetry events round-robin over `devices`, then closes the database. */
export async function fillOutbox (dataDir: string, opts: FillOptions): Promise<FillResult> {
  const cfg = parseConfig({ dataDir, logLevel: 'silent', uplink: { servers: [] }, outbox: { maxPendingEvents: opts.burst + 1 } })
  const db = openDb(cfg.dataDir, cfg.outbox.durability)
  const outbox = new Outbox(db, cfg.outbox, createLogger('silent', 'bench-fill'), createMetrics({ defaultMetrics: false }))
  outbox.start()
  const t0 = performance.now()
  // Six hours of history at a steady rate, ending now: event time a little before ingest time.
  const now = Date.now()
  const spanMs = 6 * 3600_000
  let failed: Error | null = null
  try {
    for (let sent = 0; sent < opts.events && !failed;) {
      const n = Math.min(opts.burst, opts.events - sent)
      await new Promise<void>((resolve) => {
        let left = n
        const done = (err: Error | null): void => {
          if (err && !failed) failed = err
          if (--left === 0) resolve()
        }
        for (let k = 0; k < n; k++) {
          const i = sent + k
          const ingestTsMs = now - spanMs + Math.floor(i * spanMs / opts.events)
          const ev: IncomingEvent = {
            deviceId: deviceName(i % opts.devices),
            lane: LANE_TELEMETRY,
            eventTsMs: ingestTsMs - 40 - (i % 17),
            ingestTsMs,
            eventTsFromGateway: false,
            readings: [
              { name: 'temperature', value: 21.5 + Math.sin(i / 500) * 3 + (i % 7) / 100 },
              { name: 'humidity', value: 45.25 + (i % 13) / 10 },
              { name: 'battery', value: 3.71 - (i % 1000) / 100000 },
            ],
          }
          outbox.appendEvent(ev, (err) => done(err))
        }
      })
      sent += n
    }
    if (failed) throw failed
    const ms = performance.now() - t0
    const stats = outbox.stats()
    const perDevice = Array.from({ length: opts.devices }, (_, d) => Math.floor(opts.events / opts.devices) + (d < opts.events % opts.devices ? 1 : 0))
    return {
      events: stats.events,
      devices: opts.devices,
      perDevice,
      ms,
      eventsPerSec: stats.events / (ms / 1000),
      outboxBytes: stats.bytes,
      meanEventBytes: (stats.bytes - stats.events * ROW_OVERHEAD_BYTES) / Math.max(1, stats.events),
    }
  } finally {
    outbox.close()
    // The last connection's close checkpoints the WAL: gateway.db alone is the whole backlog.
    db.close()
  }
}
