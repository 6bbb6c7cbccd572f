// Which partitions a replica should take and which it should hand over, from what it sees in the
// lease table: pure, so that every rule here is tested without NATS (test/cloud-partitions.test.ts).
//
// The rule: with N live replicas and P partitions, each replica's fair share is ceil(P / N). A
// replica over its share hands over the excess; a replica under it takes free partitions (never
// owned, released, or whose owner stopped renewing) up to its share. Shares sum to at least P, so
// every partition finds an owner, and no replica ever holds more than ceil(P / N). When a replica is
// below floor(P / N) and nothing is free (2 + 2 + 0 of 4), those above the floor hand one over and
// leave what is free to it, so every replica ends with floor or ceil of P / N. Spare partitions
// (the unmapped one, idle while the servers map every gateway) are outside the shares: any replica
// takes a free one, so a replica holds at most ceil(P / N) + 1 in all. Free partitions
// are tried in an order that differs per replica (a rendezvous hash), so that replicas starting
// together mostly try different ones instead of all racing for the first.

export interface LeaseView {
  /** Owner's replica id, or '' when released or never owned. */
  owner: string
  /** The owner stopped renewing (its revision stood still for the lease TTL). */
  lapsed: boolean
}

export interface BalanceInput {
  me: string
  /** The partitions shared out, in order. */
  ids: string[]
  /** Partitions outside the shares: taken by whoever finds them free, never handed over to balance. */
  spare?: string[]
  /** Live replicas (this one included). */
  members: string[]
  leases: Map<string, LeaseView>
  /** The partitions this replica holds now. */
  owned: Set<string>
}

export interface BalancePlan { take: string[], release: string[], fairShare: number }

export function fairShare (partitions: number, members: number): number {
  return Math.ceil(partitions / Math.max(1, members))
}

export function balance (input: BalanceInput): BalancePlan {
  const { me, ids, owned } = input
  const members = new Set([...input.members, me])
  const share = fairShare(ids.length, members.size)
  const low = Math.floor(ids.length / members.size)
  const isFree = (id: string): boolean => {
    if (owned.has(id)) return false
    const l = input.leases.get(id)
    // Its own lease from an earlier run under the same replica id is its to take back at once.
    return !l || l.owner === '' || l.lapsed || l.owner === me
  }
  // Another live replica below the floor share (e.g. 2 + 2 + 0 of 4): those at more than the floor
  // make room for it, and leave what is free to it.
  const held = new Map<string, number>([...members].map((m) => [m, 0]))
  for (const id of ids) {
    const l = input.leases.get(id)
    if (l && !l.lapsed && held.has(l.owner) && l.owner !== me) held.set(l.owner, held.get(l.owner)! + 1)
  }
  const starving = [...held].some(([m, n]) => m !== me && n < low)
  const spare = (input.spare ?? []).filter(isFree)
  const mine = ids.filter((id) => owned.has(id))
  const keep = mine.length > share ? share : starving && mine.length > low ? low : mine.length
  if (keep < mine.length) {
    // Hand over the ones it ranks lowest for itself (others rank them differently).
    const order = mine.sort((a, b) => rank(me, b) - rank(me, a))
    return { take: spare, release: order.slice(0, mine.length - keep), fairShare: share }
  }
  const room = starving && mine.length >= low ? 0 : share - mine.length
  const free = ids.filter(isFree).sort((a, b) => rank(me, a) - rank(me, b))
  return { take: [...free.slice(0, room), ...spare], release: [], fairShare: share }
}

/** A per-(replica, partition) pseudo-random rank: FNV-1a of "replica/partition". */
function rank (replica: string, id: string): number {
  let h = 0x811c9dc5
  for (const c of `${replica}/${id}`) {
    h ^= c.charCodeAt(0)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h
}
