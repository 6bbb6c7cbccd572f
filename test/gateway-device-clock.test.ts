// A device with a bad clock: its ts is out of the valid range (gateway/ingest/payload.ts eventTime),
// so the gateway stamps ingest time instead, and that ts must not identify a resend either: a
// device stamping every reading 0 sends distinct readings that look alike, and each is stored.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { connectDevice, startGateway } from '../devkit/index.ts'
import { readOutbox } from './harness/outbox-reader.ts'

const YEAR_MS = 365 * 24 * 3600 * 1000

test('resend: a device ts out of the valid range never identifies a resend (every publish is stored); an in-range one still does', async (t) => {
  const gw = await startGateway({ mqtt: { allowAnonymous: true } })
  t.after(() => gw.close())
  const bad = await connectDevice(gw.ports.mqtt, { clientId: 'bad-clock' })
  t.after(() => bad.endAsync(true))
  const good = await connectDevice(gw.ports.mqtt, { clientId: 'good-clock' })
  t.after(() => good.endAsync(true))

  // Three readings stamped 0 (a clock never set) and two stamped ten years ahead, byte for byte alike.
  for (let i = 0; i < 3; i++) await bad.publishAsync('devices/bad-clock/telemetry', '{"ts":0,"temperature":4}', { qos: 1 })
  const future = JSON.stringify({ ts: Date.now() + 10 * YEAR_MS, temperature: 5 })
  for (let i = 0; i < 2; i++) await bad.publishAsync('devices/bad-clock/telemetry', future, { qos: 1 })
  // A true resend: the same in-range reading twice.
  const stamped = JSON.stringify({ ts: Date.now(), temperature: 6 })
  for (let i = 0; i < 2; i++) await good.publishAsync('devices/good-clock/telemetry', stamped, { qos: 1 })

  const stored = readOutbox(gw.dataDir).map((e) => [e.deviceId, e.seq, e.readings.temperature])
  assert.deepEqual(stored, [
    ['bad-clock', 1, 4], ['bad-clock', 2, 4], ['bad-clock', 3, 4],
    ['bad-clock', 4, 5], ['bad-clock', 5, 5],
    ['good-clock', 1, 6],
  ])
})
