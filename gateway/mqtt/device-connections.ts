// Who may hold a connection as a device: the client id must be the device's (mqtt.clientIdPattern,
// default exactly the device id), no longer than mqtt.maxClientIdBytes, and a device holds at most
// mqtt.maxConnectionsPerDevice client ids at once. Without this, a device with its own valid
// credentials could connect under another device's client id and take its session over, again and
// again, or fill mqtt.maxConnections for everyone. A reconnect with a client id already connected
// is the standard MQTT takeover (the old connection gets 0x8E) and is not an extra connection.
import type { Client } from 'aedes'
import type { ConnectRefusal } from './answers.ts'

/** What binds a client id to a device. */
export interface ClientIdRules {
  /** `{device}` stands for the device id, `*` for up to 64 characters of [A-Za-z0-9_.-]. */
  clientIdPattern: string
  maxClientIdBytes: number
  maxConnectionsPerDevice: number
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

export class DeviceConnections {
  /** device id -> client id -> the connected client holding it. */
  private readonly byDevice = new Map<string, Map<string, Client>>()
  private readonly literal: boolean

  constructor (private readonly rules: ClientIdRules) {
    this.literal = rules.clientIdPattern === '{device}'
  }

  /** Whether a client id of this length may connect at all (checked before any credentials). */
  lengthOk (clientId: string): boolean {
    return Buffer.byteLength(clientId) <= this.rules.maxClientIdBytes
  }

  /** Why `client` may not connect as `deviceId`, or null when it may (it is then counted until its socket closes). */
  admit (client: Client, deviceId: string): ConnectRefusal | null {
    if (!this.bound(client.id, deviceId)) return 'client_id_not_bound'
    let held = this.byDevice.get(deviceId)
    if (held && !held.has(client.id) && held.size >= this.rules.maxConnectionsPerDevice) return 'device_connection_limit'
    if (!held) this.byDevice.set(deviceId, held = new Map())
    held.set(client.id, client)
    client.conn.once('close', () => this.release(client, deviceId))
    return null
  }

  /** Client ids connected for `deviceId` now. */
  count (deviceId: string): number {
    return this.byDevice.get(deviceId)?.size ?? 0
  }

  private bound (clientId: string, deviceId: string): boolean {
    if (this.literal) return clientId === deviceId
    const re = new RegExp('^' + this.rules.clientIdPattern.split('{device}').map((part) => part.split('*').map(escape).join('[A-Za-z0-9_.-]{0,64}')).join(escape(deviceId)) + '$')
    return re.test(clientId)
  }

  // A takeover replaces the holder of a client id before the old socket closes: only the holder releases it.
  private release (client: Client, deviceId: string): void {
    const held = this.byDevice.get(deviceId)
    if (!held || held.get(client.id) !== client) return
    held.delete(client.id)
    if (held.size === 0) this.byDevice.delete(deviceId)
  }
}
