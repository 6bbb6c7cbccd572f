// Benchmark entry point: `npm run bench -- [name ...] [--quick] [--scenarios a,b]`. Runs the named benchmarks (all
// by default), prints a table for each and writes bench-results/<name>.json with the machine, the
// library versions, the settings, every result and the ratios against peers measured in the same run.
// It builds dist/ first: the gateway runs as deployed, compiled.
import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, totalmem, platform, release } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { decide, DECIDE_SCENARIOS } from './decide.ts'
import { drain } from './drain.ts'
import { ingest } from './ingest.ts'
import { aggregate } from './aggregate.ts'
import { footprint } from './footprint.ts'
import { history } from './history.ts'
import { memory } from './memory.ts'
import { writeReport } from './report.ts'
import type { Bench, BenchOptions, BenchReport } from './bench-types.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const RESULTS_DIR = join(ROOT, 'bench-results')


/** Every known benchmark, by the name given on the command line. */
const BENCHES: Record<string, Bench> = { ingest, drain, aggregate, footprint, decide, memory, history }

const LIBRARIES = ['aedes', 'mqtt', 'better-sqlite3', '@nats-io/transport-node', '@nats-io/jetstream']

function machine (): Record<string, unknown> {
  const cpu = cpus()
  return { os: `${platform()} ${release()}`, cpuModel: cpu[0]?.model ?? 'unknown', cpuCount: cpu.length, totalMemBytes: totalmem(), node: process.version }
}

function versions (): Record<string, string> {
  return Object.fromEntries(LIBRARIES.map((name) => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }
    return [name, pkg.version]
  }))
}

function formatTable (columns: string[], rows: string[][]): string {
  const widths = columns.map((c, i) => Math.max(c.length, ...rows.map((r) => r[i].length)))
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i])).join(' | ')
  return [line(columns), widths.map((w) => '-'.repeat(w)).join('-|-'), ...rows.map(line)].join('\n')
}

async function main (): Promise<void> {
  const { values, positionals } = parseArgs({ options: { quick: { type: 'boolean', default: false }, scenarios: { type: 'string' } }, allowPositionals: true })
  const names = positionals.length > 0 ? positionals : Object.keys(BENCHES)
  const unknown = names.filter((n) => !(n in BENCHES))
  if (unknown.length > 0) {
    console.error(`unknown benchmark(s): ${unknown.join(', ')}; known: ${Object.keys(BENCHES).join(', ')}`)
    process.exit(2)
  }
  const scenarios = values.scenarios?.split(',').filter((s) => s !== '')
  if (scenarios !== undefined) {
    const wrong = names.some((n) => n !== 'decide') ? 'only decide has scenarios: name it alone' : scenarios.filter((s) => !DECIDE_SCENARIOS.includes(s)).map((s) => `unknown scenario ${s}`).join('; ')
    if (wrong !== '') {
      console.error(`--scenarios: ${wrong}; decide's: ${DECIDE_SCENARIOS.join(', ')}`)
      process.exit(2)
    }
  }
  // The gateway runs as deployed, from dist/ (bench-types.ts DEPLOYED_GATEWAY): build the checkout first.
  execFileSync(process.execPath, [join(ROOT, 'deploy/build.mjs')], { cwd: ROOT, stdio: 'inherit' })
  mkdirSync(RESULTS_DIR, { recursive: true })
  const env = { machine: machine(), versions: versions() }
  const tables: Record<string, BenchReport['table']> = {}
  for (const name of names) {
    const t0 = performance.now()
    const report = await BENCHES[name]({ quick: values.quick, scenarios })
    const elapsedS = (performance.now() - t0) / 1000
    console.log(`\n== ${name} (${values.quick ? 'quick' : 'full'}, ${elapsedS.toFixed(1)} s; ${env.machine.cpuCount as number} x ${env.machine.cpuModel as string}, node ${process.version})`)
    console.log(formatTable(report.table.columns, report.table.rows))
    for (const note of report.notes) console.log(`  - ${note}`)
    for (const failure of report.failures) console.log(`\n!!! ${failure}`)
    if (report.failures.length > 0) process.exitCode = 1
    const file = join(RESULTS_DIR, `${name}.json`)
    const { table: _table, ...data } = report
    tables[name] = report.table
    writeFileSync(file, JSON.stringify({ bench: name, date: new Date().toISOString(), elapsedS, ...env, ...data }, null, 2) + '\n')
    console.log(`  results: bench-results/${name}.json`)
  }
  writeReport(RESULTS_DIR, tables)
  console.log('\nreport: bench-results/report.md (chart: bench-results/report.svg)')
}

await main()
