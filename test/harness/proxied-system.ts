// A whole system for tests of what the cloud learns from a gateway: nats-server (provisioned), the
// cloud (aggregator and API, logged in for apiFetch), a TCP proxy, and a gateway whose uplink goes
// through the proxy (fast heartbeats and reconnects); all stopped after the test, in reverse order.
import type { TestContext } from 'node:test'
import { provision, startGateway, startNats, startProxy } from '../../devkit/index.ts'
import type { GatewayConfigInput } from '../../gateway/index.ts'
import { deferrer, startCloud } from './cloud.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }
const FAST = { heartbeatMs: 200, reconnectMinMs: 50, reconnectMaxMs: 200, publishTimeoutMs: 2000 }

/** Starts the system; with `cut` the proxy refuses connections from the start (proxy.restore() lets them through). */
export async function startProxiedSystem (t: TestContext, gatewayId: string, outbox: GatewayConfigInput['outbox'] = {}, opts: { cut?: boolean } = {}) {
  const defer = deferrer(t)
  const nats = await startNats()
  defer(() => nats.cleanup())
  await provision(nats.url)
  const { cloud, api } = await startCloud(nats)
  defer(() => cloud.close())
  const proxy = await startProxy({ host: '127.0.0.1', port: nats.port })
  defer(() => proxy.close())
  if (opts.cut) proxy.cut()
  const gw = await startGateway({ gatewayId, mqtt: ANON, outbox, uplink: { servers: [`nats://127.0.0.1:${proxy.port}`], ...FAST } })
  defer(() => gw.close())
  return { defer, nats, api, proxy, gw }
}
