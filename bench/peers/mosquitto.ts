// Peer: Mosquitto (Debian package `mosquitto`), run from its binary with a config of its own, never
// the system service. Default settings except what a benchmark on loopback needs: one listener on
// 127.0.0.1:<free port>, anonymous clients allowed (the gateway bench runs with allowAnonymous too),
// persistence off (its default; QoS 1 state is kept in memory and PUBACK goes out on receipt, as with
// bare aedes' in-memory persistence), logging to stderr at error level only (no per-connection lines).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, spawnWithLifetime, waitForMqtt, type PeerBroker } from './external.ts'

export const MOSQUITTO = 'mosquitto'

/** The config file text used for the peer (also stored in the bench results). */
export function mosquittoConfig (port: number): string {
  return [
    `listener ${port} 127.0.0.1`,
    'allow_anonymous true',
    'persistence false',
    'log_dest stderr',
    'log_type error',
    'connection_messages false',
    '',
  ].join('\n')
}

/** Starts mosquitto on a free loopback port; resolves once it answers CONNECT with CONNACK. */
export async function startMosquitto (maxLifetimeMs: number): Promise<PeerBroker> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-mosquitto-'))
  try {
    const port = await freePort()
    const conf = join(dir, 'mosquitto.conf')
    writeFileSync(conf, mosquittoConfig(port))
    const proc = await spawnWithLifetime('mosquitto', ['-c', conf], maxLifetimeMs)
    try {
      await waitForMqtt(port, 10000, proc.alive, proc.output)
    } catch (err) {
      await proc.stop()
      throw err
    }
    return { name: MOSQUITTO, port, pid: proc.pid, stop: async () => { await proc.stop(); rmSync(dir, { recursive: true, force: true }) } }
  } catch (err) {
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
}
