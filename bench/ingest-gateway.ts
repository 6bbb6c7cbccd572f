// The gateway rows of the ingest benchmark: bare (no rules, no uplink) or as deployed (the example
// rule set loaded, the uplink live to a fresh nats-server with the streams provisioned as the cloud
// does). Each run is a fresh child on a fresh data directory, with its GC pauses traced (gc-trace.ts).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Database from 'better-sqlite3'
import { connect } from '@nats-io/transport-node'
import { parse } from 'yaml'
import { provisionStreams } from '../cloud/provision.ts'
import { spawnGateway, startNats, tempDir, waitFor, type NatsServer } from '../devkit/index.ts'
import { DEPLOYED_GATEWAY } from './bench-types.ts'
import { killOnExit, stopGateway } from './children.ts'
import { gcStats, gcTraceWrapper, type GcStats } from './gc-trace.ts'
import { runLoad, type LoadOptions, type LoadResult } from './load-client.ts'

/** The repo's example rule set: what an operator starts from, so what "as deployed" loads. */
export const EXAMPLE_RULES = 'deploy/gateway/rules.example.yaml'
const ROOT = fileURLToPath(new URL('..', import.meta.url))
/** After the load, how long the uplink may take to settle (outbox + acked stop changing). */
const SETTLE_TIMEOUT_MS = 30000

export interface GatewayTarget { name: string, durability: 'full' | 'normal', protocolVersion: 4 | 5, deployed: boolean }

export interface GatewayRun {
  load: LoadResult
  /** Events accounted for after the run: outbox rows (bare), or outbox rows + events JetStream acked (deployed). */
  counted: number
  countedAs: string
  gc: GcStats
  stderr: string
}

/** The sensors the example rule set names (rule devices first, then groups), in order: the deployed load's device ids. */
export function exampleRuleDevices (): string[] {
  const doc = parse(readFileSync(join(ROOT, EXAMPLE_RULES), 'utf8')) as { groups?: Record<string, string[]>, rules: Array<{ devices?: unknown }> }
  const ids = doc.rules.flatMap((r) => Array.isArray(r.devices) ? r.devices as string[] : [])
  for (const members of Object.values(doc.groups ?? {})) ids.push(...members)
  return [...new Set(ids)]
}

/** Runs one load against a fresh gateway child (and, deployed, a fresh nats-server). */
export async function runGatewayTarget (target: GatewayTarget, load: Omit<LoadOptions, 'port'>, sets: string[]): Promise<GatewayRun> {
  const data = tempDir('bench-ingest-')
  let nats: NatsServer | null = null
  try {
    const extra = [`outbox.durability=${target.durability}`]
    if (target.deployed) {
      nats = await startNats()
      const nc = await connect({ servers: nats.url })
      await provisionStreams(nc)
      await nc.close()
      extra.push(`rules.file=${join(ROOT, EXAMPLE_RULES)}`, `uplink.servers=${nats.url}`, 'http.port=0')
    }
    const trace = gcTraceWrapper(data.dir)
    const gw = await spawnGateway(data.dir, [...sets, ...extra], { ...DEPLOYED_GATEWAY, wrapper: trace.wrapper })
    const forget = killOnExit(gw.child.pid)
    try {
      if (target.deployed) await waitFor(async () => (await readyz(gw.ports.http!)).uplink?.link === 'up', 'gateway uplink to connect', 15000, 50)
      const result = await runLoad({ ...load, port: gw.ports.mqtt, targetPid: gw.child.pid, deviceIds: target.deployed ? exampleRuleDevices() : undefined })
      const gc = gcStats(trace.file, result.measuredFromEpochMs, result.measuredFromEpochMs + result.measuredMs)
      // Counted while the gateway is still up, before its graceful close could flush anything.
      const counted = target.deployed ? await settledAccount(gw.ports.http!) : countEvents(data.dir)
      const countedAs = target.deployed ? 'outbox rows + events acked by JetStream (gateway /readyz)' : 'rows in events'
      return { load: result, counted, countedAs, gc, stderr: gw.stderr().trim().slice(-2000) }
    } finally {
      await stopGateway(gw)
      forget()
    }
  } finally {
    await nats?.cleanup()
    data.cleanup()
  }
}

interface Readyz { outboxEvents?: number, uplink?: { link?: string, ackedEvents?: number } }

async function readyz (http: number): Promise<Readyz> {
  return await (await fetch(`http://127.0.0.1:${http}/readyz`)).json() as Readyz
}

/**
 * Rows still in the outbox + events the uplink saw JetStream acknowledge (a replicated row is
 * deleted), from one /readyz answer (both read in the same tick, so an event is in exactly one of
 * them), once two answers 200 ms apart agree: the uplink has finished what the load left.
 */
async function settledAccount (http: number): Promise<number> {
  let last = -1
  return await waitFor(async () => {
    const r = await readyz(http)
    const n = (r.outboxEvents ?? NaN) + (r.uplink?.ackedEvents ?? NaN)
    const settled = n === last ? n : null
    last = n
    return settled === null ? null : { n: settled }
  }, 'the uplink to settle after the load', SETTLE_TIMEOUT_MS, 200).then((v) => v.n)
}

function countEvents (dataDir: string): number {
  const db = new Database(join(dataDir, 'gateway.db'), { readonly: true, fileMustExist: true })
  try {
    return (db.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n
  } finally {
    db.close()
  }
}
