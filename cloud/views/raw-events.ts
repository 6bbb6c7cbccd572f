// A device's raw events for a range of event time, read from the TELEMETRY stream (which keeps the
// replication batches for streamMaxAgeMs, 7 days by default): ephemeral consumers filtered to the
// gateway's subjects, starting at `from` (less the clock margin below) by stream time, reading to
// the stream's end as it was when the request began. A batch stored before `from` cannot hold an
// event of the range unless the event's clock ran ahead of the stream's by more than the margin.
//
// Every page scans the whole range (bounded by maxScanMessages), keeps the device's events in the
// range above the cursor `after` (a seq), de-duplicated by seq (a batch replicated twice), and
// answers the first `limit` in seq order, with the cursor of the next page: pages are exact and in
// seq order however the batches were interleaved (live before backlog after an outage).
import { AckPolicy, DeliverPolicy, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream'
import { STREAMS, v1 } from '../../proto/index.ts'
import { CloudError } from '../errors.ts'

/** One event as the raw history answers it. */
export interface RawEvent { seq: number, eventTsMs: number, ingestTsMs: number, readings: Record<string, number>, labels?: Record<string, string> }

export interface RawPage {
  gatewayId: string
  deviceId: string
  from: number
  to: number
  events: RawEvent[]
  /** Cursor of the next page (pass as `after`), or null when this page ends the range. */
  next: number | null
  /** Replication batches read for this page. */
  scannedBatches: number
}

export interface RawQuery { from: number, to: number, after?: number, limit: number }

export interface RawEventsOptions {
  /** Most replication batches one page may read; a range needing more is refused (narrow it). */
  maxScanMessages: number
  /** How far before `from` (stream time) the scan starts: device clocks ahead of the cloud's. */
  clockMarginMs: number
}

export const DEFAULT_RAW_OPTIONS: RawEventsOptions = { maxScanMessages: 20_000, clockMarginMs: 5 * 60_000 }

/** Most events one page (or one export) answers. */
export const MAX_RAW_LIMIT = 100_000

export class RawEvents {
  constructor (private readonly js: JetStreamClient, private readonly jsm: JetStreamManager, private readonly opts: RawEventsOptions = DEFAULT_RAW_OPTIONS) {}

  async page (gatewayId: string, deviceId: string, q: RawQuery): Promise<RawPage> {
    const after = q.after ?? 0
    const found = new Map<number, RawEvent>()
    const scannedBatches = await this.scan(gatewayId, q.from, (data) => {
      const batch = v1.ReplicationBatch.decode(data)
      for (const e of batch.events) {
        if (e.deviceId !== deviceId) continue
        const seq = Number(e.seq)
        const eventTsMs = Number(e.eventTsMs)
        if (seq <= after || eventTsMs < q.from || eventTsMs >= q.to || found.has(seq)) continue
        const readings: Record<string, number> = {}
        for (const r of e.readings ?? []) readings[r.name ?? ''] = r.value ?? 0
        const ev: RawEvent = { seq, eventTsMs, ingestTsMs: Number(e.ingestTsMs), readings }
        if (e.labels && Object.keys(e.labels).length > 0) ev.labels = { ...e.labels }
        found.set(seq, ev)
      }
      // Memory bounded by the page, not the range: only the lowest limit + 1 seqs can be answered.
      if (found.size > 2 * (q.limit + 1)) {
        const keep = [...found.keys()].sort((a, b) => a - b).slice(q.limit + 1)
        for (const seq of keep) found.delete(seq)
      }
    })
    const events = [...found.values()].sort((a, b) => a.seq - b.seq)
    const more = events.length > q.limit
    if (more) events.length = q.limit
    return { gatewayId, deviceId, from: q.from, to: q.to, events, next: more ? events[events.length - 1].seq : null, scannedBatches }
  }

  /** Reads the gateway's batches stored since from - margin up to the stream's end; returns how many. */
  private async scan (gatewayId: string, from: number, onBatch: (data: Uint8Array) => void): Promise<number> {
    const start = new Date(Math.max(0, from - this.opts.clockMarginMs)).toISOString()
    // The bare subject and its partitioned form (a server with the partition mapping stores the
    // latter): one filter each, as nats-server 2.9 takes one filter subject per consumer.
    let read = 0
    for (const filter of [`iot.${gatewayId}.telemetry`, `iot.${gatewayId}.telemetry.*`]) read += await this.scanFilter(filter, start, read, onBatch)
    return read
  }

  private async scanFilter (filter: string, start: string, readBefore: number, onBatch: (data: Uint8Array) => void): Promise<number> {
    const stream = STREAMS.telemetry.name
    const ci = await this.jsm.consumers.add(stream, {
      filter_subject: filter, deliver_policy: DeliverPolicy.StartTime, opt_start_time: start,
      ack_policy: AckPolicy.None, inactive_threshold: 30_000_000_000, mem_storage: true,
    })
    try {
      // What the stream holds of the subject since `start` when the request began: batches stored
      // later (live data) are not waited for.
      let pending = ci.num_pending
      if (readBefore + pending > this.opts.maxScanMessages) {
        throw new CloudError('CLOUD_ERR_BAD_REQUEST', `range too long for raw history: ${readBefore + pending} replication batches to read (at most ${this.opts.maxScanMessages}); narrow from/to or use a rollup resolution`)
      }
      const consumer = await this.js.consumers.get(stream, ci.name)
      let read = 0
      while (pending > 0) {
        let got = 0
        for await (const m of await consumer.fetch({ max_messages: Math.min(256, pending), expires: 5000 })) {
          got++
          read++
          onBatch(m.data)
          if (--pending === 0) break
        }
        if (got === 0) break
      }
      return read
    } finally {
      await this.jsm.consumers.delete(stream, ci.name).catch(() => {})
    }
  }
}
