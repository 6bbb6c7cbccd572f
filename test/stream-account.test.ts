// The identity accounting that every fault test ends with must catch what equal counts hide.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { accountingProblems, mergeAccounts, type StreamAccount } from '../devkit/index.ts'

/** A stream account of gateway gw, device d: the given seqs, each carrying n = seq * 10. */
function account (seqs: number[], gaps: Array<{ fromSeq: number, toSeq: number }> = []): StreamAccount {
  const events = new Map<number, number>()
  for (const s of seqs) events.set(s, (events.get(s) ?? 0) + 1)
  return {
    batches: 1,
    batchIds: new Map([['b1', 1]]),
    events: new Map([['gw/d', events]]),
    gaps: gaps.map((g) => ({ gatewayId: 'gw', deviceId: 'd', ...g })),
    ns: new Map([['gw/d', seqs.map((s) => s * 10)]]),
    times: new Map(),
  }
}
const acked = (...ns: number[]): Map<string, number[]> => new Map([['d', ns]])

test('accounting: exact delivery has no problems', () => {
  assert.deepEqual(accountingProblems(account([1, 2, 3]), 'gw', acked(10, 20, 30)), [])
})

test('accounting: one lost plus one doubled is caught, though the counts add up', () => {
  const problems = accountingProblems(account([1, 2, 2]), 'gw', acked(10, 20, 30))
  assert.ok(problems.some((p) => /seq 2 arrived 2 times/.test(p)), problems.join('\n'))
  assert.ok(problems.some((p) => /n=30 never reached the stream/.test(p)), problems.join('\n'))
  assert.ok(problems.some((p) => /n=20 arrived 2 times/.test(p)), problems.join('\n'))
})

test('accounting: a missing seq is explained only by a gap record that covers it', () => {
  assert.deepEqual(accountingProblems(account([1, 4], [{ fromSeq: 2, toSeq: 3 }]), 'gw', acked(10, 40)), [])
  assert.equal(accountingProblems(account([1, 4], [{ fromSeq: 2, toSeq: 2 }]), 'gw', acked(10, 40)).length, 1)
  assert.ok(accountingProblems(account([1, 2], [{ fromSeq: 2, toSeq: 2 }]), 'gw', acked(10, 20)).some((p) => /gap record says it was shed/.test(p)))
})

test('accounting: a batch stored twice is a problem', () => {
  const acc = account([1])
  acc.batchIds.set('b1', 2)
  assert.ok(accountingProblems(acc, 'gw', acked(10)).some((p) => /batch b1 stored 2 times/.test(p)))
})

test('accounting: gap records read from another stream (EVENTS) explain the seqs missing from TELEMETRY once merged', () => {
  const telemetry = account([1, 2, 5])
  const events: StreamAccount = { ...account([], [{ fromSeq: 3, toSeq: 4 }]), batchIds: new Map([['b2', 1]]) }
  assert.ok(accountingProblems(telemetry, 'gw', acked(10, 20, 50)).some((p) => /seq 3 missing/.test(p)))
  const merged = mergeAccounts(telemetry, events)
  assert.deepEqual(accountingProblems(merged, 'gw', acked(10, 20, 50)), [])
  // A batch id stored in both streams is still one stored twice.
  assert.ok(accountingProblems(mergeAccounts(telemetry, account([])), 'gw', acked(10, 20, 50)).some((p) => /batch b1 stored 2 times/.test(p)))
})
