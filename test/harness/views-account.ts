// The views' side of an accounting check: waits until every device's document counts all of its
// acknowledged events, then asserts, per device, received == acknowledged, highest seq ==
// acknowledged (seqs 1..n, none skipped) and no open gap. Returns the duplicates the views counted
// (redeliveries: the stream's own check, by identity, is devkit's assertExactlyOnce).
import assert from 'node:assert/strict'
import type { FleetViews } from '../../cloud/views/views.ts'
import { waitFor } from '../../devkit/index.ts'

/** gateway -> device -> the `n` of every acknowledged reading. */
export type Acked = Map<string, Map<string, Set<number>>>

export async function assertViewsAccount (views: FleetViews, acked: Acked, timeoutMs = 60000): Promise<{ duplicates: number }> {
  const byKey = await waitFor(async () => {
    const a = await views.accounting()
    const m = new Map(a.devices.map((d) => [`${d.gatewayId}/${d.deviceId}`, d]))
    for (const [gw, devices] of acked) for (const [dev, set] of devices) if (m.get(`${gw}/${dev}`)?.received !== set.size) return null
    return m
  }, 'the views to account for every acknowledged event', timeoutMs, 200)
  let duplicates = 0
  for (const [gw, devices] of acked) {
    for (const [dev, set] of devices) {
      const d = byKey.get(`${gw}/${dev}`)!
      assert.equal(d.received, set.size, `${gw}/${dev}: received`)
      assert.equal(d.highestSeq, set.size, `${gw}/${dev}: highest seq`)
      assert.equal(d.gapsOpen, 0, `${gw}/${dev}: open gaps`)
      duplicates += d.duplicates
    }
  }
  return { duplicates }
}

/** Acknowledged events in all. */
export const ackedTotal = (acked: Acked): number => [...acked.values()].flatMap((m) => [...m.values()]).reduce((s, a) => s + a.size, 0)
