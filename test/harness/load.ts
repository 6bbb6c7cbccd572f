// Device load for tests: QoS 1 publishes with a window, each carrying a unique counter `n`, and the
// set of `n` whose PUBACK arrived (what the gateway has promised to keep).
import type { MqttClient } from 'mqtt'
import { telemetryTopic } from '../../proto/topics.ts'

export interface DeviceLoad { acked: Set<number>, stop: () => void }

/** Publishes on the device's telemetry topic until stop(); `next` is shared across reconnects so `n` never repeats. */
export function loadDevice (client: MqttClient, deviceId: string, next: { n: number }, acked: Set<number>, opts: { window?: number, intervalMs?: number } = {}): DeviceLoad {
  let stopped = false
  const sendOne = (): void => {
    if (stopped || !client.connected) return
    const n = next.n++
    client.publish(telemetryTopic(deviceId), JSON.stringify({ n, temperature: 21.5 }), { qos: 1 }, (err) => {
      if (err) return
      acked.add(n)
      if (opts.intervalMs) setTimeout(sendOne, opts.intervalMs)
      else sendOne()
    })
  }
  for (let i = 0; i < (opts.window ?? 50); i++) sendOne()
  return { acked, stop: () => { stopped = true } }
}
