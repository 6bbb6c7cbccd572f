// Child processes a benchmark starts: killed by PID if the bench itself exits early, so none
// outlives it, and a gateway child's graceful stop with a forced fallback.
import { type ChildGateway } from '../devkit/index.ts'

const live = new Set<number>()
let hooked = false

/** Kills `pid` when this process exits; returns the function that forgets it. */
export function killOnExit (pid: number | undefined): () => void {
  if (pid === undefined) return () => {}
  if (!hooked) {
    hooked = true
    process.on('exit', () => { for (const p of live) { try { process.kill(p, 'SIGKILL') } catch { /* already gone */ } } })
  }
  live.add(pid)
  return () => { live.delete(pid) }
}

/** SIGTERM (the gateway flushes and closes), SIGKILL if that takes longer than timeoutMs. */
export async function stopGateway (gw: ChildGateway, timeoutMs = 15000): Promise<void> {
  const forced = setTimeout(() => { void gw.kill('SIGKILL') }, timeoutMs)
  await gw.kill('SIGTERM')
  clearTimeout(forced)
}
