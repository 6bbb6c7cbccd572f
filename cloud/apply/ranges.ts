// Sorted, disjoint, non-adjacent inclusive ranges of sequence numbers: the compact form of "which
// seqs have we seen". A device's seqs mostly arrive in order, so the common case (append at the end)
// is O(1); out-of-order arrivals use a binary search. Plain arrays so the state is JSON as it is.

/** [from, to] inclusive. */
export type Range = [number, number]

/** Index of the first range whose end is >= x (ranges.length if none). */
function lowerBound (ranges: Range[], x: number): number {
  let lo = 0
  let hi = ranges.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (ranges[mid][1] < x) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** True when x lies in one of the ranges. */
export function contains (ranges: Range[], x: number): boolean {
  const i = lowerBound(ranges, x)
  return i < ranges.length && ranges[i][0] <= x
}

/** Adds one seq; returns false if it was already present. */
export function addOne (ranges: Range[], x: number): boolean {
  const n = ranges.length
  if (n > 0) {
    const last = ranges[n - 1]
    if (x === last[1] + 1) { last[1] = x; return true }
    if (x > last[1] + 1) { ranges.push([x, x]); return true }
  } else {
    ranges.push([x, x])
    return true
  }
  const i = lowerBound(ranges, x)
  const r = ranges[i]
  if (r[0] <= x) return false
  // x sits before ranges[i] (and after ranges[i - 1]): extend a neighbour, merge, or insert.
  const prev = i > 0 ? ranges[i - 1] : null
  const joinsPrev = prev !== null && prev[1] + 1 === x
  const joinsNext = r[0] - 1 === x
  if (joinsPrev && joinsNext) { prev![1] = r[1]; ranges.splice(i, 1) } else if (joinsPrev) prev![1] = x
  else if (joinsNext) r[0] = x
  else ranges.splice(i, 0, [x, x])
  return true
}

/** Adds [a, b]; returns how many seqs were not present before. */
export function addRange (ranges: Range[], a: number, b: number): number {
  if (b < a) return 0
  const i = lowerBound(ranges, a - 1)
  let j = i
  let from = a
  let to = b
  let covered = 0
  // Merge every range that overlaps or touches [a, b].
  while (j < ranges.length && ranges[j][0] <= b + 1) {
    const r = ranges[j]
    covered += Math.max(0, Math.min(r[1], b) - Math.max(r[0], a) + 1)
    from = Math.min(from, r[0])
    to = Math.max(to, r[1])
    j++
  }
  ranges.splice(i, j - i, [from, to])
  return (b - a + 1) - covered
}

/** How many seqs of [a, b] the ranges hold. */
export function overlap (ranges: Range[], a: number, b: number): number {
  let n = 0
  for (let i = lowerBound(ranges, a); i < ranges.length && ranges[i][0] <= b; i++) {
    n += Math.min(ranges[i][1], b) - Math.max(ranges[i][0], a) + 1
  }
  return n
}

/** Total seqs held. */
export function size (ranges: Range[]): number {
  let n = 0
  for (const r of ranges) n += r[1] - r[0] + 1
  return n
}

/** Drops everything <= x. */
export function dropUpTo (ranges: Range[], x: number): void {
  let k = 0
  while (k < ranges.length && ranges[k][1] <= x) k++
  if (k > 0) ranges.splice(0, k)
  if (ranges.length > 0 && ranges[0][0] <= x) ranges[0][0] = x + 1
}
