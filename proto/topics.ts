// The MQTT topic space and its access rules. Pure.
// A device publishes only devices/{id}/telemetry and devices/{id}/commands/ack, and subscribes only
// to devices/{id}/commands.

export { DEVICE_ID } from './ids.ts'

export type TopicKind = 'telemetry' | 'command_ack'

export const telemetryTopic = (deviceId: string): string => `devices/${deviceId}/telemetry`
export const commandTopic = (deviceId: string): string => `devices/${deviceId}/commands`
export const commandAckTopic = (deviceId: string): string => `devices/${deviceId}/commands/ack`

/** What a device may publish on `topic`: the kind, or null when it is outside its own topic space. */
export function publishKind (deviceId: string, topic: string): TopicKind | null {
  if (topic === telemetryTopic(deviceId)) return 'telemetry'
  if (topic === commandAckTopic(deviceId)) return 'command_ack'
  return null
}

/** Whether `topic` lies in the device's own topic space (devices/{id}/...) but is no topic the gateway knows. */
export function unknownOwnTopic (deviceId: string, topic: string): boolean {
  return topic.startsWith(`devices/${deviceId}/`) && publishKind(deviceId, topic) === null && topic !== commandTopic(deviceId)
}

/** Whether a device may subscribe to this topic filter (exactly its own command topic, no wildcards). */
export function maySubscribe (deviceId: string, filter: string): boolean {
  return filter === commandTopic(deviceId)
}
