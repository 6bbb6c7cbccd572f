// The layout's rules, checked on every run so the rooms stay rooms (README, Architecture):
// gateway/ and cloud/ never import each other, test/, bench/, devkit/ or simulators/; bench/,
// simulators/ and devkit/ never import test/; proto/ and lib/ import only each other; inside
// gateway/ and cloud/ the data path points one way and no import cycle exists; no source file is
// over 400 lines (generated code and test files aside).
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join, normalize } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const SPEC = /(?:from|import\()\s*'(\.{1,2}\/[^']+)'/g
const MAX_LINES = 400

const sources = execFileSync('git', ['ls-files', '*.ts', '*.mjs'], { cwd: ROOT, encoding: 'utf8' }).trim().split('\n')
  .filter((f) => !f.startsWith('cloud/console/public/') && !f.startsWith('proto/gen/'))
const importsOf = new Map(sources.map((f) => {
  const text = readFileSync(join(ROOT, f), 'utf8')
  return [f, [...text.matchAll(SPEC)].map((m) => normalize(join(dirname(f), m[1])))]
}))
const room = (f: string): string => f.split('/')[0]
/** The second level: gateway/store/outbox.ts -> gateway/store; gateway/gateway.ts -> gateway. */
const subroom = (f: string): string => f.split('/').length > 2 ? f.split('/').slice(0, 2).join('/') : room(f)

function violations (allowed: (from: string, to: string) => boolean): string[] {
  const out: string[] = []
  for (const [f, deps] of importsOf) for (const d of deps) if (!allowed(f, d)) out.push(`${f} -> ${d}`)
  return out
}

test('layout: gateway/ and cloud/ import only themselves, proto/ and lib/; proto/ and lib/ only each other', () => {
  const shared = new Set(['proto', 'lib'])
  assert.deepEqual(violations((f, d) => {
    if (room(f) === 'gateway' || room(f) === 'cloud') return room(d) === room(f) || shared.has(room(d)) || d === 'package.json'
    if (shared.has(room(f))) return shared.has(room(d))
    return true
  }), [])
})

test('layout: bench/, simulators/ and devkit/ never import test/', () => {
  assert.deepEqual(violations((f, d) => !['bench', 'simulators', 'devkit'].includes(room(f)) || room(d) !== 'test'), [])
})

// Which rooms each room of a data path may import (besides itself and its area's top-level files:
// errors, config, metrics, log). The edge: the broker hands a publish to ingest, ingest to the rules
// and the store; the rules record into the store; the uplink reads the store; nothing imports the
// broker or the uplink. The cloud: apply writes the store (for the partitions it holds: partitions/
// keeps the leases), views read it, http serves views.
const MAY_IMPORT: Record<string, string[]> = {
  'gateway/mqtt': ['gateway/ingest', 'gateway/rules', 'gateway/store'],
  'gateway/ingest': ['gateway/rules', 'gateway/store'],
  'gateway/rules': ['gateway/store'],
  'gateway/store': [],
  'gateway/uplink': ['gateway/store'],
  'cloud/store': [],
  'cloud/partitions': ['cloud/store'],
  'cloud/apply': ['cloud/store', 'cloud/partitions'],
  'cloud/views': ['cloud/store', 'cloud/apply'],
  'cloud/http': ['cloud/store', 'cloud/apply', 'cloud/views', 'cloud/console', 'cloud/partitions'],
  'cloud/console': [],
}

test('layout: the data path points one way (edge: mqtt -> ingest -> rules -> store <- uplink; cloud: store <- apply <- views <- http)', () => {
  assert.deepEqual(violations((f, d) => {
    const from = subroom(f)
    const to = subroom(d)
    const allowed = MAY_IMPORT[from]
    if (allowed === undefined || from === to || !(to in MAY_IMPORT)) return true
    return allowed.includes(to)
  }), [])
})

test('layout: no import cycle anywhere', () => {
  const cycles: string[][] = []
  const state = new Map<string, 'open' | 'done'>()
  const stack: string[] = []
  const visit = (f: string): void => {
    state.set(f, 'open')
    stack.push(f)
    for (const d of importsOf.get(f) ?? []) {
      if (!importsOf.has(d)) continue
      if (state.get(d) === 'open') cycles.push([...stack.slice(stack.indexOf(d)), d])
      else if (!state.has(d)) visit(d)
    }
    stack.pop()
    state.set(f, 'done')
  }
  for (const f of importsOf.keys()) if (!state.has(f)) visit(f)
  assert.deepEqual(cycles.map((c) => c.join(' -> ')), [])
})

test(`layout: no source file over ${MAX_LINES} lines (test files aside)`, () => {
  const long = sources.filter((f) => !f.endsWith('.test.ts')).map((f) => [f, readFileSync(join(ROOT, f), 'utf8').split('\n').length - 1] as const).filter(([, n]) => n > MAX_LINES)
  assert.deepEqual(long.map(([f, n]) => `${f}: ${n}`), [])
})
