// A 3-node (or n-node) JetStream cluster on loopback for tests: each node is a startNats() server with
// a cluster block in its config. Route ports must be known before any node starts (every node lists
// the others' routes), so they are picked by binding port 0 first; client ports the same way, so that
// a node restarted after a kill comes back on its old port.
import { createServer } from 'node:net'
import { startNats, type NatsServer } from '../lib/nats-launcher.ts'
import { waitFor } from '../lib/wait-for.ts'

export interface NatsClusterOptions {
  /** Number of nodes (default 3). */
  size?: number
  /** Extra config text for every node (accounts, limits…). */
  config?: string
  /** How long to wait for the JetStream meta group to elect a leader with every node current (ms). */
  readyTimeoutMs?: number
  /**
   * Keep the nodes from telling clients each other's URLs (`no_advertise`): a client then uses only
   * the URLs it was given, e.g. proxies in front of every node, and never goes around them.
   */
  noAdvertise?: boolean
}

export interface NatsCluster {
  readonly nodes: NatsServer[]
  /** server_name of each node, in the order of `nodes` (n1, n2, …). */
  readonly names: string[]
  /** Client URLs of every node. */
  readonly urls: string[]
  /** The node with this server_name. */
  node: (name: string) => NatsServer
  /** Client URLs of the nodes that are running. */
  liveUrls: () => string[]
  /** Stops every node and removes their directories. Idempotent. */
  cleanup: () => Promise<void>
}

/** Ports free on 127.0.0.1 right now (all bound at once, so they are distinct). */
export async function freePorts (n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => resolve(s))
  })))
  const ports = servers.map((s) => (s.address() as { port: number }).port)
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))))
  return ports
}

/** The config of node `i`: its name, its route listener and routes to every node (its own is ignored). */
export function clusterNodeConfig (i: number, routePorts: number[], extra = '', noAdvertise = false): string {
  return [
    `server_name: n${i + 1}`,
    'cluster {',
    '  name: iot-test',
    `  listen: 127.0.0.1:${routePorts[i]}`,
    `  routes: [${routePorts.map((p) => `nats-route://127.0.0.1:${p}`).join(', ')}]`,
    ...(noAdvertise ? ['  no_advertise: true'] : []),
    '}',
    extra,
  ].join('\n')
}

/** Starts the nodes and resolves once JetStream has a meta leader that every node knows. */
export async function startNatsCluster (opts: NatsClusterOptions = {}): Promise<NatsCluster> {
  const size = opts.size ?? 3
  // Another process may grab a picked port between the probe and the server's bind: try again then.
  for (let attempt = 1; ; attempt++) {
    const ports = await freePorts(2 * size)
    const clientPorts = ports.slice(0, size)
    const routePorts = ports.slice(size)
    const started = await Promise.allSettled(clientPorts.map((port, i) => startNats({ port, config: clusterNodeConfig(i, routePorts, opts.config, opts.noAdvertise) })))
    const nodes = started.filter((r) => r.status === 'fulfilled').map((r) => (r as PromiseFulfilledResult<NatsServer>).value)
    const failed = started.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined
    if (failed) {
      await Promise.all(nodes.map((n) => n.cleanup()))
      if (attempt < 3 && /address already in use/i.test(String(failed.reason?.message))) continue
      throw failed.reason
    }
    const cluster = new Cluster(nodes, size)
    try {
      await cluster.waitReady(opts.readyTimeoutMs ?? 30000)
    } catch (err) {
      await cluster.cleanup()
      throw err
    }
    return cluster
  }
}

interface Jsz { meta_cluster?: { leader?: string, replicas?: Array<{ name: string, current: boolean, offline?: boolean }> } }

class Cluster implements NatsCluster {
  readonly names: string[]

  constructor (readonly nodes: NatsServer[], private readonly size: number) {
    this.names = nodes.map((_, i) => `n${i + 1}`)
  }

  get urls (): string[] { return this.nodes.map((n) => n.url) }

  node (name: string): NatsServer {
    const i = this.names.indexOf(name)
    if (i < 0) throw new Error(`no node ${name} (nodes: ${this.names.join(', ')})`)
    return this.nodes[i]
  }

  liveUrls (): string[] { return this.nodes.filter((n) => n.pid !== null).map((n) => n.url) }

  /** Every node reports the same meta leader and sees its peers as current. */
  async waitReady (timeoutMs: number): Promise<void> {
    await waitFor(async () => {
      const all = await Promise.all(this.nodes.map(async (n) => await (await fetch(`${n.monitorUrl}/jsz`)).json() as Jsz))
      const leader = all[0].meta_cluster?.leader
      // Only the leader lists the replicas (its peers) and whether they are current.
      return leader && all.every((j) => j.meta_cluster?.leader === leader) &&
        all.some((j) => (j.meta_cluster?.replicas ?? []).filter((r) => r.current && !r.offline).length === this.size - 1)
    }, `the JetStream meta group of ${this.size} nodes to elect a leader`, timeoutMs, 100)
  }

  async cleanup (): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.cleanup()))
  }
}
