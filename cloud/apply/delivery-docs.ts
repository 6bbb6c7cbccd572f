// The per-device delivery ledger in the cloud, write side: the marks each heartbeat carries (highest
// seq accepted at the gateway, highest replicated, oldest unsent age; iot.v1.DeviceDelivery) are
// stored in DELIVERY_SHARDS documents per gateway, a device's shard chosen by a hash of its id. So a
// gateway of 10,000 devices costs 16 documents, and a heartbeat (at most uplink.deliveryReportDevices
// devices) touches each of them at most once. What the cloud applied and which ranges were shed are
// not stored here: the views take them from the aggregator's own accounting (the device documents).
import type { DeviceDelivery } from '../../proto/index.ts'
import { DEVICE_ID } from '../../proto/ids.ts'
import { partitionOf } from '../../proto/index.ts'
import { viewKeys } from '../store/view-store.ts'
import type { ApplyContext } from './apply-context.ts'

/** Delivery documents per gateway. */
export const DELIVERY_SHARDS = 16
/** Devices one shard keeps (160k a gateway); beyond it the device reported longest ago is dropped. */
export const MAX_SHARD_DEVICES = 10_000

/** One device's marks as the cloud last heard them. */
export interface DeliveryMark {
  /** Highest seq accepted at the gateway, and highest replicated (acknowledged by JetStream). */
  accepted: number
  replicated: number
  /** Age of the oldest unsent event when reported (ms, 0 = none), and whether it is a bound (at most). */
  oldestUnsentAgeMs: number
  oldestUnsentAgeBound: boolean
  /** Cloud clock (ms): when the heartbeat that carried these marks was received. */
  reportedMs: number
}

export interface DeliveryDoc { v: 1, gatewayId: string, shard: number, devices: Record<string, DeliveryMark> }

/** The shard of a device's marks. */
export const deliveryShard = (deviceId: string): number => partitionOf(deviceId, DELIVERY_SHARDS)

/** Stores the marks of one heartbeat; returns how many were stored (ids that are not device ids are left out). */
export async function applyDeliveryMarks (ctx: ApplyContext, gatewayId: string, entries: DeviceDelivery[], receivedMs: number): Promise<number> {
  const byShard = new Map<number, DeviceDelivery[]>()
  for (const e of entries) {
    if (!e.deviceId || !DEVICE_ID.test(e.deviceId)) continue
    const shard = deliveryShard(e.deviceId)
    const list = byShard.get(shard)
    if (list) list.push(e)
    else byShard.set(shard, [e])
  }
  let stored = 0
  await Promise.all([...byShard].map(([shard, list]) => ctx.writer.update<DeliveryDoc>(viewKeys.delivery(gatewayId, shard), () => ({ v: 1, gatewayId, shard, devices: {} }), (doc) => {
    for (const e of list) {
      doc.devices[e.deviceId!] = {
        accepted: Number(e.acceptedSeq),
        replicated: Number(e.replicatedSeq),
        oldestUnsentAgeMs: Number(e.oldestUnsentAgeMs),
        oldestUnsentAgeBound: e.oldestUnsentAgeBound === true,
        reportedMs: receivedMs,
      }
    }
    trim(doc)
    return true
  }).then(() => { stored += list.length })))
  return stored
}

function trim (doc: DeliveryDoc): void {
  const ids = Object.keys(doc.devices)
  if (ids.length <= MAX_SHARD_DEVICES) return
  ids.sort((a, b) => doc.devices[a].reportedMs - doc.devices[b].reportedMs)
  for (const id of ids.slice(0, ids.length - MAX_SHARD_DEVICES)) delete doc.devices[id]
}
