// CPU caps for benchmark child processes: one cgroup v1 `cpu` group per process with a CFS quota
// (cpu.cfs_quota_us / cpu.cfs_period_us), so that replicas compared against each other get the same
// CPU share on a machine with fewer cores than replicas. Needs root and the v1 cpu controller at
// /sys/fs/cgroup/cpu (this machine kind has both); a group is removed once its process has exited.
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const ROOT = '/sys/fs/cgroup/cpu'
const PERIOD_US = 100_000

/** Why caps cannot be set here, or null when they can. */
export function cgroupUnavailable (): string | null {
  if (!existsSync(join(ROOT, 'cgroup.procs'))) return `no cgroup v1 cpu controller at ${ROOT}`
  if (process.getuid?.() !== 0) return 'not root: cannot create cpu cgroups'
  return null
}

export interface CpuCap { readonly path: string, remove: () => void }

/** Puts `pid` (all its threads) in a new cpu group capped at `cores` (e.g. 0.3 = 30% of one core). */
export function capCpu (pid: number, cores: number, name = `iot-bench-${pid}`): CpuCap {
  const path = join(ROOT, name)
  mkdirSync(path)
  writeFileSync(join(path, 'cpu.cfs_period_us'), String(PERIOD_US))
  writeFileSync(join(path, 'cpu.cfs_quota_us'), String(Math.round(cores * PERIOD_US)))
  writeFileSync(join(path, 'cgroup.procs'), String(pid))
  return {
    path,
    remove: () => {
      // A group can be removed only when empty: move whatever is left back to the root group first.
      try {
        for (const p of readFileSync(join(path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) writeFileSync(join(ROOT, 'cgroup.procs'), p)
      } catch { /* gone already */ }
      try { rmdirSync(path) } catch { /* gone already */ }
    },
  }
}
