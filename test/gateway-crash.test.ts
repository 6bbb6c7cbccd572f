import assert from 'node:assert/strict'
import { test } from 'node:test'
import { connectDevice, spawnGateway, tempDir } from '../devkit/index.ts'
import { queryOutbox, readOutbox } from './harness/outbox-reader.ts'
import { loadDevice } from './harness/load.ts'

const ROUNDS = 20
const DEVICES = 4
const WINDOW = 50

test(`crash: ${ROUNDS} rounds of SIGKILL under QoS 1 load lose no acknowledged event and reuse no sequence number`, { timeout: 240000 }, async (t) => {
  const tmp = tempDir('gw-crash-')
  t.after(() => tmp.cleanup())
  const acked = new Map<string, Set<number>>()
  const next = new Map<string, { n: number }>()
  for (let d = 0; d < DEVICES; d++) { acked.set(`crash-${d}`, new Set()); next.set(`crash-${d}`, { n: 0 }) }
  const sets = ['mqtt.allowAnonymous=true', 'mqtt.ratePerDevice=1000000', 'mqtt.burstPerDevice=1000000']
  let maxAckedInRound = 0
  for (let round = 0; round < ROUNDS; round++) {
    const gw = await spawnGateway(tmp.dir, sets)
    try {
      const clients = await Promise.all([...acked.keys()].map((id) => connectDevice(gw.ports.mqtt, { clientId: id })))
      const before = [...acked.values()].reduce((s, a) => s + a.size, 0)
      const loads = clients.map((c, i) => loadDevice(c, `crash-${i}`, next.get(`crash-${i}`)!, acked.get(`crash-${i}`)!, { window: WINDOW }))
      // Kill at a random moment of the load: the outbox must hold every PUBACKed event regardless.
      await new Promise((resolve) => setTimeout(resolve, 150 + Math.random() * 600))
      await gw.kill('SIGKILL')
      for (const l of loads) l.stop()
      for (const c of clients) c.end(true)
      maxAckedInRound = Math.max(maxAckedInRound, [...acked.values()].reduce((s, a) => s + a.size, 0) - before)
    } finally {
      await gw.kill('SIGKILL')
    }
  }
  assert.ok(maxAckedInRound > 100, `load too light to mean anything (${maxAckedInRound} acks in the best round)`)

  const events = readOutbox(tmp.dir)
  for (const [deviceId, ackedSet] of acked) {
    const mine = events.filter((e) => e.deviceId === deviceId)
    const byN = new Map<number, number>()
    for (const e of mine) byN.set(e.readings.n, (byN.get(e.readings.n) ?? 0) + 1)
    for (const n of ackedSet) assert.equal(byN.get(n), 1, `${deviceId}: acknowledged message ${n} is stored ${byN.get(n) ?? 0} times`)
    // Message ids are never resent, so nothing may be stored twice either.
    for (const [n, c] of byN) assert.equal(c, 1, `${deviceId}: message ${n} stored ${c} times`)
    // Sequence numbers: unique, in ingest order, and contiguous (counters commit with their events).
    assert.deepEqual(mine.map((e) => e.seq), Array.from({ length: mine.length }, (_, i) => i + 1), `${deviceId}: sequence numbers`)
  }
  const [check] = queryOutbox<{ integrity_check: string }>(tmp.dir, 'PRAGMA integrity_check')
  assert.equal(check.integrity_check, 'ok')
  const [state] = queryOutbox<{ events: number }>(tmp.dir, 'SELECT events FROM outbox_state')
  assert.equal(state.events, events.length, 'running total matches the table after crashes')
})
