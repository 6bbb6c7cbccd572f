// Schema evolution guard: the current contracts (proto/gen/iot.json, built by `npm run gen`) must stay
// wire compatible with the last released descriptor (proto/descriptors/iot.v1.json, see proto/release.mjs).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { checkCompatible } from '../proto/compat.ts'
import { v1 } from '../proto/index.ts'

// Loose view of a pbjs JSON descriptor, enough to mutate it in place.
type Json = Record<string, any>

const readJson = (rel: string): Json => JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as Json
const released = readJson('../proto/descriptors/iot.v1.json')

// A fresh copy of the released schema each time, so every case edits a real descriptor without affecting the others.
const mutate = (edit: (pkg: Json) => void): Json => {
  const copy = structuredClone(released)
  edit(copy.nested.iot.nested.v1.nested)
  return copy
}
const fieldsOf = (pkg: Json, message: string): Json => pkg[message].fields

// Asserts exactly one problem that matches every pattern.
const assertOneProblem = (problems: string[], ...patterns: RegExp[]): void => {
  assert.equal(problems.length, 1, `expected one problem, got: ${JSON.stringify(problems)}`)
  for (const p of patterns) assert.match(problems[0], p)
}

test('proto: current schema is compatible with the released descriptor', () => {
  assert.deepEqual(checkCompatible(released, readJson('../proto/gen/iot.json')), [])
})

test('proto compat: reports a renumbered field', () => {
  const problems = checkCompatible(released, mutate((pkg) => { fieldsOf(pkg, 'TelemetryEvent').seq.id = 9 }))
  assertOneProblem(problems, /iot\.v1\.TelemetryEvent/, /\bseq\b/, /#3/, /renumbered/)
})

test('proto compat: reports a retyped field', () => {
  const problems = checkCompatible(released, mutate((pkg) => { fieldsOf(pkg, 'TelemetryEvent').seq.type = 'string' }))
  assertOneProblem(problems, /iot\.v1\.TelemetryEvent/, /\bseq\b/, /#3/, /uint64 to string/)
})

test('proto compat: reports a retyped map key', () => {
  const problems = checkCompatible(released, mutate((pkg) => { fieldsOf(pkg, 'TelemetryEvent').labels.keyType = 'int32' }))
  assertOneProblem(problems, /labels/, /#7/, /map<string, string> to map<int32, string>/)
})

test('proto compat: reports a field removed without reservation', () => {
  const problems = checkCompatible(released, mutate((pkg) => { delete fieldsOf(pkg, 'TelemetryEvent').eventTsFromGateway }))
  assertOneProblem(problems, /iot\.v1\.TelemetryEvent/, /eventTsFromGateway/, /#8/, /without reserving number 8/)
})

test('proto compat: reports a field changed from singular to repeated', () => {
  const problems = checkCompatible(released, mutate((pkg) => { fieldsOf(pkg, 'TelemetryEvent').deviceId.rule = 'repeated' }))
  assertOneProblem(problems, /iot\.v1\.TelemetryEvent/, /deviceId/, /#2/, /string to repeated string/)
})

test('proto compat: reports a removed message', () => {
  // Gap is also the element type of ReplicationBatch.gaps, so that field goes too, keeping the descriptor valid.
  const problems = checkCompatible(released, mutate((pkg) => {
    delete pkg.Gap
    delete fieldsOf(pkg, 'ReplicationBatch').gaps
    pkg.ReplicationBatch.reserved = [[4, 4], 'gaps']
  }))
  assertOneProblem(problems, /iot\.v1\.Gap\b/, /message was removed/)
})

test('proto compat: reports a new field reusing a reserved number', () => {
  const current = mutate((pkg) => {
    delete fieldsOf(pkg, 'TelemetryEvent').labels
    pkg.TelemetryEvent.reserved = [[7, 7], 'labels']
  })
  const next = structuredClone(current)
  delete next.nested.iot.nested.v1.nested.TelemetryEvent.reserved
  next.nested.iot.nested.v1.nested.TelemetryEvent.fields.tags = { type: 'string', id: 7 }
  const problems = checkCompatible(current, next)
  assertOneProblem(problems, /\btags\b/, /#7/, /reuses number 7/)
})

test('proto compat: accepts an added field', () => {
  const current = mutate((pkg) => { fieldsOf(pkg, 'TelemetryEvent').firmware = { type: 'string', id: 9 } })
  assert.deepEqual(checkCompatible(released, current), [])
})

test('proto compat: accepts a removed field whose number is reserved', () => {
  const current = mutate((pkg) => {
    delete fieldsOf(pkg, 'TelemetryEvent').eventTsFromGateway
    pkg.TelemetryEvent.reserved = [[8, 8], 'event_ts_from_gateway']
  })
  assert.deepEqual(checkCompatible(released, current), [])
})

test('proto compat: accepts a renamed field with the same number and type', () => {
  const current = mutate((pkg) => {
    const fields = fieldsOf(pkg, 'TelemetryEvent')
    fields.ingestedAtMs = { ...fields.ingestTsMs, protoName: 'ingested_at_ms' }
    delete fields.ingestTsMs
  })
  assert.deepEqual(checkCompatible(released, current), [])
})

test('proto compat: enum values must stay or be reserved', () => {
  const withEnum = mutate((pkg) => { pkg.Quality = { values: { QUALITY_UNSPECIFIED: 0, GOOD: 1, BAD: 2 } } })
  const removed = structuredClone(withEnum)
  delete removed.nested.iot.nested.v1.nested.Quality.values.BAD
  assertOneProblem(checkCompatible(withEnum, removed), /iot\.v1\.Quality/, /BAD/, /without reserving number 2/)
  removed.nested.iot.nested.v1.nested.Quality.reserved = [[2, 2], 'BAD']
  assert.deepEqual(checkCompatible(withEnum, removed), [])
})

test('proto: TelemetryEvent roundtrips through v1 encode/decode', () => {
  const event = {
    gatewayId: 'gw-1',
    deviceId: 'dev-42',
    seq: 123456789012,
    eventTsMs: 1_700_000_000_123,
    ingestTsMs: 1_700_000_000_456,
    readings: [{ name: 'temp', value: 21.5 }, { name: 'rh', value: 40 }],
    labels: { site: 'north' },
    eventTsFromGateway: true,
  }
  const decoded = v1.TelemetryEvent.decode(v1.TelemetryEvent.encode(v1.TelemetryEvent.create(event)).finish())
  // proto/index.ts disables Long, so 64-bit fields must come back as plain numbers.
  assert.equal(typeof decoded.seq, 'number')
  assert.equal(decoded.seq, event.seq)
  assert.equal(decoded.eventTsMs, event.eventTsMs)
  assert.deepEqual(decoded.readings.map((r) => ({ name: r.name, value: r.value })), event.readings)
  assert.deepEqual({ ...decoded.labels }, event.labels)
  assert.equal(decoded.eventTsFromGateway, true)
})
