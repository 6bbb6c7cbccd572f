// CPU time of a process and of the whole machine from /proc (Linux), to tell which process sets a
// benchmark's figure. Null where there is no /proc, so the figure is simply left out.
import { readFileSync } from 'node:fs'

/** utime + stime of a process in ms (clock ticks of USER_HZ = 100 on Linux). */
export function procCpuMs (pid: number | null | undefined): number | null {
  if (pid === undefined || pid === null) return null
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name, which is in parentheses and may itself contain spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) * 10
  } catch {
    return null
  }
}

/**
 * A process's main thread (the one whose id is the pid: its event loop) from
 * /proc/<pid>/task/<pid>/schedstat: ms on a CPU, ms runnable but waiting for one (the run queue:
 * what the machine's scheduling adds to a latency) and how many times it was put on a CPU, or null
 * without schedstats.
 */
export function threadSchedMs (pid: number | null | undefined): { cpu: number, wait: number, slices: number } | null {
  if (pid === undefined || pid === null) return null
  try {
    const [onCpuNs, waitNs, slices] = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').trim().split(/\s+/).map(Number)
    return Number.isFinite(onCpuNs) && Number.isFinite(waitNs) && Number.isFinite(slices) ? { cpu: onCpuNs / 1e6, wait: waitNs / 1e6, slices } : null
  } catch {
    return null
  }
}

/** Busy time of the whole machine in ms, summed over cores, from the first line of /proc/stat. */
export function machineBusyMs (): number | null {
  try {
    // user nice system idle iowait irq softirq steal ...; idle and iowait are not busy.
    const ticks = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1, 9).map(Number)
    return (ticks.reduce((a, b) => a + b, 0) - ticks[3] - ticks[4]) * 10
  } catch {
    return null
  }
}

/**
 * A CPU meter over an interval: % of one core used by each named process between the call and
 * stop(), plus `machine` (all cores together, so up to 100 x cores) to tell what else was busy.
 */
export function cpuMeter (pids: Record<string, number | null | undefined>): { stop: () => Record<string, number | null> } {
  const t0 = performance.now()
  const read = (): Record<string, number | null> => ({ ...Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, procCpuMs(pid)])), machine: machineBusyMs() })
  const before = read()
  return {
    stop: () => {
      const ms = performance.now() - t0
      const after = read()
      return Object.fromEntries(Object.keys(after).map((k) => {
        const a = before[k]
        const b = after[k]
        return [k, a !== null && b !== null && ms > 0 ? (b - a) / ms * 100 : null]
      }))
    },
  }
}

/** Busy CPU not accounted for by the named processes (% of one core), or null when unknown. */
export function otherCpuPct (cpu: Record<string, number | null | undefined>, names: string[]): number | null {
  const machine = cpu.machine
  if (machine === null || machine === undefined) return null
  let known = 0
  for (const n of names) known += cpu[n] ?? 0
  return Math.max(0, machine - known)
}
