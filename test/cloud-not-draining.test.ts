// A gateway whose backlog does not shrink while it is online and connected raises a fleet problem
// (issue: operators see trouble before data is at risk): its heartbeats arrive, its link says up,
// yet nothing it sends is acknowledged. The cloud flags it after drainStuckMs and clears the flag
// once the backlog drains. Real nats-server, gateway, cloud, and a TCP proxy holding back only
// what the server sends (the acks), so the heartbeats still arrive.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { connectDevice, provision, startGateway, startNats, startProxy, waitFor } from '../devkit/index.ts'
import { telemetryTopic } from '../proto/topics.ts'
import { apiFetch, deferrer, startCloud } from './harness/cloud.ts'

const GW = 'gw-stuck'
const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }

// The console's own problem rules (plain browser JavaScript, pure): what the fleet and gateway pages list.
const PROBLEMS = '../cloud/console/public/js/pages/problems.js'
const { problemsOf } = await import(PROBLEMS) as { problemsOf: (g: unknown) => Array<{ level: string, text: string }> }

interface View { online: boolean, linkState: string, backlogEvents: number, notDrainingSinceMs: number | null }

test('cloud: an online gateway whose backlog stops shrinking while its link is up is flagged "not draining", and the flag clears once it drains', { timeout: 60000 }, async (t) => {
  const defer = deferrer(t)
  const nats = await startNats()
  defer(() => nats.cleanup())
  await provision(nats.url)
  const { cloud, api } = await startCloud(nats, { drainStuckMs: 1500 })
  defer(() => cloud.close())
  const proxy = await startProxy({ host: '127.0.0.1', port: nats.port })
  defer(() => proxy.close())
  // No stall watchdog here: its reconnects would reset the drain's progress; the cloud must see the problem by itself.
  const gw = await startGateway({ gatewayId: GW, mqtt: ANON, uplink: { servers: [`nats://127.0.0.1:${proxy.port}`], heartbeatMs: 200, stallAfterTimeouts: 0, publishTimeoutMs: 60000 } })
  defer(() => gw.close())
  const dev = await connectDevice(gw.ports.mqtt, { clientId: 'dev-k' })
  defer(() => dev.end(true))
  const view = async (): Promise<View> => {
    const r = await apiFetch(`${api}/api/gateways/${GW}`)
    return r.status === 200 ? ((await r.json()) as { status: View }).status ?? { online: false } as View : { online: false } as View
  }
  await dev.publishAsync(telemetryTopic('dev-k'), JSON.stringify({ temperature: 1 }), { qos: 1 })
  await waitFor(async () => (await view()).online && gw.gateway.outbox.stats().events === 0, 'the gateway online with nothing buffered')
  assert.equal((await view()).notDrainingSinceMs, null)

  proxy.setLatency(600_000, 'down')
  for (let i = 0; i < 20; i++) await dev.publishAsync(telemetryTopic('dev-k'), JSON.stringify({ temperature: i }), { qos: 1 })
  let stuck: View | null = null
  await waitFor(async () => { const v = await view(); if (v.notDrainingSinceMs !== null) stuck = v; return stuck !== null }, 'the cloud to flag the backlog as not draining', 20000)
  assert.equal(stuck!.online, true)
  assert.equal(stuck!.linkState, 'up')
  assert.ok(stuck!.backlogEvents > 0)
  assert.ok(problemsOf(stuck!).some((p) => p.level === 'bad' && /not draining/.test(p.text)), 'not in the console\'s problems list')

  proxy.setLatency(0, 'down')
  await waitFor(async () => { const v = await view(); return v.backlogEvents === 0 && v.notDrainingSinceMs === null }, 'the flag to clear once the backlog drained', 30000)
})
