// The demo's live table. Each gateway row is read from that gateway's own operations endpoint
// (/readyz for the link and the backlog, /metrics for the oldest unsent age), never from its
// heartbeats: heartbeats travel over the uplink, so during an outage they would show the last good
// state. Beside it, what the cloud believes (online, or offline since when), from its API.
import { scrapeMetrics } from '../devkit/index.ts'
import type { DemoGateway } from './demo-fleet.ts'

/** What one gateway says about itself, or null when its endpoint does not answer. */
export interface EdgeStatus { link: string, stalled: boolean, backlogEvents: number, backlogBytes: number, ackedEvents: number, oldestUnsentS: number }

/** What the cloud says of one gateway. */
export interface CloudGateway { gatewayId: string, online: boolean, lastSeenMs: number }

interface ReadyBody { outboxEvents?: number, outboxBytes?: number, uplink?: { link?: string, stalled?: boolean, ackedEvents?: number } }

export async function readEdge (g: DemoGateway): Promise<EdgeStatus | null> {
  try {
    const r = await fetch(`http://127.0.0.1:${g.http}/readyz`, { signal: AbortSignal.timeout(2000) })
    const b = await r.json() as ReadyBody
    const m = await scrapeMetrics(g.http, ['gateway_outbox_oldest_age_seconds'])
    return {
      link: b.uplink?.link ?? '?',
      stalled: b.uplink?.stalled ?? false,
      backlogEvents: b.outboxEvents ?? 0,
      backlogBytes: b.outboxBytes ?? 0,
      ackedEvents: b.uplink?.ackedEvents ?? 0,
      oldestUnsentS: m?.get('gateway_outbox_oldest_age_seconds') ?? 0,
    }
  } catch {
    return null
  }
}

/** Rates need the previous reading: keeps one per gateway. */
export class DemoTable {
  private readonly prev = new Map<string, { atMs: number, acked: number, uplinked: number }>()

  /**
   * The table for one tick, as text. `phase` heads it (e.g. "OUTAGE: uplinks cut"). Rows have a fixed
   * shape ("site-a  link up  backlog 12 ...") that people read and the demo test parses.
   */
  render (t: number, phase: string, gateways: DemoGateway[], edge: Array<EdgeStatus | null>, cloud: Map<string, CloudGateway> | null, cloudReceived: number): string {
    const now = Date.now()
    const rows = gateways.map((g, i) => {
      const e = edge[i]
      const acked = g.devices.reduce((a, d) => a + d.counters.acked, 0)
      const p = this.prev.get(g.id)
      const dt = p ? (now - p.atMs) / 1000 : 0
      const ingest = p && dt > 0 ? (acked - p.acked) / dt : 0
      const uplink = p && e && dt > 0 ? Math.max(0, e.ackedEvents - p.uplinked) / dt : 0
      this.prev.set(g.id, { atMs: now, acked, uplinked: e?.ackedEvents ?? p?.uplinked ?? 0 })
      const c = cloud?.get(g.id)
      const seen = c === undefined ? (cloud ? 'not seen yet' : 'API down') : c.online ? 'online' : `offline since ${new Date(c.lastSeenMs).toLocaleTimeString()}`
      const edgeCols = e === null
        ? 'link ?        (no answer from the gateway)'
        : `link ${(e.stalled ? 'stalled' : e.link).padEnd(8)} backlog ${String(e.backlogEvents).padStart(6)}  oldest unsent ${e.oldestUnsentS.toFixed(1).padStart(5)}s  uplink ${uplink.toFixed(0).padStart(5)}/s`
      return `${g.id.padEnd(8)} ${edgeCols}  ingest ${ingest.toFixed(0).padStart(4)}/s  acked ${String(acked).padStart(6)}  cloud: ${seen}`
    })
    return `[${(t / 1000).toFixed(0).padStart(4)}s] ${phase} · cloud received ${cloudReceived} events\n  ${rows.join('\n  ')}`
  }
}
