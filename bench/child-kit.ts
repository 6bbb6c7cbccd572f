// What every benchmark child process (load clients, probes, peers) shares: its MQTT connect, its
// latency histogram, a sleep, and the IPC entry that never lets it outlive the parent.
import { build, type Histogram } from 'hdr-histogram-js'
import mqtt, { type MqttClient } from 'mqtt'

/** Microseconds, 3 significant digits; sized for a minute and auto-resizing beyond, so a stall is recorded rather than clipped. */
export function latencyHistogram (): Histogram {
  return build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 })
}

export async function sleep (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}

/** A load client's MQTT connection (3.1.1 unless told): no reconnect, so a dropped connection is counted, not hidden. */
export async function connectMqtt (port: number, clientId: string, protocolVersion: 4 | 5 = 4): Promise<MqttClient> {
  const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId, clean: true, reconnectPeriod: 0, connectTimeout: 10000, protocolVersion })
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve())
    client.once('error', (err) => { client.end(true); reject(err) })
    client.once('close', () => reject(new Error(`${clientId}: closed before CONNACK`)))
  })
  return client
}

/**
 * Runs `work` with the options the parent sends over IPC and sends back `reply(result)`. The parent
 * going away (crash, Ctrl-C) ends the run: the process must never outlive the bench.
 */
export function serveChild<O, R> (name: string, work: (opts: O) => Promise<R>, reply: (r: R) => unknown = (r) => r): void {
  process.once('disconnect', () => process.exit(1))
  process.once('message', (opts) => {
    work(opts as O).then(
      (r) => process.send!(reply(r), () => process.exit(0)),
      (err: Error) => { console.error(`${name}: ${(err as Error).message}`); process.exit(1) },
    )
  })
}
