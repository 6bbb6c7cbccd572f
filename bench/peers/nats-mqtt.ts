// Peer: nats-server's own MQTT listener (Debian package `nats-server`), run from its binary with a
// config of its own: a server_name and JetStream (both required by the MQTT listener), file store in
// a fresh temporary directory, `mqtt { host, port }` on a free loopback port, monitoring on another.
// Everything else is default.
// Durability: nats-server (2.9) stores a QoS 1 PUBLISH in its $MQTT_msgs JetStream stream only when a
// QoS 1 subscription matches it; with no subscriber it PUBACKs without storing anything (measured:
// 0 messages in JetStream after 60k PUBACKs). So that the peer does what the gateway does (keep every
// accepted event until a consumer takes it), one persistent session (clean=false) subscribes QoS 1 to
// devices/+/telemetry and disconnects before the load starts: every publish is then stored in
// JetStream (file store, default sync policy: written, not fsync'd per message) before its PUBACK,
// and nothing is delivered during the run. storedMessages() reads JetStream's message count for the
// count check (JetStream messages gained >= PUBACKs seen).
// (lib/nats-launcher.ts startNats() would do too, but runs the server without a lifetime cap; this
// goes through spawnWithLifetime so the server ends by itself even if the bench is killed.)
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { freePort, spawnWithLifetime, waitForMqtt, type PeerBroker } from './external.ts'

export const NATS_MQTT = 'nats-server mqtt'
/** The offline durable session whose subscription makes nats-server store every telemetry publish. */
export const NATS_SINK = { clientId: 'bench-durable-sink', clean: false, filter: 'devices/+/telemetry', qos: 1 } as const

export interface NatsMqttPeer extends PeerBroker {
  /** Messages held in JetStream over all streams (from the monitoring endpoint), or null if unreadable. */
  storedMessages: () => Promise<number | null>
}

/** The config text used for the peer (the store directory is filled in at start). */
export function natsMqttConfig (mqttPort: number, httpPort: number, storeDir: string): string {
  return [
    'server_name: bench_mqtt_peer',
    'listen: 127.0.0.1:-1',
    `http: 127.0.0.1:${httpPort}`,
    `jetstream { store_dir: ${JSON.stringify(storeDir)} }`,
    `mqtt { host: 127.0.0.1, port: ${mqttPort} }`,
    '',
  ].join('\n')
}

/** Starts nats-server with JetStream and its MQTT listener; resolves once MQTT answers CONNACK. */
export async function startNatsMqtt (maxLifetimeMs: number): Promise<NatsMqttPeer> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-nats-mqtt-'))
  try {
    const port = await freePort()
    const httpPort = await freePort()
    const conf = join(dir, 'nats-server.conf')
    writeFileSync(conf, natsMqttConfig(port, httpPort, join(dir, 'store')))
    const proc = await spawnWithLifetime('nats-server', ['-c', conf], maxLifetimeMs)
    try {
      await waitForMqtt(port, 15000, proc.alive, proc.output)
      const sink = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: NATS_SINK.clientId, clean: NATS_SINK.clean, reconnectPeriod: 0, connectTimeout: 10000, protocolVersion: 4 })
      await sink.subscribeAsync(NATS_SINK.filter, { qos: NATS_SINK.qos })
      await sink.endAsync()
    } catch (err) {
      await proc.stop()
      throw err
    }
    return {
      name: NATS_MQTT,
      port,
      pid: proc.pid,
      stop: async () => { await proc.stop(); rmSync(dir, { recursive: true, force: true }) },
      storedMessages: async () => {
        try {
          const jsz = await (await fetch(`http://127.0.0.1:${httpPort}/jsz`)).json() as { messages?: number }
          return jsz.messages ?? null
        } catch { return null }
      },
    }
  } catch (err) {
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
}
