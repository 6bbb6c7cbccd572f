// The replicas of every JetStream stream of the IOT account (streams and KV buckets), and the remedy
// for a node that does not catch up after a restart: a leader step-down. See deploy/README.md.
//
//   node dist/deploy/nats/streams.js [--servers url,...] [--user u --pass p] [--wait s]
//       [--step-down <stream>]... [--step-down-lagging]
//
// Prints one line per stream: leader, and each replica current or lagging (by how many operations).
// Exits 0 when every replica of every stream is current, 1 when some are not (after --wait seconds),
// 2 on a usage error. The connection defaults are the cloud's own variables (IOT_CLOUD_NATS__SERVERS,
// IOT_CLOUD_NATS__USER, IOT_CLOUD_NATS__PASS), so it runs with the cloud's environment file.
//
// Why a step-down: nats-server 2.9.10 can leave a restarted replica "stalled" in its catch-up
// (`Catchup for stream 'IOT > TELEMETRY' stalled` in its log, again every 10 s) while the leader's side
// of the catch-up no longer answers; later releases fixed several such cases. A new leader serves a
// fresh catch-up. The step-down asks the stream's leader to hand over ($JS.API.STREAM.LEADER.STEPDOWN);
// nothing is lost: the remaining replicas hold every acknowledged message (R3 needs 2 of 3).
import { parseArgs } from 'node:util'
import { jetstreamManager, type StreamInfo } from '@nats-io/jetstream'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { isMain } from '../../lib/is-main.ts'

export interface ReplicaState { name: string, current: boolean, offline: boolean, lag: number }
/** A stream as its leader sees it (JetStream API), and, with monitoring URLs, as each node stores it. */
export interface StreamReplicas {
  stream: string
  leader: string | null
  /** The leader first, then its peers as the leader reports them. */
  replicas: ReplicaState[]
  wanted: number
  /** Last sequence stored on each node that holds the stream (only with monitoring URLs). */
  stored: Map<string, number>
}

/**
 * Every stream of the account: leader, peers and, when `monitorUrls` are given (a node's `http`
 * port), the last sequence each node has stored. The leader's `current` flag is not enough on
 * nats-server 2.9.10: a replica restarted after SIGKILL was reported current while it still missed
 * 13,000 of 17,000 messages; what a node has stored (its /jsz) says whether it caught up.
 */
export async function streamReplicas (nc: NatsConnection, monitorUrls: readonly string[] = []): Promise<StreamReplicas[]> {
  const jsm = await jetstreamManager(nc)
  const stored = await storedByNode(monitorUrls)
  const out: StreamReplicas[] = []
  for await (const si of jsm.streams.list()) out.push(replicasOf(si, stored.get(si.config.name) ?? new Map()))
  return out.sort((a, b) => a.stream.localeCompare(b.stream))
}

/** stream -> node -> last sequence stored there, from each node's /jsz (nodes that do not answer are left out). */
async function storedByNode (monitorUrls: readonly string[]): Promise<Map<string, Map<string, number>>> {
  const out = new Map<string, Map<string, number>>()
  await Promise.all(monitorUrls.map(async (url) => {
    const get = async (path: string): Promise<any> => {
      const r = await fetch(`${url.replace(/\/$/, '')}${path}`, { signal: AbortSignal.timeout(5000) })
      if (!r.ok) throw new Error(`${url}${path}: HTTP ${r.status}`)
      return await r.json()
    }
    let varz: { server_name: string }, jsz: { account_details?: Array<{ stream_detail?: Array<{ name: string, state: { last_seq: number } }> }> }
    try { [varz, jsz] = await Promise.all([get('/varz'), get('/jsz?accounts=true&streams=true')]) } catch { return }
    for (const a of jsz.account_details ?? []) {
      for (const sd of a.stream_detail ?? []) {
        const m = out.get(sd.name) ?? new Map<string, number>()
        m.set(varz.server_name, sd.state.last_seq)
        out.set(sd.name, m)
      }
    }
  }))
  return out
}

function replicasOf (si: StreamInfo, stored: Map<string, number>): StreamReplicas {
  const leader = si.cluster?.leader ?? null
  const peers = (si.cluster?.replicas ?? []).map((r) => ({ name: r.name, current: r.current && !r.offline, offline: r.offline === true, lag: r.lag ?? 0 }))
  const replicas = leader === null ? [] : [{ name: leader, current: true, offline: false, lag: 0 }, ...peers]
  return { stream: si.config.name, leader, replicas, wanted: si.config.num_replicas, stored }
}

/** The leader's last sequence of every stream, from a report with stored sequences: what each replica must reach. */
export const catchUpTargets = (streams: StreamReplicas[]): Map<string, number> =>
  new Map(streams.map((s) => [s.stream, s.leader === null ? Infinity : s.stored.get(s.leader) ?? 0]))

/**
 * Every stream has a leader and as many current replicas as it asks for; with stored sequences and
 * `targets` (catchUpTargets of an earlier report), every replica has also stored up to its target.
 */
export function allCurrent (streams: StreamReplicas[], targets?: Map<string, number>): boolean {
  return streams.every((s) => {
    if (s.leader === null) return false
    if (s.wanted > 1 && s.replicas.filter((r) => r.current).length < s.wanted) return false
    if (!targets || s.stored.size === 0) return true
    const target = targets.get(s.stream) ?? 0
    return s.stored.size >= s.wanted && [...s.stored.values()].every((seq) => seq >= target)
  })
}

/** Asks the leader of `stream` to step down; resolves once the server accepted (an error names why not). */
export async function stepDown (nc: NatsConnection, stream: string): Promise<void> {
  const r = await nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${stream}`, undefined, { timeout: 5000 })
  const body = r.json<{ success?: boolean, error?: { code: number, description: string } }>()
  if (!body.success) throw new Error(`step-down of ${stream} refused: ${body.error?.description ?? JSON.stringify(body)}`)
}

export function formatReplicas (s: StreamReplicas): string {
  const top = s.leader === null ? 0 : s.stored.get(s.leader)
  const reps = s.replicas.map((r) => {
    const seq = s.stored.get(r.name)
    const behind = top !== undefined && seq !== undefined && seq < top ? ` ${top - seq} behind` : ''
    return `${r.name}${r.name === s.leader ? '*' : ''}=${r.current ? 'current' : r.offline ? 'offline' : `lagging(${r.lag})`}${seq === undefined ? '' : `@${seq}`}${behind}`
  })
  return `${s.stream.padEnd(12)} R${s.wanted} ${s.leader === null ? 'NO LEADER ' : ''}${reps.join(' ')}`
}

const USAGE = `usage: node dist/deploy/nats/streams.js [--servers url,...] [--user u --pass p]
         [--monitor url,...] [--wait s] [--step-down <stream>]... [--step-down-lagging]
  prints every stream's leader (*) and replicas; exit 0 when all are current, 1 when not, 2 on a usage error
  --servers            NATS URLs (default IOT_CLOUD_NATS__SERVERS, else nats://127.0.0.1:4222)
  --user, --pass       credentials (default IOT_CLOUD_NATS__USER, IOT_CLOUD_NATS__PASS): the cloud user
  --monitor            the nodes' monitoring URLs (their \`http\` port): also compare what each node has
                       stored with its leader (@last sequence, "N behind"); a replica counts as current
                       only once it holds what its leader held at the first look
  --wait s             wait up to s seconds for every replica to be current (default and least: 5)
  --step-down NAME     ask the leader of stream NAME to hand over to another replica (repeatable)
  --step-down-lagging  after the wait, step down the leader of every stream with a replica that is
                       still not current, then wait again`

async function main (argv: string[]): Promise<number> {
  let values
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        servers: { type: 'string' }, user: { type: 'string' }, pass: { type: 'string' }, monitor: { type: 'string' }, wait: { type: 'string' },
        'step-down': { type: 'string', multiple: true }, 'step-down-lagging': { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      },
    }))
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`)
    return 2
  }
  if (values.help) { console.log(USAGE); return 0 }
  const waitS = Number(values.wait ?? 0)
  if (!Number.isFinite(waitS) || waitS < 0) { console.error(`--wait: not a number of seconds: ${values.wait}\n${USAGE}`); return 2 }
  const env = process.env
  const urls = (list: string): string[] => list.split(',').map((x) => x.trim()).filter(Boolean)
  const servers = urls(values.servers ?? env.IOT_CLOUD_NATS__SERVERS ?? 'nats://127.0.0.1:4222')
  const monitor = urls(values.monitor ?? '')
  const nc = await connect({ servers, user: values.user ?? env.IOT_CLOUD_NATS__USER, pass: values.pass ?? env.IOT_CLOUD_NATS__PASS, name: 'streams.ts' })
  try {
    // What each replica must reach: what its leader held at the first look. A replica behind by the
    // messages in flight right now is not stuck, so the verdict waits for a later look (5 s at least).
    const targets = catchUpTargets(await streamReplicas(nc, monitor))
    const settle = async (seconds: number): Promise<StreamReplicas[]> => {
      const deadline = Date.now() + seconds * 1000
      for (;;) {
        await new Promise((resolve) => setTimeout(resolve, 500))
        const streams = await streamReplicas(nc, monitor)
        if (allCurrent(streams, targets) || Date.now() >= deadline) return streams
      }
    }
    let streams = await settle(Math.max(waitS, 5))
    // Step down what was asked by name, and with --step-down-lagging what did not catch up meanwhile.
    const down = new Set(values['step-down'] ?? [])
    if (values['step-down-lagging']) for (const s of streams) if (!allCurrent([s], targets)) down.add(s.stream)
    for (const stream of down) {
      await stepDown(nc, stream)
      console.log(`${stream}: leader stepped down`)
    }
    // A stream elects its new leader first, then serves the catch-up.
    if (down.size > 0) streams = await settle(Math.max(waitS, 10))
    for (const s of streams) console.log(formatReplicas(s))
    const ok = allCurrent(streams, targets)
    if (!ok) console.log('some replicas are not current: see deploy/README.md, "A node that does not catch up"')
    return ok ? 0 : 1
  } finally {
    await nc.close()
  }
}

if (isMain(import.meta.url)) {
  main(process.argv.slice(2)).then((code) => process.exit(code), (err) => { console.error(`streams.ts: ${(err as Error).message}`); process.exit(1) })
}
