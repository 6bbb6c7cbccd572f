// A simulated actuator for tests, and the cold-room rule set that commands it.
import type { MqttClient } from 'mqtt'
import { connectDevice } from '../../devkit/index.ts'
import { commandAckTopic, commandTopic } from '../../proto/topics.ts'

export interface ReceivedCommand { id: string, name: string, args: Record<string, unknown> }

/**
 * An actuator on a real MQTT connection. A persistent session (clean: false), as actuators should
 * use: the gateway then also sees the PUBACK of each command and records it as delivered. It
 * acknowledges each command after a moment (acting takes time, so the PUBACK goes out first)
 * unless `ack` is false.
 */
export async function actuator (port: number, id: string, opts: { ack?: boolean } = {}): Promise<{ client: MqttClient, received: ReceivedCommand[] }> {
  const client = await connectDevice(port, { clientId: id, clean: false })
  const received: ReceivedCommand[] = []
  client.on('message', (_topic, payload) => {
    const cmd = JSON.parse(payload.toString()) as ReceivedCommand
    received.push(cmd)
    if (opts.ack === false) return
    setTimeout(() => {
      // The test may have ended the client meanwhile; mqtt.js throws on a publish after end().
      if (client.connected && !client.disconnecting) client.publish(commandAckTopic(id), JSON.stringify({ id: cmd.id, status: 'ok' }), { qos: 1 })
    }, 20)
  })
  await client.subscribeAsync(commandTopic(id), { qos: 1 })
  return { client, received }
}

/** room-1's temperature above `above` (hysteresis 1): cooler-1 on and an alert; below again: off and clear. */
export const coolerRules = (version: string, above: number): string => `
version: ${version}
rules:
  - id: cold-room-warm
    devices: [room-1]
    when: { reading: temperature, above: ${above}, hysteresis: 1 }
    then:
      - command: { device: cooler-1, name: cooler, args: { on: true } }
      - raiseAlert: { id: cold-room-warm, severity: critical, message: "cold room above ${above} C" }
    else:
      - command: { device: cooler-1, name: cooler, args: { on: false } }
      - clearAlert: { id: cold-room-warm }
`
