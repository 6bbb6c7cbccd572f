// The pure apply logic of control events (decisions, alerts, command outcomes, dead letters): how they change the
// per-gateway and per-device control documents. No I/O here; the aggregator loads, calls, and writes
// back with compare-and-set, exactly as for telemetry.
//
// Every document is idempotent and order-independent on its own, by the control seq of the event:
//   - bounded lists keep the N highest seqs ever applied (an entry already there, or older than
//     everything a full list keeps, changes nothing), so the same set of events gives the same list
//     whatever the order, the duplicates or the replica;
//   - an alert's state is max(seq) of its raises against max(seq) of its clears;
//   - a command's status is the status of its highest-seq event, its timeline the events by seq.
// The bounds on alert ids and commands drop whole entries (cleared alerts first; commands by lowest
// first seq): within the bounds the documents do not depend on order; at the margin a very late
// event of an entry already dropped may bring back a partial one. That is the price of a bound.
// The (gateway, "$control", seq) dedupe state and accounting live in a DeviceDoc (../apply.ts) under
// viewKeys.control, written after these, like a device document after its rollups.
//
// One module per document: events.ts (the event, bounds, shared helpers), decisions.ts, alerts.ts,
// commands.ts, dead-letters.ts, device-refs.ts. Link health and apply lag are not control events: ../gateway-docs.ts.
export { DEFAULT_CONTROL_LIMITS, dedupeEvent, insertTopN, parseDetail, type ControlEv, type ControlLimits } from './events.ts'
export { applyDecisions, newDecisionsDoc, type DecisionActionView, type DecisionEntry, type DecisionsDoc, type DecisionTriggerView } from './decisions.ts'
export { ackAlert, applyAlerts, isAcknowledged, newAlertsDoc, type AlertAck, type AlertEventEntry, type AlertsDoc, type AlertState } from './alerts.ts'
export { applyCommands, newCommandsDoc, recordQueued, TERMINAL_STATUSES, type CommandState, type CommandsDoc, type CommandStatus, type QueuedCommand, type TimelineEntry } from './commands.ts'
export { applyDeadLetters, newDeadLettersDoc, type DeadLetterEntry, type DeadLettersDoc } from './dead-letters.ts'
export { applyDeviceControl, newDeviceControlDoc, recordQueuedRef, type DeviceAlertRef, type DeviceCommandRef, type DeviceControlDoc, type DeviceDecisionRef } from './device-refs.ts'
