// Markdown report and chart over every bench-results/<name>.json present (issue #7): the machine,
// then per benchmark its table, its ratios (with "target met?") and its notes; plus report.svg, a
// horizontal bar chart of the key figures normalised to their DESIGN targets (> 1 meets the target).
// The JSON shapes differ per benchmark, so every figure is looked up defensively; a missing figure
// skips its bar and the report says so.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { chartSvg, type Bar } from './report-chart.ts'

type Json = Record<string, unknown>
interface Table { columns: string[], rows: string[][] }

/** Benchmarks in report order; any other JSON found comes after them, by name. */
const ORDER = ['ingest', 'drain', 'decide', 'aggregate', 'footprint', 'memory']

const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v)
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined)
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined)
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : [])

/** Markdown-safe cell: no pipes or newlines. */
const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\r?\n/g, ' ')

function fmt (v: unknown): string {
  if (v === null || v === undefined) return '–'
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return String(v)
    if (Number.isInteger(v)) return v.toLocaleString('en-US')
    const a = Math.abs(v)
    return a >= 1000 ? Math.round(v).toLocaleString('en-US') : a >= 10 ? v.toFixed(1) : a >= 0.01 ? v.toFixed(3) : v.toPrecision(3)
  }
  if (typeof v === 'boolean') return v ? 'yes' : 'no'
  if (typeof v === 'string') return v
  return JSON.stringify(v)
}

const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`
const gb = (bytes: number): string => `${(bytes / 1e9).toFixed(2)} GB`
const perSec = (n: number): string => `${Math.round(n).toLocaleString('en-US')} ev/s`

function mdTable (columns: string[], rows: string[][]): string {
  const line = (cells: string[]): string => `| ${cells.map(cell).join(' | ')} |`
  return [line(columns), `|${columns.map(() => ' --- ').join('|')}|`, ...rows.map((r) => line(columns.map((_c, i) => r[i] ?? '')))].join('\n')
}

function isTable (v: unknown): v is Table {
  return isObj(v) && Array.isArray(v.columns) && Array.isArray(v.rows) && v.columns.every((c) => typeof c === 'string') &&
    v.rows.every((r) => Array.isArray(r))
}

/** Scalars of an object, nested objects flattened to `a.b` up to `depth` levels; arrays left out. */
function flatten (o: Json, depth: number, prefix = '', out: Record<string, unknown> = {}): Record<string, unknown> {
  for (const [k, v] of Object.entries(o)) {
    const key = prefix === '' ? k : `${prefix}.${k}`
    if (Array.isArray(v)) continue
    if (isObj(v)) {
      if (depth > 1) flatten(v, depth - 1, key, out)
      continue
    }
    if (typeof v === 'string' && v.length > 80) continue
    out[key] = v
  }
  return out
}

/**
 * A table derived from `results` when the JSON carries none (run.ts stores the printed table only in
 * memory): results wrapped in one key ({ fill: {...} }) are unwrapped; one table per kind of row.
 */
function derivedTables (results: unknown[]): Array<{ kind: string, table: Table }> {
  const groups = new Map<string, Array<Record<string, unknown>>>()
  for (const r of results) {
    if (!isObj(r)) continue
    const keys = Object.keys(r)
    const wrapped = keys.length === 1 && isObj(r[keys[0]])
    const kind = wrapped ? keys[0] : 'results'
    const flat = flatten(wrapped ? (r[keys[0]] as Json) : r, 2)
    const list = groups.get(kind) ?? []
    list.push(flat)
    groups.set(kind, list)
  }
  return [...groups].map(([kind, list]) => {
    const columns: string[] = []
    for (const f of list) for (const k of Object.keys(f)) if (!columns.includes(k)) columns.push(k)
    return { kind, table: { columns, rows: list.map((f) => columns.map((c) => fmt(f[c]))) } }
  })
}

/** Ratio entries: a label from its descriptive fields, its value, and "target met?" when known. */
function ratioRows (ratios: unknown[]): string[][] {
  return ratios.filter(isObj).map((r) => {
    const valueKey = ['value', 'ratio', 'eventsPerSec', 'vsConsumerOnly', 'perReplicaVsTarget'].find((k) => num(r[k]) !== undefined) ??
      Object.keys(r).find((k) => num(r[k]) !== undefined && !['publishers', 'batchMaxEvents', 'maxInFlight', 'targetRatio'].includes(k))
    const descr = Object.entries(r)
      .filter(([k, v]) => k !== valueKey && k !== 'meetsTarget' && k !== 'targetRatio' && v !== null && !isObj(v) && !Array.isArray(v))
      .filter(([k]) => !(valueKey === 'eventsPerSec' && (k === 'p50' || k === 'p99')))
      .map(([k, v]) => (['what', 'name', 'metric', 'target'].includes(k) ? String(v) : `${k} ${fmt(v)}`))
      .join(', ')
    let what = descr + (valueKey !== undefined && !['value', 'ratio'].includes(valueKey) ? ` (${valueKey})` : '')
    // ingest: several ratios in one entry; show the latency ones alongside.
    if (valueKey === 'eventsPerSec' && (num(r.p50) !== undefined || num(r.p99) !== undefined)) {
      what += `; latency ratio p50 ${fmt(r.p50)}, p99 ${fmt(r.p99)}`
    }
    const target = num(r.targetRatio)
    const met = typeof r.meetsTarget === 'boolean'
      ? (r.meetsTarget ? 'yes' : 'no') + (target !== undefined ? ` (≥ ${target})` : '')
      : '–'
    return [what, valueKey !== undefined ? fmt(r[valueKey]) : '–', met]
  })
}

const findResult = (results: unknown[], key: string): Json[] =>
  results.filter(isObj).map((r) => r[key]).filter(isObj)

/** The key figures of the chart, each normalised so that >= 1 meets its target. */
function keyFigures (data: Map<string, Json>): { bars: Bar[], skipped: string[] } {
  const bars: Bar[] = []
  const skipped: string[] = []
  const add = (bench: string, label: string, fn: (d: Json) => Omit<Bar, 'label'> | undefined): void => {
    const d = data.get(bench)
    if (d === undefined) { skipped.push(`${label}: no bench-results/${bench}.json`); return }
    let bar: Omit<Bar, 'label'> | undefined
    try { bar = fn(d) } catch { bar = undefined }
    if (bar === undefined || !Number.isFinite(bar.value) || bar.value <= 0) { skipped.push(`${label}: figure not found in ${bench}.json`); return }
    bars.push({ label, ...bar })
  }

  add('ingest', 'ingest: deployed gateway ÷ aedes, 8 pubs (≥ 0.9×)', (d) => {
    const results = arr(d.results).filter(isObj)
    const rate = (target: string): number | undefined => {
      const r = results.find((x) => x.target === target && x.publishers === 8)
      return r !== undefined && isObj(r.load) ? num(r.load.eventsPerSec) : undefined
    }
    const fromRatios = arr(d.ratios).filter(isObj).find((r) => r.target === 'gateway (deployed)' && r.peer === 'aedes (bare)' && r.publishers === 8)
    const gw = rate('gateway (deployed)')
    const aedes = rate('aedes (bare)')
    const ratio = num(fromRatios?.eventsPerSec) ?? (gw !== undefined && aedes !== undefined ? gw / aedes : undefined)
    if (ratio === undefined) return undefined
    return { value: ratio / 0.9, text: `${ratio.toFixed(2)}×` + (gw !== undefined ? ` (${perSec(gw)})` : '') }
  })

  add('drain', 'drain: events/s (≥ 250k)', (d) => {
    const rows = findResult(arr(d.results), 'drain')
    const first = rows.find((r) => num(r.eventsPerSec) !== undefined)
    const v = num(first?.eventsPerSec)
    if (v === undefined) return undefined
    const cfg = isObj(first?.config) ? first.config : {}
    return { value: v / 250_000, text: `${perSec(v)}` + (num(cfg.batchMaxEvents) !== undefined ? ` (batch ${fmt(cfg.batchMaxEvents)})` : '') }
  })

  add('drain', 'freshness: p99 ingest→subscriber (≤ 500 ms)', (d) => {
    const f = findResult(arr(d.results), 'freshness')[0]
    const p99 = isObj(f?.coreSubscriber) ? num(f.coreSubscriber.p99) : undefined
    if (p99 === undefined || p99 <= 0) return undefined
    return { value: 500 / p99, text: `${p99.toFixed(1)} ms` }
  })

  add('drain', 'freshness while draining: p99 (≤ 500 ms)', (d) => {
    const f = findResult(arr(d.results), 'freshnessWhileDraining')[0]
    const p99 = isObj(f?.coreSubscriber) ? num(f.coreSubscriber.p99) : undefined
    if (p99 === undefined || p99 <= 0) return undefined
    return { value: 500 / p99, text: `${p99.toFixed(1)} ms` }
  })

  add('decide', 'decide: p99 under load (≤ 2 ms)', (d) => {
    const r = arr(d.results).filter(isObj).find((x) => x.scenario === 'load')
    const p99Us = isObj(r?.decisionUs) ? num(r.decisionUs.p99) : undefined
    if (p99Us === undefined || p99Us <= 0) return undefined
    return { value: 2000 / p99Us, text: `${(p99Us / 1000).toFixed(2)} ms` }
  })

  const agg = data.get('aggregate')
  const replicaRows = agg === undefined ? [] : arr(agg.results).filter(isObj).filter((r) => /process/.test(str(r.target) ?? ''))
  if (replicaRows.length === 0) {
    add('aggregate', 'aggregate: per replica (≥ 150k ev/s)', () => undefined)
  } else {
    for (const r of replicaRows) {
      const n = num(r.replicas) ?? 1
      add('aggregate', `aggregate: per replica, ${n} replica${n === 1 ? '' : 's'} (≥ 150k)`, () => {
        const v = num(r.eventsPerSecPerReplica)
        return v === undefined ? undefined : { value: v / 150_000, text: perSec(v) }
      })
    }
  }

  add('footprint', 'footprint: outbox for 10M events (≤ 1 GB)', (d) => {
    const r = arr(d.results).filter(isObj).at(-1)
    const bytes = num(r?.projected10MBytes)
    if (bytes === undefined || bytes <= 0) return undefined
    const measured = num(r?.events)
    return { value: 1e9 / bytes, text: gb(bytes) + (measured !== undefined && measured < 10_000_000 ? ` (projected from ${fmt(measured)})` : '') }
  })

  // One bar per runtime (results before the compiled build have no runtime: the tsx gateway).
  for (const [runtime, target] of [['compiled', 150e6], ['tsx', 200e6]] as const) {
    add('memory', `memory: RSS with 10k devices, ${runtime} (≤ ${target / 1e6} MB)`, (d) => {
      const r = arr(d.results).filter(isObj).find((x) => (x.runtime ?? 'tsx') === runtime)
      const devices = num(r?.devices)
      const measured = devices !== undefined && devices >= 10_000 ? num(r?.rssAfterBytes) : undefined
      const bytes = measured ?? num(r?.projected10kBytes)
      if (bytes === undefined || bytes <= 0) return undefined
      return { value: target / bytes, text: mb(bytes) + (measured === undefined && devices !== undefined ? ` (projected from ${fmt(devices)})` : '') }
    })
  }

  return { bars, skipped }
}

/**
 * Reads every <resultsDir>/*.json and writes <resultsDir>/report.md and report.svg; returns the
 * path of report.md. `tables` are the printed tables of benchmarks run just now (the JSON files do
 * not store them); for the others a table is derived from their results.
 */
export function writeReport (resultsDir: string, tables: Record<string, Table> = {}): string {
  const files = existsSync(resultsDir) ? readdirSync(resultsDir).filter((f) => f.endsWith('.json')) : []
  const data = new Map<string, Json>()
  const unreadable: string[] = []
  for (const f of files) {
    try {
      const d: unknown = JSON.parse(readFileSync(join(resultsDir, f), 'utf8'))
      if (isObj(d)) data.set(str(d.bench) ?? f.replace(/\.json$/, ''), d)
      else unreadable.push(f)
    } catch {
      unreadable.push(f)
    }
  }
  const names = [...data.keys()].sort((a, b) => {
    const ia = ORDER.indexOf(a)
    const ib = ORDER.indexOf(b)
    return (ia < 0 ? ORDER.length : ia) - (ib < 0 ? ORDER.length : ib) || a.localeCompare(b)
  })

  const out: string[] = ['# Benchmark report', '']
  out.push(`Generated ${new Date().toISOString()} from ${names.length} result file(s) in bench-results/.`, '')

  // Machine: one row per distinct machine, with the benchmarks (and dates) measured on it.
  out.push('## Machine', '')
  const machines = new Map<string, string[]>()
  for (const name of names) {
    const m = isObj(data.get(name)?.machine) ? data.get(name)?.machine as Json : {}
    const key = JSON.stringify([m.cpuModel, m.cpuCount, m.totalMemBytes, m.node, m.os])
    const list = machines.get(key) ?? []
    list.push(name)
    machines.set(key, list)
  }
  const machineRows = [...machines].map(([key, list]) => {
    const [cpuModel, cpuCount, mem, node, os] = JSON.parse(key) as unknown[]
    return [fmt(cpuModel), fmt(cpuCount), num(mem) !== undefined ? `${((mem as number) / 2 ** 30).toFixed(1)} GiB` : '–', fmt(node), fmt(os), list.join(', ')]
  })
  out.push(mdTable(['CPU', 'cores', 'memory', 'node', 'OS', 'benchmarks'], machineRows), '')
  if (machines.size > 1) out.push('**The results come from more than one machine: compare them with care.**', '')
  const runRows = names.map((name) => {
    const d = data.get(name) as Json
    const settings = isObj(d.settings) ? d.settings : {}
    const mode = str(settings.mode) ?? '–'
    const versions = isObj(d.versions) ? Object.entries(d.versions).map(([k, v]) => `${k} ${fmt(v)}`).join(', ') : '–'
    return [name, fmt(d.date), mode, num(d.elapsedS) !== undefined ? `${(d.elapsedS as number).toFixed(1)} s` : '–', arr(d.failures).length === 0 ? 'none' : String(arr(d.failures).length), versions]
  })
  out.push(mdTable(['benchmark', 'date', 'mode', 'took', 'failures', 'library versions'], runRows), '')
  if (unreadable.length > 0) out.push(`Unreadable result files (skipped): ${unreadable.join(', ')}.`, '')

  // Chart.
  const { bars, skipped } = keyFigures(data)
  out.push('## Key figures against the targets', '')
  if (bars.length > 0) {
    writeFileSync(join(resultsDir, 'report.svg'), chartSvg(bars))
    out.push('![Key figures normalised to their targets](report.svg)', '')
    out.push('Each bar is the figure divided by its target (for "at most" targets: target ÷ figure), on a log scale; ' +
      'a bar reaching past the 1.0 line meets the target.', '')
    out.push(mdTable(['figure', 'measured', 'vs target', 'target met?'], bars.map((b) => [b.label, b.text, `${b.value.toFixed(2)}×`, b.value >= 1 ? 'yes' : 'no'])), '')
  }
  if (skipped.length > 0) out.push('Bars left out (figure missing):', '', ...skipped.map((s) => `- ${s}`), '')

  for (const name of names) {
    const d = data.get(name) as Json
    out.push(`## ${name}`, '')
    out.push(`Run ${fmt(d.date)}${isObj(d.settings) && str(d.settings.mode) !== undefined ? `, ${str(d.settings.mode) as string} mode` : ''}.`, '')
    const failures = arr(d.failures)
    if (failures.length > 0) out.push('**Failures (figures not trustworthy):**', '', ...failures.map((f) => `- ${fmt(f)}`), '')
    const table = tables[name] ?? (isTable(d.table) ? d.table : undefined)
    out.push('### Results', '')
    if (table !== undefined) {
      out.push(mdTable(table.columns, table.rows.map((r) => r.map((c) => String(c)))), '')
    } else {
      const derived = derivedTables(arr(d.results))
      if (derived.length === 0) out.push('No results.', '')
      else out.push('_Table derived from the stored results (the printed table is not kept in the JSON; it appears here for benchmarks run in the same invocation)._', '')
      for (const { kind, table: t } of derived) {
        if (derived.length > 1) out.push(`**${kind}**`, '')
        out.push(mdTable(t.columns, t.rows), '')
      }
    }
    const ratios = arr(d.ratios)
    out.push('### Ratios', '')
    out.push(ratios.length > 0 ? mdTable(['what', 'value', 'target met?'], ratioRows(ratios)) : 'None.', '')
    const notes = arr(d.notes)
    if (notes.length > 0) out.push('### Notes', '', ...notes.map((n) => `- ${fmt(n)}`), '')
  }

  const path = join(resultsDir, 'report.md')
  writeFileSync(path, out.join('\n'))
  return path
}
