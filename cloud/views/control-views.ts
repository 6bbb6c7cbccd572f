// The read side of the control views (decisions, alerts, commands, dead letters, per-device
// references, link health) and the two writes the API makes into them: an operator's alert acknowledgement and a
// command the cloud queued. Both writes use compare-and-set on the same documents the aggregator
// writes, so neither side loses the other's change.
import { ackAlert, DEFAULT_CONTROL_LIMITS, isAcknowledged, newCommandsDoc, newDeviceControlDoc, recordQueued, recordQueuedRef, type AlertEventEntry, type AlertState, type AlertsDoc, type CommandState, type CommandsDoc, type ControlLimits, type DeadLetterEntry, type DeadLettersDoc, type DecisionEntry, type DecisionsDoc, type DeviceAlertRef, type DeviceCommandRef, type DeviceControlDoc, type DeviceDecisionRef, type QueuedCommand } from '../apply/control/index.ts'
import { healthSamples, type HealthDoc, type HealthSample } from '../apply/gateway-docs.ts'
import { updateDoc, viewKeys, type ViewStore } from '../store/view-store.ts'

export interface AlertView extends Omit<AlertState, 'ack'> {
  gatewayId: string
  /** "active" or "cleared" (the same as `active`, as a word for display). */
  state: 'active' | 'cleared'
  /** The operator acknowledged the current raise. */
  acknowledged: boolean
  ack: AlertState['ack']
}
export interface AlertEventView extends AlertEventEntry { gatewayId: string }
export interface CommandView extends CommandState { gatewayId: string }
export interface DeviceControlView { gatewayId: string, deviceId: string, decisions: DeviceDecisionRef[], alerts: DeviceAlertRef[], commands: DeviceCommandRef[], deadLetters: DeadLetterEntry[] }

const SEVERITY_RANK: Record<string, number> = { critical: 0, warning: 1, info: 2 }

/** Active first, unacknowledged first, most severe first, newest first. */
function alertOrder (a: AlertView, b: AlertView): number {
  return Number(b.active) - Number(a.active) ||
    Number(a.acknowledged) - Number(b.acknowledged) ||
    (SEVERITY_RANK[a.severity] ?? 3) - (SEVERITY_RANK[b.severity] ?? 3) ||
    Math.max(b.raisedTsMs, b.clearedTsMs) - Math.max(a.raisedTsMs, a.clearedTsMs)
}

const alertView = (gatewayId: string, a: AlertState): AlertView => ({ gatewayId, ...a, state: a.active ? 'active' : 'cleared', acknowledged: isAcknowledged(a) })

export class ControlViews {
  private readonly limits: ControlLimits

  constructor (private readonly store: ViewStore, private readonly opts: { now: () => number, limits?: Partial<ControlLimits> }) {
    this.limits = { ...DEFAULT_CONTROL_LIMITS, ...opts.limits }
  }

  /**
   * Alerts of one gateway or of the fleet: the state per alert id (active only with `active`), ordered
   * for an operator (active, unacknowledged, severe, recent first), and the recent raise/clear events,
   * newest first (the live feed).
   */
  async alerts (q: { gatewayId?: string, active?: boolean, limit?: number } = {}): Promise<{ alerts: AlertView[], events: AlertEventView[] }> {
    const keys = q.gatewayId ? [viewKeys.alerts(q.gatewayId)] : await this.store.keys(['alr'])
    const docs = await Promise.all(keys.map((k) => this.store.get<AlertsDoc>(k)))
    const alerts: AlertView[] = []
    const events: AlertEventView[] = []
    for (const d of docs) {
      if (!d) continue
      for (const a of d.value.alerts) if (!q.active || a.active) alerts.push(alertView(d.value.gatewayId, a))
      for (const e of d.value.events) events.push({ gatewayId: d.value.gatewayId, ...e })
    }
    alerts.sort(alertOrder)
    events.sort((a, b) => b.tsMs - a.tsMs || b.seq - a.seq)
    const limit = q.limit ?? 500
    return { alerts: alerts.slice(0, limit), events: events.slice(0, limit) }
  }

  /** The operator acknowledges an alert's current raise; null when the gateway has no such alert. */
  async ack (gatewayId: string, alertId: string, by: string, note: string): Promise<AlertView | null> {
    const out: { alert: AlertState | null } = { alert: null }
    await updateDoc<AlertsDoc>(this.store, viewKeys.alerts(gatewayId), () => null, (doc) => {
      out.alert = ackAlert(doc, alertId, by, note, this.opts.now())
      return out.alert !== null
    })
    return out.alert ? alertView(gatewayId, out.alert) : null
  }

  /** Recent decisions of a gateway, newest (highest control seq) first. */
  async decisions (gatewayId: string, q: { deviceId?: string, limit?: number } = {}): Promise<DecisionEntry[] | null> {
    const d = await this.store.get<DecisionsDoc>(viewKeys.decisions(gatewayId))
    if (!d) return null
    const items = q.deviceId ? d.value.items.filter((x) => x.deviceId === q.deviceId) : d.value.items
    return items.slice(0, q.limit ?? items.length)
  }

  /** Recent dead letters of a gateway (optionally one device's), newest (highest control seq) first; null when it reported none. */
  async deadLetters (gatewayId: string, q: { deviceId?: string, limit?: number } = {}): Promise<DeadLetterEntry[] | null> {
    const d = await this.store.get<DeadLettersDoc>(viewKeys.deadLetters(gatewayId))
    if (!d) return null
    const items = q.deviceId ? d.value.items.filter((x) => x.deviceId === q.deviceId) : d.value.items
    return items.slice(0, q.limit ?? items.length)
  }

  /** Recent commands of a gateway, newest first. */
  async commands (gatewayId: string, q: { deviceId?: string, status?: string, limit?: number } = {}): Promise<CommandView[] | null> {
    const d = await this.store.get<CommandsDoc>(viewKeys.commands(gatewayId))
    if (!d) return null
    let list = d.value.commands
    if (q.deviceId) list = list.filter((c) => c.deviceId === q.deviceId)
    if (q.status) list = list.filter((c) => c.status === q.status)
    return list.slice(0, q.limit ?? list.length).map((c) => ({ gatewayId, ...c }))
  }

  /** One command with its timeline; null when unknown (never seen, or beyond the view's bound). */
  async command (gatewayId: string, commandId: string): Promise<CommandView | null> {
    const d = await this.store.get<CommandsDoc>(viewKeys.commands(gatewayId))
    const c = d?.value.commands.find((x) => x.commandId === commandId)
    return c ? { gatewayId, ...c } : null
  }

  /** Records a command the cloud has published for a gateway: status "queued" until the gateway reports. */
  async recordQueued (gatewayId: string, q: QueuedCommand): Promise<void> {
    await updateDoc<CommandsDoc>(this.store, viewKeys.commands(gatewayId), () => newCommandsDoc(gatewayId), (doc) => recordQueued(doc, q, this.limits))
    await updateDoc<DeviceControlDoc>(this.store, viewKeys.deviceControl(gatewayId, q.deviceId), () => newDeviceControlDoc(gatewayId, q.deviceId), (doc) => recordQueuedRef(doc, q, this.limits.deviceRefs))
  }

  /** A device's recent decisions, alerts and commands (references; details via the gateway's views). */
  async device (gatewayId: string, deviceId: string): Promise<DeviceControlView> {
    const d = await this.store.get<DeviceControlDoc>(viewKeys.deviceControl(gatewayId, deviceId))
    const doc = d?.value ?? newDeviceControlDoc(gatewayId, deviceId)
    return { gatewayId, deviceId, decisions: doc.decisions, alerts: doc.alerts, commands: doc.commands, deadLetters: doc.deadLetters ?? [] }
  }

  /** Link-health samples of a gateway, oldest first (optionally only those at or after `fromMs`). */
  async health (gatewayId: string, q: { fromMs?: number } = {}): Promise<HealthSample[] | null> {
    const d = await this.store.get<HealthDoc>(viewKeys.health(gatewayId))
    if (!d) return null
    const samples = healthSamples(d.value)
    return q.fromMs === undefined ? samples : samples.filter((s) => s.t >= q.fromMs!)
  }
}
