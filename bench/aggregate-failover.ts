// Failover of the aggregate benchmark (issue 19): two replicas (aggregate-replica.ts) under live
// load on a nats-server with the partition mapping; the replica holding partitions is SIGKILLed, and
// the time is taken from the kill to the survivor's first applied group in each of the victim's
// partitions (by the survivor's clock, same machine). A fresh replica then joins and, once the two
// share the partitions again, the next run kills the survivor of this one. The live load runs throughout.
import { jetstream } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { provisionStreams, provisionViews } from '../cloud/provision.ts'
import { startNats } from '../devkit/index.ts'
import { UNMAPPED_PARTITION, partitionMappingsConfig } from '../proto/index.ts'
import { liveLoad, type Settings } from './aggregate-load.ts'
import { ReplicaProc, sleep } from './aggregate-replicas.ts'

export interface FailoverResult { leaseTtlMs: number, runs: number[], p50Ms: number | null, maxMs: number | null, failures: string[] }

const LEASE_TTL_MS = 6000

const owned = (p: ReplicaProc): string[] => ((p.stats as unknown as { owned?: string[] }).owned ?? []).filter((id) => id !== UNMAPPED_PARTITION)
const lastApplied = (p: ReplicaProc, id: string): number => ((p.stats as unknown as { lastByPartition?: Record<string, number> }).lastByPartition ?? {})[id] ?? 0

async function until (cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs
  while (!cond()) {
    if (performance.now() > deadline) return false
    await sleep(10)
  }
  return true
}

export async function runFailover (s: Settings): Promise<FailoverResult> {
  const failures: string[] = []
  const runs: number[] = []
  const nats = await startNats({ config: partitionMappingsConfig(s.partitions) })
  const procs: ReplicaProc[] = []
  let loading = true
  let load: Promise<void> = Promise.resolve()
  try {
    const nc = await connect({ servers: nats.url })
    await provisionStreams(nc)
    await provisionViews(nc)
    const js = jetstream(nc)
    const seqs = new Array<number>(s.live.gateways).fill(0)
    load = (async () => { while (loading) await liveLoad(js, s.live, 1000, seqs, s.partitions) })()
    const join = async (): Promise<ReplicaProc> => {
      const p = new ReplicaProc(nats.url, s.partitions, LEASE_TTL_MS)
      await p.next('ready', 60_000)
      p.send('start')
      procs.push(p)
      return p
    }
    await join()
    await join()
    for (let run = 0; run < s.failoverRuns; run++) {
      const shared = await until(() => procs.every((p) => owned(p).length > 0) && procs.reduce((n, p) => n + owned(p).length, 0) === s.partitions, 60_000)
      if (!shared) { failures.push(`failover run ${run + 1}: the two replicas did not share the partitions within 60 s`); break }
      // The older one goes: each run kills the survivor of the run before.
      const [victim, survivor] = procs
      const lost = owned(victim)
      const killedAt = Date.now()
      victim.child.kill('SIGKILL')
      await victim.exited
      procs.splice(procs.indexOf(victim), 1)
      const back = await until(() => lost.every((id) => lastApplied(survivor, id) > killedAt), 60_000)
      if (!back) { failures.push(`failover run ${run + 1}: partitions ${lost.join(',')} not applied again within 60 s`); break }
      runs.push(Math.max(...lost.map((id) => lastApplied(survivor, id))) - killedAt)
      await join()
    }
    loading = false
    await load
    await nc.close()
  } finally {
    loading = false
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL')
    await Promise.all(procs.map((p) => p.exited))
    await nats.cleanup()
  }
  const sorted = [...runs].sort((a, b) => a - b)
  return { leaseTtlMs: LEASE_TTL_MS, runs, p50Ms: sorted.length ? sorted[Math.ceil(sorted.length / 2) - 1] : null, maxMs: sorted.length ? sorted[sorted.length - 1] : null, failures }
}
