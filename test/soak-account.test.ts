// The soak's verdict (simulators/soak-account.ts) on made-up streams and cloud answers: it must pass
// an exact run, explain a shed reading only by a gap record with room for it, and catch a loss hidden
// by a duplicate, a reading the views applied twice, and a gap on a gateway that never sheds.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { StreamAccount } from '../devkit/index.ts'
import { soakAccounting, type GatewayRecord } from '../simulators/soak-account.ts'

const GW = 'gw-1'
const DEV = 'sensor-1'
const KEY = `${GW}/${DEV}`
const T0 = 1_765_000_000_000
// Reading n was sent at T0 + n * 20 s: three readings a minute.
const tsOf = (n: number): number => T0 + n * 20_000

/** A stream holding the given (n, seq) events and gap records of the device. */
function stream (events: Array<[n: number, seq: number]>, gaps: Array<[from: number, to: number]> = []): StreamAccount {
  const seqs = new Map<number, number>()
  const seqsOfN = new Map<number, number[]>()
  for (const [n, seq] of events) {
    seqs.set(seq, (seqs.get(seq) ?? 0) + 1)
    seqsOfN.set(n, [...(seqsOfN.get(n) ?? []), seq])
  }
  return {
    batches: 1,
    batchIds: new Map([['b1', 1]]),
    events: new Map([[KEY, seqs]]),
    gaps: gaps.map(([fromSeq, toSeq]) => ({ gatewayId: GW, deviceId: DEV, fromSeq, toSeq })),
    ns: new Map([[KEY, events.map(([n]) => n)]]),
    times: new Map(),
    seqsOfN: new Map([[KEY, seqsOfN]]),
  }
}

function gateway (acked: number[], mayShed = false): GatewayRecord {
  const sentTs = new Map(acked.map((n) => [n, tsOf(n)]))
  return { gatewayId: GW, devices: [{ deviceId: DEV, sentTs, ackedN: acked }], badDeviceIds: [], mayShed }
}

/** A cloud whose views applied the readings `applied` (by n) and counts `acct`. */
function cloud (applied: number[], acct: { received: number, highestSeq: number, gapsExplained?: number }): (path: string) => Promise<unknown> {
  return async (path) => {
    if (path.startsWith('/api/accounting')) return { devices: [{ deviceId: DEV, duplicates: 0, gapsOpen: 0, gapsAbandoned: 0, gapsExplained: 0, ...acct }] }
    const buckets = new Map<number, { count: number, sum: number, min: number, max: number }>()
    for (const n of applied) {
      const start = Math.floor(tsOf(n) / 60_000) * 60_000
      const b = buckets.get(start) ?? { count: 0, sum: 0, min: Infinity, max: -Infinity }
      buckets.set(start, { count: b.count + 1, sum: b.sum + n, min: Math.min(b.min, n), max: Math.max(b.max, n) })
    }
    return { buckets: [...buckets].map(([start, n]) => ({ start, readings: { n } })) }
  }
}

const WINDOW = { fromMs: T0, toMs: T0 + 3_600_000 }

test('soak accounting: an exact run has no problem', async () => {
  const r = await soakAccounting(stream([[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]]), [gateway([1, 2, 3, 4, 5])], cloud([1, 2, 3, 4, 5], { received: 5, highestSeq: 5 }), WINDOW)
  assert.deepEqual(r.problems, [])
  assert.equal(r.totals.acked, 5)
  assert.equal(r.totals.applied, 5)
})

test('soak accounting: a lost reading hidden by a doubled one is caught, though the counts add up', async () => {
  // n=3 lost, n=4 stored twice under two seqs: five events, five seqs.
  const r = await soakAccounting(stream([[1, 1], [2, 2], [4, 3], [4, 4], [5, 5]]), [gateway([1, 2, 3, 4, 5])], cloud([1, 2, 4, 4, 5], { received: 5, highestSeq: 5 }), WINDOW)
  assert.ok(r.problems.some((p) => p.includes('n=3') && p.includes('never reached the stream')), r.problems.join('\n'))
  assert.ok(r.problems.some((p) => p.includes('n=4 arrived 2 times')), r.problems.join('\n'))
})

test('soak accounting: a shed reading is explained by a gap record between its neighbours, and only with room for it', async () => {
  const shed = await soakAccounting(stream([[1, 1], [2, 2], [4, 4], [5, 5]], [[3, 3]]), [gateway([1, 2, 3, 4, 5], true)], cloud([1, 2, 4, 5], { received: 4, highestSeq: 5, gapsExplained: 1 }), WINDOW)
  assert.deepEqual(shed.problems, [])
  assert.equal(shed.totals.shed, 1)
  // Two readings missing, one seq shed: one of them is lost.
  const lost = await soakAccounting(stream([[1, 1], [2, 2], [5, 4]], [[3, 3]]), [gateway([1, 2, 3, 4, 5], true)], cloud([1, 2, 5], { received: 3, highestSeq: 4, gapsExplained: 1 }), WINDOW)
  assert.ok(lost.problems.some((p) => p.includes('2 acknowledged readings') && p.includes('only 1 seqs')), lost.problems.join('\n'))
})

test('soak accounting: a gap record on a gateway whose budget is never reached is a problem', async () => {
  const r = await soakAccounting(stream([[1, 1], [2, 2], [4, 4], [5, 5]], [[3, 3]]), [gateway([1, 2, 3, 4, 5], false)], cloud([1, 2, 4, 5], { received: 4, highestSeq: 5, gapsExplained: 1 }), WINDOW)
  assert.ok(r.problems.some((p) => p.includes('gap records, though its disk budget is never reached')), r.problems.join('\n'))
})

test('soak accounting: the views applying a reading twice or missing one is caught by the history, whatever the counts say', async () => {
  const events: Array<[number, number]> = [[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]]
  // The views hold n=4 twice and lack n=3 (the same count); the accounting counts look right.
  const r = await soakAccounting(stream(events), [gateway([1, 2, 3, 4, 5])], cloud([1, 2, 4, 4, 5], { received: 5, highestSeq: 5 }), WINDOW)
  assert.ok(r.problems.some((p) => p.includes('of the history has') && p.includes('sum 13')), r.problems.join('\n'))
  // And counts that disagree with the stream are caught too.
  const counts = await soakAccounting(stream(events), [gateway([1, 2, 3, 4, 5])], cloud([1, 2, 3, 4, 5], { received: 4, highestSeq: 5 }), WINDOW)
  assert.ok(counts.problems.some((p) => p.includes('the cloud applied 4 events, the stream holds 5')), counts.problems.join('\n'))
})
