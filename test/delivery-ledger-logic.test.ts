// The per-device delivery ledger's pure parts: the seq and ingest time read off a stored body's
// first bytes, and the ledger's marks and heartbeat rotation (gateway/uplink/delivery-ledger.ts)
// over a source of marks given here (the end-to-end test is test/delivery-ledger.test.ts).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { DeliveryLedger, type MarksSource } from '../gateway/uplink/delivery-ledger.ts'
import { DeviceSeqs } from '../gateway/uplink/batch.ts'
import { encodeTelemetry, LANE_TELEMETRY, type UplinkRow } from '../gateway/store/outbox-types.ts'
import { storedSeq, storedSeqAndIngest } from '../gateway/store/stored-event.ts'
import type { AcceptedMark, FrontScan } from '../gateway/store/accepted-marks.ts'
import { v1 } from '../proto/index.ts'

const event = (seq: number, ingestTsMs: number): Uint8Array => encodeTelemetry({ deviceId: 'd', lane: LANE_TELEMETRY, eventTsMs: 1_732_000_000_000, ingestTsMs, eventTsFromGateway: false, readings: [{ name: 't', value: 1 }] }, seq)

test('delivery ledger: seq and ingest time are read off the first bytes of a stored body, also from a body that starts with its device id', () => {
  for (const seq of [1, 127, 128, 300_000, 2 ** 40]) {
    const body = event(seq, 1_733_000_000_123)
    assert.equal(storedSeq(body), seq)
    assert.deepEqual(storedSeqAndIngest(body.subarray(0, 32)), { seq, ingestTsMs: 1_733_000_000_123 })
  }
  const legacy = v1.TelemetryEvent.encode({ deviceId: 'sensor-1', seq: 42, eventTsMs: 5, ingestTsMs: 1_733_000_000_999 }).finish()
  assert.equal(storedSeq(legacy), 42)
  assert.deepEqual(storedSeqAndIngest(legacy), { seq: 42, ingestTsMs: 1_733_000_000_999 })
})

/** A source whose marks the test sets. */
function source (): MarksSource & { marks: AcceptedMark[], scan: FrontScan } {
  const s = {
    marks: [] as AcceptedMark[],
    scan: { oldest: new Map(), complete: true, horizonTsMs: 0 } as FrontScan,
    accepted: () => s.marks,
    front: () => s.scan,
  }
  return s
}

test('delivery ledger: replicated from acks and the outbox front, oldest unsent exact or bounded, sums', () => {
  const src = source()
  const ledger = new DeliveryLedger(src, { reportDevices: 10, scanRows: 100 })
  src.marks = [{ deviceId: 'a', num: 1, acceptedSeq: 50 }, { deviceId: 'b', num: 2, acceptedSeq: 20 }, { deviceId: 'c', num: 3, acceptedSeq: 9 }]
  // a: seqs 31.. unsent (31 at 1000); live acks reached 45 (overtook the backlog). b: nothing unsent. c: beyond the scan.
  src.scan = { oldest: new Map([[1, { seq: 31, ingestTsMs: 1000 }]]), complete: false, horizonTsMs: 4000 }
  ledger.acked([1, 45, 3, 4])
  ledger.refresh(10_000)
  const byId = new Map(ledger.report(10_000).map((e) => [e.deviceId, e]))
  assert.deepEqual(byId.get('a'), { deviceId: 'a', acceptedSeq: 50, replicatedSeq: 45, oldestUnsentAgeMs: 9000, oldestUnsentAgeBound: false })
  // b was not found in an incomplete scan and nothing says it is behind: no ack seen, so 0 replicated is all we know, bounded age.
  assert.equal(byId.get('b')!.replicatedSeq, 0)
  assert.deepEqual(byId.get('c'), { deviceId: 'c', acceptedSeq: 9, replicatedSeq: 4, oldestUnsentAgeMs: 6000, oldestUnsentAgeBound: true })
  // A complete scan: devices not in it have nothing unsent.
  src.scan = { oldest: new Map([[1, { seq: 46, ingestTsMs: 9000 }]]), complete: true, horizonTsMs: 9500 }
  ledger.refresh(10_000)
  const again = new Map(ledger.report(10_000).map((e) => [e.deviceId, e]))
  assert.deepEqual([again.get('a')!.replicatedSeq, again.get('b')!.replicatedSeq, again.get('c')!.replicatedSeq], [45, 20, 9])
  assert.equal(again.get('c')!.oldestUnsentAgeMs, 0)
  assert.deepEqual(ledger.totals(), { devices: 3, devicesBehind: 1, acceptedSeqSum: 79, replicatedSeqSum: 74, oldestUnsentAgeMs: 1000, refreshedTsMs: 10_000 })
})

test('delivery ledger: at most reportDevices per heartbeat, changed devices first, every device comes round again (a lost heartbeat is repaired)', () => {
  const src = source()
  const ledger = new DeliveryLedger(src, { reportDevices: 4, scanRows: 100 })
  src.marks = Array.from({ length: 10 }, (_, i) => ({ deviceId: `d${i}`, num: i + 1, acceptedSeq: 5 }))
  ledger.refresh(1)
  const seen = new Set<string>()
  for (let beat = 0; beat < 3; beat++) {
    const part = ledger.report(1)
    assert.ok(part.length <= 4)
    for (const e of part) seen.add(e.deviceId)
  }
  assert.equal(seen.size, 10, 'every device within three heartbeats')
  // d7 changes: it goes in the next heartbeat, whatever the rotation's turn.
  src.marks[7] = { deviceId: 'd7', num: 8, acceptedSeq: 6 }
  ledger.refresh(2)
  const next = ledger.report(2)
  assert.ok(next.some((e) => e.deviceId === 'd7' && e.acceptedSeq === 6))
  // The rotation brings every device back: with 4 per beat, 10 devices within 3 beats again.
  const round = new Set<string>()
  for (let beat = 0; beat < 3; beat++) for (const e of ledger.report(3)) round.add(e.deviceId)
  assert.equal(round.size, 10)
})

test('delivery ledger: a batch\'s highest seq per device, one body read per device, rows without a device number left out, device numbers past the first thousand', () => {
  const ds = new DeviceSeqs()
  const row = (id: number, dev: number | null, seq: number): UplinkRow => ({ id, dev, body: Buffer.from(event(seq, 1)) })
  const pairs = (list: number[]): Array<[number, number]> => Array.from({ length: list.length / 2 }, (_, i) => [list[2 * i], list[2 * i + 1]] as [number, number]).sort((a, b) => a[0] - b[0])
  assert.deepEqual(pairs(ds.of([row(1, 1, 10), row(2, 2, 3), row(3, 1, 11), row(4, null, 99), row(5, 5000, 7), row(6, 2, 4)])), [[1, 11], [2, 4], [5000, 7]])
  // The next batch starts afresh.
  assert.deepEqual(pairs(ds.of([row(7, 2, 5)])), [[2, 5]])
})
