// What the main thread (uplink.ts) and the uplink thread (uplink-thread.ts) say to each other.
// Structured-clone shapes only: plain objects, arrays, strings and numbers.
import type { GatewayStatusProps } from '../../proto/index.ts'
import type { CloudCommand } from '../../proto/command.ts'
import type { GatewayConfig } from '../config.ts'
import type { AckedBatch, BatchToRecord } from '../store/inflight-ledger.ts'
import type { Watermark } from '../store/outbox-types.ts'
import type { CloudChannelState } from './cloud-channel.ts'
import type { DeliveryTotals } from './delivery-ledger.ts'
import type { LinkState } from './link.ts'
import type { ReplicatorStats } from './replicator.ts'

/** What the uplink thread starts with (workerData). */
export interface UplinkThreadData {
  /** The module the thread runs (thread-boot.mjs imports it). */
  entry: string
  gatewayId: string
  logLevel: string
  uplink: GatewayConfig['uplink']
  /** The outbox's database file, opened read-only by the thread. */
  dbFile: string
  epoch: string
  /** What is on disk when the thread starts, and the events buffered. */
  durable: Watermark
  events: number
  /** The budget's count of events shed (store/inflight-ledger.ts). */
  shedEvents: number
}

/** The uplink thread's state as the main thread mirrors it (/readyz, the heartbeat, tests). */
export interface UplinkSnapshot {
  link: { state: LinkState, lastError: string, server: string | null, tlsRequired: boolean }
  channel: { state: CloudChannelState, lastError: string }
  watchdog: { stalled: boolean, stalls: number }
  replicator: ReplicatorStats
  /** The per-device delivery ledger, summed (delivery-ledger.ts). */
  delivery: DeliveryTotals
}

export type ToThread =
  /** After each commit and each ack: what the thread may read, and whether anything is buffered. */
  | { t: 'outbox', durable: Watermark, events: number, shedEvents: number }
  /** The status for the next heartbeats (the thread fills in its own fields). */
  | { t: 'status', status: GatewayStatusProps }
  | { t: 'recorded', id: number, recorded: boolean[] } | { t: 'recordFailed', id: number, message: string }
  | { t: 'metrics', id: number }
  /** Fault injection (tests): the thread blocks, doing nothing at all, until flag[0] is set and notified. */
  | { t: 'hold', flag: SharedArrayBuffer }
  | { t: 'close' }

export type FromThread =
  | { t: 'record', id: number, batches: BatchToRecord[] }
  | { t: 'ack', batch: AckedBatch, snapshot: UplinkSnapshot }
  | { t: 'snapshot', snapshot: UplinkSnapshot }
  | { t: 'rules', text: string, revision: number }
  | { t: 'command', command: CloudCommand }
  /** One pino line of the thread's logger, for the main thread's log. */
  | { t: 'log', line: string }
  | { t: 'metrics', id: number, text: string }
  | { t: 'closed', snapshot: UplinkSnapshot }
