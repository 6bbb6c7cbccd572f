// The device fleet for the memory benchmark: N mqtt.js clients in one process, each a device that
// connects (MQTT 3.1.1, clean session, long keepalive so no PINGREQ traffic during the measurement)
// and subscribes to its own command topic, as real devices do. Connects in waves of `wave` clients,
// each wave waiting for every CONNACK and SUBACK before the next, so the gateway is never hit by
// 10k simultaneous handshakes. Prints one JSON line when all are connected, holds the connections
// until SIGTERM (or its lifetime cap: it is run under `timeout`), then exits.
// Usage (run by bench/memory.ts): memory-clients.ts <port> <count> <wave> <prefix>
import mqtt, { type MqttClient } from 'mqtt'
import { commandTopic } from '../proto/topics.ts'

const [port, count, wave] = process.argv.slice(2, 5).map(Number)
const prefix = process.argv[5] ?? 'mem'
const KEEPALIVE_S = 3600

async function device (id: string): Promise<MqttClient> {
  const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId: id, clean: true, keepalive: KEEPALIVE_S, reconnectPeriod: 0, connectTimeout: 30000, protocolVersion: 4 })
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve())
    client.once('error', (err) => { client.end(true); reject(new Error(`${id}: ${err.message}`)) })
    client.once('close', () => reject(new Error(`${id}: closed before CONNACK`)))
  })
  await client.subscribeAsync(commandTopic(id), { qos: 1 })
  return client
}

async function main (): Promise<void> {
  const clients: MqttClient[] = []
  let drops = 0
  let holding = false
  const t0 = performance.now()
  for (let i = 0; i < count; i += wave) {
    const ids = Array.from({ length: Math.min(wave, count - i) }, (_, k) => `${prefix}-${i + k}`)
    const batch = await Promise.all(ids.map(device))
    for (const c of batch) {
      c.on('close', () => { if (holding) drops++ })
      c.on('error', () => {})
      clients.push(c)
    }
  }
  holding = true
  console.log(JSON.stringify({ connected: clients.length, connectMs: performance.now() - t0, clientRssBytes: process.memoryUsage().rss }))
  const finish = (): void => {
    holding = false
    console.log(JSON.stringify({ done: true, drops }))
    for (const c of clients) c.end(true)
    process.exit(0)
  }
  process.once('SIGTERM', finish)
  // Drops while holding are reported as they happen, so the parent sees them before it stops us.
  setInterval(() => { if (drops > 0) console.log(JSON.stringify({ drops })) }, 1000)
}

main().catch((err: Error) => { console.log(JSON.stringify({ error: err.message })); process.exit(1) })
