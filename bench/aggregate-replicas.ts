// The aggregate benchmark's replica rows: aggregator replicas as their own processes
// (aggregate-replica.ts), each with its own connection, sharing the partitions' durable consumers and
// the KV views as cloud replicas do; optionally each held to the same CPU share (cpu-cgroup.ts). A
// row drains the backlog (apply rate), then measures end-to-end latency under live load.
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { JetStreamClient } from '@nats-io/jetstream'
import { killOnExit } from './children.ts'
import { capCpu, type CpuCap } from './cpu-cgroup.ts'
import { cpuMeter, otherCpuPct } from './proc-cpu.ts'
import { liveLoad, type Settings } from './aggregate-load.ts'

export const TARGET_PER_REPLICA = 150_000
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const REPLICA_SCRIPT = 'bench/aggregate-replica.ts'
/** Busy CPU outside the measured processes above which a row is flagged as skewed (% of a core). */
export const OTHER_CPU_WARN_PCT = 15

interface Replica { pid: number, applied: number, eventsPerSec: number, conflicts: number, duplicates: number, flushes: number }
interface Latency {
  batches: number
  events: number
  publishErrors: number
  p50Ms: number | null
  p99Ms: number | null
  maxMs: number | null
  /** p50 of the first and of the second half of the window (by observation order): a rise means the replicas fall behind. */
  p50FirstHalfMs: number | null
  p50SecondHalfMs: number | null
  /** Batches per apply group and groups per second over the window (all replicas). */
  meanBatchesPerGroup: number | null
  groupsPerSec: number
  casConflicts: number
  achievedRatePerSec: number
  /** % of one core per process over the live window; other = the rest of the machine. */
  cpuPct: Record<string, number | null>
}
export interface Result {
  target: string
  replicas: number
  /** CPU cap of each replica process (cores), or null when uncapped. */
  cpuCapCores: number | null
  events: number
  seconds: number
  eventsPerSec: number
  eventsPerSecPerReplica: number
  meanGroupApplyMs: number | null
  conflicts: number | null
  perReplica: Replica[] | null
  latency: Latency | null
  /** % of one core per process while draining the backlog; other = the rest of the machine. */
  cpuPct: Record<string, number | null>
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
export const round = (x: number, digits: number): number => Math.round(x * 10 ** digits) / 10 ** digits

/** A replica process and the latest of its JSON lines. */
export class ReplicaProc {
  readonly child: ChildProcess
  stats: Record<string, number> = {}
  private readonly waiters: Array<{ type: string, resolve: (m: Record<string, unknown>) => void }> = []
  stderr = ''
  private readonly forget: () => void

  constructor (url: string, partitions: number, leaseTtlMs?: number) {
    this.child = spawn(process.execPath, ['--import', 'tsx', REPLICA_SCRIPT, url, String(partitions), ...(leaseTtlMs ? [String(leaseTtlMs)] : [])], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] })
    this.forget = killOnExit(this.child.pid)
    this.child.stderr!.on('data', (d: Buffer) => { this.stderr = (this.stderr + d.toString()).slice(-4000) })
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      let m: Record<string, unknown>
      try { m = JSON.parse(line) as Record<string, unknown> } catch { return }
      if (m.type === 'stats' || m.type === 'done') this.stats = m as Record<string, number>
      for (let i = this.waiters.length - 1; i >= 0; i--) {
        if (this.waiters[i].type === m.type) this.waiters.splice(i, 1)[0].resolve(m)
      }
    })
    this.exited = new Promise((resolve) => this.child.once('exit', () => { this.forget(); resolve() }))
  }

  readonly exited: Promise<void>

  next (type: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`replica ${this.child.pid}: no '${type}' within ${timeoutMs} ms; stderr: ${this.stderr}`)), timeoutMs)
      this.waiters.push({ type, resolve: (m) => { clearTimeout(timer); resolve(m) } })
    })
  }

  send (cmd: string): void { this.child.stdin!.write(cmd + '\n') }

  async stop (): Promise<Record<string, unknown>> {
    const done = this.next('done', 15_000)
    this.send('stop')
    try {
      return await done
    } catch (err) {
      if (this.child.exitCode === null) this.child.kill('SIGKILL')
      throw err
    }
  }
}

/** Rounded CPU shares plus what the machine spent outside the named processes. */
export function cpuShares (cpu: Record<string, number | null>, names: string[]): Record<string, number | null> {
  const out: Record<string, number | null> = {}
  for (const n of names) out[n] = cpu[n] === null || cpu[n] === undefined ? null : Math.round(cpu[n]!)
  const other = otherCpuPct(cpu, names)
  out.other = other === null ? null : Math.round(other)
  return out
}

/**
 * Waits (at most maxMs) until the machine is quiet outside the given processes: the filled stream's
 * writeback and the replicas' start-up otherwise land in the first measured second. Returns the
 * busy CPU outside them in the last sample (% of a core).
 */
export async function settle (pids: Record<string, number | null>, maxMs = 3000): Promise<number | null> {
  const deadline = performance.now() + maxMs
  let other: number | null = null
  do {
    const meter = cpuMeter(pids)
    await sleep(250)
    other = otherCpuPct(meter.stop(), Object.keys(pids))
  } while (other !== null && other > OTHER_CPU_WARN_PCT && performance.now() < deadline)
  return other
}

function quantile (sorted: number[], q: number): number | null {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]
}

/** n replica processes on one backlog: apply rate, then e2e latency under live load. */
export async function runReplicas (url: string, natsPid: number | null, js: JetStreamClient, n: number, s: Settings, failures: string[], capCores: number | null = null): Promise<Result> {
  const target = `aggregator x${n} process${n > 1 ? 'es' : ''}, KV store${capCores === null ? '' : `, ${capCores} core each`}`
  const procs = Array.from({ length: n }, () => new ReplicaProc(url, s.partitions))
  const caps: CpuCap[] = []
  try {
    await Promise.all(procs.map((p) => p.next('ready', 60_000)))
    if (capCores !== null) for (const p of procs) caps.push(capCpu(p.child.pid!, capCores))
    const applied = (): number => procs.reduce((sum, p) => sum + (p.stats.applied ?? 0), 0)
    const pids: Record<string, number | null> = { nats: natsPid, bench: process.pid }
    procs.forEach((p, i) => { pids[`replica${i}`] = p.child.pid ?? null })
    const names = Object.keys(pids)
    await settle(pids)
    const meter = cpuMeter(pids)
    for (const p of procs) p.send('start')
    const deadline = performance.now() + s.drainTimeoutMs
    while (applied() < s.backlogEvents && performance.now() < deadline) await sleep(5)
    const drained = applied()
    const cpuPct = cpuShares(meter.stop(), names)
    if (drained < s.backlogEvents) failures.push(`${target}: only ${drained} of ${s.backlogEvents} events applied within ${s.drainTimeoutMs} ms`)
    // From the first group applied to the last, by the replicas' own clocks (same machine): the
    // replicas' start (one lease tick, so that they share the partitions from the first group on) is
    // not apply time.
    const t0 = Math.min(...procs.map((p) => p.stats.firstAppliedWallMs || Infinity))
    const t1 = Math.max(...procs.map((p) => p.stats.lastAppliedWallMs ?? 0))
    const seconds = Math.max(1, t1 - t0) / 1000
    const perReplica: Replica[] = procs.map((p) => ({
      pid: p.child.pid ?? -1,
      applied: p.stats.applied ?? 0,
      eventsPerSec: Math.round((p.stats.applied ?? 0) / seconds),
      conflicts: p.stats.conflicts ?? 0,
      duplicates: p.stats.duplicates ?? 0,
      flushes: p.stats.flushes ?? 0,
    }))
    if (drained > s.backlogEvents) failures.push(`${target}: ${drained} events applied for a backlog of ${s.backlogEvents} (applied twice?)`)

    // Live load: warm-up, then the measured window, then wait until it is all applied.
    const seqs = new Array<number>(s.live.gateways).fill(0)
    const warm = await liveLoad(js, s.live, s.live.warmupMs, seqs, s.partitions)
    const sumStat = (k: string): number => procs.reduce((sum, p) => sum + (p.stats[k] ?? 0), 0)
    const before = { batches: sumStat('batches'), flushes: sumStat('flushes'), conflicts: sumStat('conflicts') }
    for (const p of procs) p.send('lat-begin')
    const liveMeter = cpuMeter(pids)
    const live = await liveLoad(js, s.live, s.live.durationMs, seqs, s.partitions)
    const liveCpu = cpuShares(liveMeter.stop(), names)
    const expected = s.backlogEvents + warm.events + live.events - warm.errors - live.errors
    const liveDeadline = performance.now() + 10_000
    while (applied() < expected && performance.now() < liveDeadline) await sleep(10)
    if (applied() < expected) failures.push(`${target}: live load: ${applied()} of ${expected} events applied 10 s after the load stopped`)
    const lat = await Promise.all(procs.map(async (p) => { const m = p.next('lat'); p.send('lat-end'); return ((await m).seconds as number[]).map((x) => x * 1000) }))
    const window = { batches: sumStat('batches') - before.batches, flushes: sumStat('flushes') - before.flushes, conflicts: sumStat('conflicts') - before.conflicts }
    const ms = lat.flat().sort((a, b) => a - b)
    const half = (first: boolean): number[] => lat.flatMap((v) => first ? v.slice(0, v.length >> 1) : v.slice(v.length >> 1)).sort((a, b) => a - b)
    if (warm.errors + live.errors > 0) failures.push(`${target}: ${warm.errors + live.errors} live batches not acknowledged by JetStream`)
    const latency: Latency = {
      batches: ms.length,
      events: live.events,
      publishErrors: warm.errors + live.errors,
      p50Ms: quantile(ms, 0.5),
      p99Ms: quantile(ms, 0.99),
      maxMs: ms.length ? ms[ms.length - 1] : null,
      p50FirstHalfMs: quantile(half(true), 0.5),
      p50SecondHalfMs: quantile(half(false), 0.5),
      meanBatchesPerGroup: window.flushes > 0 ? round(window.batches / window.flushes, 1) : null,
      groupsPerSec: round(window.flushes / (s.live.durationMs / 1000), 1),
      casConflicts: window.conflicts,
      achievedRatePerSec: Math.round(live.events / (live.ms / 1000)),
      cpuPct: liveCpu,
    }
    const finals = await Promise.all(procs.map((p) => p.stop()))
    // While draining the backlog; those under live load are in latency.casConflicts.
    const conflicts = perReplica.reduce((sum, p) => sum + p.conflicts, 0)
    const dups = finals.reduce((sum, f) => sum + Number(f.duplicates ?? 0), 0)
    if (dups > 0) failures.push(`${target}: ${dups} events counted as duplicates (none were sent twice)`)
    return {
      target,
      replicas: n,
      cpuCapCores: capCores,
      events: drained,
      seconds: round(seconds, 3),
      eventsPerSec: Math.round(drained / seconds),
      eventsPerSecPerReplica: Math.round(drained / seconds / n),
      meanGroupApplyMs: null,
      conflicts,
      perReplica,
      latency,
      cpuPct,
    }
  } finally {
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL')
    await Promise.all(procs.map((p) => p.exited))
    for (const c of caps) c.remove()
  }
}
