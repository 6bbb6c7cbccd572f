// What the API and the console show of the aggregator replicas, read from the lease table (so any
// replica answers the same): each registered replica with its partitions, lag and handovers, and the
// holder of every partition's lease. A replica counts as live while its registration is younger than
// three lease TTLs by this machine's clock (display only: ownership never depends on clocks).
import { partitionIds } from '../../proto/index.ts'
import type { LeaseTable, MemberDoc } from './lease-table.ts'

export interface ReplicasView {
  partitions: number
  replicas: Array<MemberDoc & { live: boolean, ageMs: number }>
  /** Per partition ('0'..P-1, 'u' unmapped): its holder ('' free) and whether the holder is live. */
  leases: Array<{ partition: string, owner: string, ownerLive: boolean }>
}

export async function readReplicas (table: LeaseTable, partitions: number, ttlMs: number, now = Date.now()): Promise<ReplicasView> {
  const [members, leases] = await Promise.all([table.members(), table.leases(partitionIds(partitions))])
  const replicas = members.map((m) => {
    const ageMs = Math.max(0, now - m.value!.atMs)
    return { ...m.value!, live: ageMs < 3 * ttlMs, ageMs }
  }).sort((a, b) => a.replicaId.localeCompare(b.replicaId))
  const live = new Set(replicas.filter((r) => r.live).map((r) => r.replicaId))
  return {
    partitions,
    replicas,
    leases: [...leases].map(([partition, l]) => ({ partition, owner: l.value?.owner ?? '', ownerLive: live.has(l.value?.owner ?? '') })),
  }
}
