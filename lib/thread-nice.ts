// Lowers the calling thread's CPU priority. On Linux each thread is scheduled on its own and a nice
// value applies to one thread (setpriority on its thread id), so a worker thread that does bulk work
// (the uplink's drain) yields the CPU to the event loop that serves devices and decisions whenever
// both want it, and still uses all the CPU nobody else wants. The thread id is the target of
// /proc/thread-self. Elsewhere it does nothing and says why.
import { readlinkSync } from 'node:fs'
import { setPriority } from 'node:os'

export type NiceResult = { ok: true, tid: number, nice: number } | { ok: false, reason: string }

export function niceThisThread (nice: number): NiceResult {
  if (nice === 0) return { ok: false, reason: 'nice 0 asked: left as it is' }
  if (process.platform !== 'linux') return { ok: false, reason: `per-thread priority is Linux only (here ${process.platform})` }
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop())
    if (!Number.isInteger(tid) || tid <= 0) return { ok: false, reason: 'no thread id in /proc/thread-self' }
    setPriority(tid, nice)
    return { ok: true, tid, nice }
  } catch (err) {
    return { ok: false, reason: (err as Error).message }
  }
}
