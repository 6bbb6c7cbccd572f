// The contracts shared by gateway/, cloud/ and simulators/: generated protobuf classes (iot.v1).
import protobuf from 'protobufjs/minimal.js'
import { iot } from './gen/iot.js'

// 64-bit fields decode to plain numbers: sequence numbers and ms timestamps stay far below 2^53.
protobuf.util.Long = undefined as never
protobuf.configure()

export const v1 = iot.v1
export type TelemetryEvent = iot.v1.TelemetryEvent
export type DeviceReport = iot.v1.DeviceReport
export type Gap = iot.v1.Gap
export type ReplicationBatch = iot.v1.ReplicationBatch
export type ControlEventProps = iot.v1.ControlEvent.$Properties
/** device_id of every ControlEvent: the gateway's control sequence is kept under this name. */
export const CONTROL_DEVICE_ID = '$control'
export type GatewayStatus = iot.v1.GatewayStatus
export type DeviceDelivery = iot.v1.IDeviceDelivery
export { subjects, STREAMS, CLOUD_BUCKETS } from './subjects.ts'
export { MAX_PARTITIONS, PARTITIONED_LANES, UNMAPPED_PARTITION, partitionFilter, partitionIds, partitionMappings, partitionMappingsConfig, partitionOf, type PartitionedLane } from './partitions.ts'
export type GatewayStatusProps = iot.v1.GatewayStatus.$Properties
