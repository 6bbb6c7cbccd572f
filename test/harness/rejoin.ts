// Waits for a restarted cluster node to hold every stream again (deploy/nats/streams.ts): the leader
// reports every replica current and every node has stored what the leader held at the restart.
import type { NatsConnection } from '@nats-io/transport-node'
import { waitFor, type NatsCluster } from '../../devkit/index.ts'
import { allCurrent, formatReplicas, catchUpTargets, streamReplicas, type StreamReplicas } from '../../deploy/nats/streams.ts'

/** Resolves with the final report once `node` (just restarted) is current on every stream of `replicas`. */
export async function waitRejoined (cluster: NatsCluster, nc: NatsConnection, node: string, opts: { streams?: number, replicas?: number, timeoutMs?: number } = {}): Promise<StreamReplicas[]> {
  // The monitoring port of a restarted node changes: ask for the URLs on every look.
  const monitors = (): string[] => cluster.nodes.map((n) => n.monitorUrl)
  // What each stream's leader held when this began; a stream without a leader yet (an election after
  // a step-down) gets its target from the first report that names one, not Infinity for ever.
  const targets = new Map<string, number>()
  const takeTargets = (all: StreamReplicas[]): void => {
    for (const [stream, seq] of catchUpTargets(all)) if (!targets.has(stream) && Number.isFinite(seq)) targets.set(stream, seq)
  }
  // Right after a restart the JetStream API may time out: then the targets come from the first
  // report that answers (later, so at least what the leaders held at the restart).
  try { takeTargets(await streamReplicas(nc, monitors())) } catch { /* taken in the loop below */ }
  let last: StreamReplicas[] = []
  try {
    return await waitFor(async () => {
      const all = last = await streamReplicas(nc, monitors())
      takeTargets(all)
      if (all.some((s) => !targets.has(s.stream))) return null
      const rejoined = all.every((s) => s.wanted === (opts.replicas ?? 3) && s.stored.has(node) && s.replicas.some((r) => r.name === node && r.current))
      return all.length >= (opts.streams ?? 5) && rejoined && allCurrent(all, targets) ? all : null
    }, `every stream to be current on all replicas again after ${node} restarted`, opts.timeoutMs ?? 120000, 500)
  } catch (err) {
    throw new Error(`${(err as Error).message}; last seen: ${last.map(formatReplicas).join('; ')}`)
  }
}
