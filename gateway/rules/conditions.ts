// Conditions compiled for the hot path. A rule's condition tree becomes CondNode objects (one class,
// so property access stays monomorphic) whose per-device state lives in a Scope: numeric slots in a
// Float64Array, windows and group members, all allocated when the scope is created and never on
// an event. The Evaluator walks a tree for one scope and one event (or a clock tick).
import type { Condition } from '../../proto/rules/schema.ts'
import { DEFAULT_WINDOW_POINTS } from '../../proto/rules/schema.ts'
import { SlidingWindow, TumblingWindow, type Agg } from './windows.ts'

const K_ABOVE = 0
const K_BELOW = 1
const K_RATE = 2
const K_WINDOW = 3
const K_STALE = 4
const K_GROUP = 5
const K_AND = 6
const K_OR = 7
const K_NOT = 8

/** The part of an ingested event the rules read (IncomingEvent from store/outbox-types.ts fits). */
export interface RuleEvent {
  deviceId: string
  eventTsMs: number
  ingestTsMs: number
  readings: ReadonlyArray<{ name: string, value: number }>
}

interface WindowSlot { tumbling: boolean, ms: number, agg: Agg, maxPoints: number }

/** How the state of one scope is laid out: initial numeric slots, windows, group nodes. */
export class Layout {
  readonly nums: number[] = []
  readonly windows: WindowSlot[] = []
  readonly groups: CondNode[] = []

  slot (initial: number): number {
    this.nums.push(initial)
    return this.nums.length - 1
  }
}

/** A compiled condition node; which fields matter depends on `kind`. */
export class CondNode {
  kind = 0
  /** Debounce: true only after the inner condition held this long (0 = none); `since` in nums[forSlot]. */
  forMs = 0
  forSlot = -1
  reading = ''
  /** Threshold and window: turns true past `level`, false again only past `release` (hysteresis). */
  level = 0
  release = 0
  /** For windows: compare the aggregate above (true) or below (false) the level. */
  above = true
  /** Latch (threshold/window/stale truth) or, for rate, the first of prev value, prev time, truth. */
  slot = -1
  windowSlot = -1
  perSecond = 0
  staleMs = 0
  children: CondNode[] = []
  inner: CondNode | null = null
  any = true
  groupSlot = -1
  members: string[] = []
  memberIndex: Map<string, number> = new Map()
  innerLayout: Layout | null = null
}

/** Truth of the members of a group for one site state, with a running count of true members. */
export class GroupState {
  readonly truth: Uint8Array
  trueCount = 0
  constructor (readonly scopes: Scope[]) {
    this.truth = new Uint8Array(scopes.length)
  }
}

/** The state of one condition tree for one device (or the site, for group rules). */
export class Scope {
  lastSeenMs: number
  readonly nums: Float64Array
  readonly windows: Array<TumblingWindow | SlidingWindow>
  readonly groups: GroupState[]

  constructor (readonly deviceId: string, layout: Layout, now: number, maxWindowPoints: number) {
    // A listed device that never reports still goes stale: its silence counts from now.
    this.lastSeenMs = now
    this.nums = Float64Array.from(layout.nums)
    this.windows = layout.windows.map((w) => w.tumbling
      ? new TumblingWindow(w.ms, w.agg, now)
      : new SlidingWindow(w.ms, w.agg, Math.min(w.maxPoints, maxWindowPoints)))
    this.groups = layout.groups.map((g) => new GroupState(g.members.map((m) => new Scope(m, g.innerLayout!, now, maxWindowPoints))))
  }
}

/** Compiles a validated condition into nodes, allocating its state slots in `layout`. */
export function compileCondition (c: Condition, layout: Layout, groups: Record<string, string[]>, extraForMs = 0): CondNode {
  const n = new CondNode()
  const r = c as unknown as Record<string, unknown>
  const forMs = (c.for ?? 0) + extraForMs
  if ('and' in c || 'or' in c) {
    n.kind = 'and' in c ? K_AND : K_OR
    n.children = ('and' in c ? c.and : c.or).map((x) => compileCondition(x, layout, groups))
  } else if ('not' in c) {
    n.kind = K_NOT
    n.children = [compileCondition(c.not, layout, groups)]
  } else if ('group' in c) {
    n.kind = K_GROUP
    n.any = c.any !== undefined
    n.members = [...new Set(groups[c.group])]
    n.members.forEach((m, i) => n.memberIndex.set(m, i))
    n.innerLayout = new Layout()
    n.inner = compileCondition((c.any ?? c.all)!, n.innerLayout, groups)
    n.groupSlot = layout.groups.length
    layout.groups.push(n)
  } else if ('stale' in c) {
    n.kind = K_STALE
    n.staleMs = c.stale.ms
    n.slot = layout.slot(0)
  } else if ('rateOfChange' in c) {
    n.kind = K_RATE
    n.reading = c.reading
    n.perSecond = c.rateOfChange.perSecond
    n.slot = layout.slot(NaN)
    layout.slot(NaN)
    layout.slot(0)
  } else {
    n.reading = r.reading as string
    const above = r.above !== undefined
    n.level = (above ? r.above : r.below) as number
    const h = (r.hysteresis as number | undefined) ?? 0
    n.release = above ? n.level - h : n.level + h
    n.above = above
    n.slot = layout.slot(0)
    if ('window' in c) {
      n.kind = K_WINDOW
      n.windowSlot = layout.windows.length
      layout.windows.push({ tumbling: c.window.kind === 'tumbling', ms: c.window.ms, agg: c.window.agg, maxPoints: c.window.maxPoints ?? DEFAULT_WINDOW_POINTS })
    } else {
      n.kind = above ? K_ABOVE : K_BELOW
    }
  }
  if (forMs > 0) {
    n.forMs = forMs
    n.forSlot = layout.slot(NaN)
  }
  return n
}

/** Every device id whose events can change a compiled tree (members of its group conditions). */
export function groupMembers (n: CondNode, out = new Set<string>()): Set<string> {
  if (n.kind === K_GROUP) for (const m of n.members) out.add(m)
  for (const c of n.children) groupMembers(c, out)
  return out
}

/**
 * Walks condition trees. Between begin() and the end of a walk it accumulates, without allocating,
 * the earliest time the result can change by the clock alone (`deadline`) and what triggered a
 * change (`reading`/`value` of the leaf that flipped, `flipDevice` of the group member that flipped).
 */
export class Evaluator {
  deadline = Infinity
  reading: string | undefined = undefined
  value = NaN
  flipped = false
  flipDevice: string | undefined = undefined
  /** Window points dropped at the cap, over the engine's life. */
  droppedPoints = 0

  begin (): void {
    this.deadline = Infinity
    this.reading = undefined
    this.value = NaN
    this.flipped = false
    this.flipDevice = undefined
  }

  /** Evaluates `n` for `scope` after consuming `ev` (null on a clock tick) at time `now`. */
  evalNode (n: CondNode, scope: Scope, ev: RuleEvent | null, now: number): boolean {
    let t = this.evalKind(n, scope, ev, now)
    if (n.forMs > 0) {
      const nums = scope.nums
      if (!t) {
        nums[n.forSlot] = NaN
      } else {
        let since = nums[n.forSlot]
        if (Number.isNaN(since)) nums[n.forSlot] = since = now
        if (now - since < n.forMs) {
          t = false
          if (since + n.forMs < this.deadline) this.deadline = since + n.forMs
        }
      }
    }
    return t
  }

  private evalKind (n: CondNode, scope: Scope, ev: RuleEvent | null, now: number): boolean {
    const nums = scope.nums
    switch (n.kind) {
      case K_ABOVE:
      case K_BELOW: {
        const i = ev === null ? -1 : findReading(ev, n.reading)
        if (i >= 0) this.latch(n, nums, ev!.readings[i].value, true)
        return nums[n.slot] === 1
      }
      case K_RATE: {
        const i = ev === null ? -1 : findReading(ev, n.reading)
        if (i >= 0) {
          const v = ev!.readings[i].value
          const prevV = nums[n.slot]
          const prevT = nums[n.slot + 1]
          const dt = (ev!.eventTsMs - prevT) / 1000
          // A repeated or out-of-order timestamp says nothing about the rate: it is skipped.
          if (Number.isNaN(prevT) || dt > 0) {
            const t = !Number.isNaN(prevV) && Math.abs(v - prevV) / dt >= n.perSecond
            this.note(n, v, t !== (nums[n.slot + 2] === 1))
            nums[n.slot + 2] = t ? 1 : 0
            nums[n.slot] = v
            nums[n.slot + 1] = ev!.eventTsMs
          }
        }
        return nums[n.slot + 2] === 1
      }
      case K_WINDOW: {
        const i = ev === null ? -1 : findReading(ev, n.reading)
        const w = scope.windows[n.windowSlot]
        let agg: number
        let changed = false
        if (w instanceof TumblingWindow) {
          changed = w.advance(now)
          if (i >= 0) w.add(ev!.readings[i].value)
          agg = w.closed
          if (w.end < this.deadline) this.deadline = w.end
        } else {
          w.expire(now)
          if (i >= 0 && w.add(now, ev!.readings[i].value)) this.droppedPoints++
          agg = w.value()
          changed = true
          const exp = w.nextExpiry()
          if (exp < this.deadline) this.deadline = exp
        }
        if (changed) this.latch(n, nums, agg, i >= 0)
        return nums[n.slot] === 1
      }
      case K_STALE: {
        const due = scope.lastSeenMs + n.staleMs
        const t = now >= due
        if (t !== (nums[n.slot] === 1)) {
          nums[n.slot] = t ? 1 : 0
          if (!this.flipped) { this.flipped = true; this.reading = undefined; this.value = NaN }
        }
        if (!t && due < this.deadline) this.deadline = due
        return t
      }
      case K_GROUP: {
        const g = scope.groups[n.groupSlot]
        if (ev !== null) {
          const i = n.memberIndex.get(ev.deviceId)
          if (i !== undefined) this.member(n, g, i, ev, now)
        } else {
          for (let i = 0; i < g.scopes.length; i++) this.member(n, g, i, null, now)
        }
        return n.any ? g.trueCount > 0 : g.trueCount === g.scopes.length
      }
      case K_AND: {
        // No short circuit: every leaf must consume the event to keep its state current.
        let t = true
        for (let i = 0; i < n.children.length; i++) if (!this.evalNode(n.children[i], scope, ev, now)) t = false
        return t
      }
      case K_OR: {
        let t = false
        for (let i = 0; i < n.children.length; i++) if (this.evalNode(n.children[i], scope, ev, now)) t = true
        return t
      }
      default:
        return !this.evalNode(n.children[0], scope, ev, now)
    }
  }

  private member (n: CondNode, g: GroupState, i: number, ev: RuleEvent | null, now: number): void {
    const s = g.scopes[i]
    if (ev !== null) s.lastSeenMs = now
    const t = this.evalNode(n.inner!, s, ev, now)
    if (t !== (g.truth[i] === 1)) {
      g.truth[i] = t ? 1 : 0
      g.trueCount += t ? 1 : -1
      this.flipDevice = s.deviceId
    }
  }

  // Hysteresis latch: above turns true past level and false only past release (below mirrors it);
  // without hysteresis it is a plain comparison. No value (NaN: an empty window) means "not met".
  private latch (n: CondNode, nums: Float64Array, v: number, fromEvent: boolean): void {
    const was = nums[n.slot] === 1
    let t: boolean
    const below = n.kind === K_BELOW || (n.kind === K_WINDOW && !n.above)
    if (Number.isNaN(v)) t = false
    else if (!was || n.release === n.level) t = below ? v < n.level : v > n.level
    else t = below ? !(v > n.release) : !(v < n.release)
    if (fromEvent || t !== was) this.note(n, v, t !== was)
    nums[n.slot] = t ? 1 : 0
  }

  // The trigger of a decision is the leaf that flipped; failing that, the first reading consumed.
  private note (n: CondNode, v: number, flipped: boolean): void {
    if (flipped ? !this.flipped : this.reading === undefined && !this.flipped) {
      this.reading = n.reading
      this.value = v
      if (flipped) this.flipped = true
    }
  }
}

// A reading that is not a finite number says nothing (ingest rejects them; this is defence): it
// must not clear a latch or poison a window's sum.
function findReading (ev: RuleEvent, name: string): number {
  const rs = ev.readings
  for (let i = 0; i < rs.length; i++) if (rs[i].name === name) return Number.isFinite(rs[i].value) ? i : -1
  return -1
}
