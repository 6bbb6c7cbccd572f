// What makes a gateway a problem, and how bad: used to sort the fleet (problems first) and to
// highlight rows. Thresholds are operator-facing defaults: a backlog is "large" from 10k events or
// from a minute behind, critical from 10 minutes behind.
import { offlineText } from '../health.js'

const BACKLOG_WARN_EVENTS = 10_000
const LAG_WARN_MS = 60_000
const LAG_BAD_MS = 10 * 60_000

/** [{ level: 'bad' | 'warn', text }] for one gateway view, worst first. */
export function problemsOf (g) {
  const out = []
  const lag = lagOf(g)
  if (!g.online) out.push({ level: 'bad', text: offlineText(g) })
  if (g.linkState === 'refused') out.push({ level: 'bad', text: 'uplink refused' })
  else if (g.online && g.uplinkStalled) out.push({ level: 'bad', text: 'uplink stalled: connected, nothing acknowledged (reconnecting)' })
  else if (g.online && g.linkState && g.linkState !== 'up') out.push({ level: 'warn', text: `uplink ${g.linkState}` })
  if (g.online && g.notDrainingSinceMs) out.push({ level: 'bad', text: `backlog not draining while connected (since ${new Date(g.notDrainingSinceMs).toLocaleTimeString()})` })
  if (lag >= LAG_BAD_MS) out.push({ level: 'bad', text: 'over 10 min behind' })
  else if (lag >= LAG_WARN_MS || g.backlogEvents >= BACKLOG_WARN_EVENTS) out.push({ level: 'warn', text: 'large backlog' })
  if (g.online && g.cloudChannelState && g.cloudChannelState !== 'attached') out.push({ level: 'warn', text: `rules and commands channel ${g.cloudChannelState}${g.cloudChannelError ? `: ${g.cloudChannelError}` : ''}` })
  if (g.shedEventsTotal > 0) out.push({ level: 'warn', text: 'events shed' })
  if (g.lastError) out.push({ level: 'warn', text: g.lastError })
  return out.sort((a, b) => rank(b.level) - rank(a.level))
}

/** How far the cloud is behind the gateway: the cloud's measure when it gives one, else the backlog's age. */
export const lagOf = (g) => g.replicationLagMs ?? (g.backlogEvents > 0 ? g.oldestUnsentAgeMs : 0) ?? 0

const rank = (level) => level === 'bad' ? 2 : level === 'warn' ? 1 : 0

/** Severity of a gateway: 2 bad, 1 warn, 0 fine. */
export const severity = (g) => Math.max(0, ...problemsOf(g).map((p) => rank(p.level)))

/** Problems first (worst first), then by backlog age, then by id. */
export function sortProblemsFirst (gateways) {
  return [...gateways].sort((a, b) => severity(b) - severity(a) || lagOf(b) - lagOf(a) || a.gatewayId.localeCompare(b.gatewayId))
}
