// The cloud-to-edge channel survives a NATS node failure (the operator's path): on a 3-node
// cluster, SIGKILL the node the gateway is connected to, which also leads the COMMANDS stream; the
// gateway fails over, its channel re-attaches by itself (retrying while leaders are elected), and a
// command and a rule set sent afterwards both arrive without a restart. Its state is reported in
// /readyz, the heartbeat (so the cloud views) and the metrics all along. Then the killed node is
// restarted and rejoins: every stream and bucket is current on all three replicas again.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { CLOUD_BUCKETS } from '../proto/subjects.ts'
import { scrapeMetric, startGateway, startNatsCluster, waitFor } from '../devkit/index.ts'
import { formatReplicas, stepDown } from '../deploy/nats/streams.ts'
import { actuator, coolerRules } from './harness/actuator.ts'
import { waitRejoined } from './harness/rejoin.ts'
import { apiFetch, deferrer, startCloud } from './harness/cloud.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }
const GW = 'gw-failover'

test('cloud channel: after SIGKILL of the node the gateway uses (and the COMMANDS leader) it re-attaches; a command and a rule set arrive without a restart; the node restarted rejoins every stream', { timeout: 240000 }, async (t) => {
  const defer = deferrer(t)
  const cluster = await startNatsCluster()
  defer(() => cluster.cleanup())
  const { cloud, api } = await startCloud(cluster, { replicas: 3 })
  defer(() => cloud.close())
  const admin = await connect({ servers: cluster.urls })
  defer(() => admin.close())
  const jsm = await jetstreamManager(admin)

  // The gateway is given only the node that leads COMMANDS (it learns the others from the cluster).
  const leader = (await jsm.streams.info('COMMANDS')).cluster!.leader!
  const leaderUrl = cluster.nodes[cluster.names.indexOf(leader)].url
  const gw = await startGateway({ gatewayId: GW, mqtt: ANON, uplink: { servers: [leaderUrl], reconnectMinMs: 50, reconnectMaxMs: 500, publishTimeoutMs: 2000, heartbeatMs: 300, channelVerifyMs: 1000 } })
  defer(() => gw.close())
  const cooler = await actuator(gw.ports.mqtt, 'cooler-1')
  defer(() => cooler.client.end(true))
  const ready = async (): Promise<any> => (await (await fetch(`http://127.0.0.1:${gw.ports.http}/readyz`)).json())
  await waitFor(async () => (await ready()).cloudChannel?.state === 'attached', 'the cloud channel to attach')
  assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_cloud_channel_attached'), 1)
  assert.equal(gw.gateway.uplink.server, leaderUrl.replace('nats://', ''))
  // The cloud views show it from the heartbeat.
  await waitFor(async () => (await (await apiFetch(`${api}/api/gateways/${GW}`)).json()).status?.cloudChannelState === 'attached', 'the views to show the channel attached')

  await cluster.node(leader).kill()
  // The rule sets' bucket too: until it has a leader again the API answers a PUT with 503 (CI saw it).
  for (const stream of ['COMMANDS', `KV_${CLOUD_BUCKETS.rules}`]) {
    await waitFor(async () => { const l = (await jsm.streams.info(stream)).cluster?.leader; return l !== undefined && l !== leader }, `a new ${stream} leader`, 30000)
  }
  await waitFor(() => gw.gateway.uplink.state === 'up' && gw.gateway.uplink.server !== leaderUrl.replace('nats://', ''), 'the gateway to fail over to another node', 30000)
  await waitFor(async () => (await ready()).cloudChannel?.state === 'attached', 'the cloud channel to re-attach by itself', 60000, 100)

  // A command and a rule set, sent after the failure, arrive without a restart.
  const sent = await apiFetch(`${api}/api/commands`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ gatewayId: GW, deviceId: 'cooler-1', name: 'cooler', args: { on: true } }) })
  assert.equal(sent.status, 202, await sent.text())
  await waitFor(() => cooler.received.some((c) => c.name === 'cooler'), 'the command to reach the actuator', 30000)
  const put = await apiFetch(`${api}/api/rules/${GW}`, { method: 'PUT', headers: { 'content-type': 'application/yaml' }, body: coolerRules('after-failover', 8) })
  assert.equal(put.status, 200, await put.text())
  await waitFor(() => gw.gateway.control.version === 'after-failover', 'the rule set to load', 30000)
  const r = await ready()
  assert.deepEqual([r.cloudChannel.state, r.cloudChannel.lastError], ['attached', ''])
  t.diagnostic(`attaches: ${await scrapeMetric(gw.ports.http!, 'gateway_cloud_channel_attaches_total', { result: 'ok' })} ok, ${await scrapeMetric(gw.ports.http!, 'gateway_cloud_channel_attaches_total', { result: 'failed' })} failed`)

  // The killed node comes back with its store (SIGKILL: no goodbye) and catches up on everything
  // written meanwhile, including the command, the rule set, the views and the heartbeats.
  const restartedAt = Date.now()
  await cluster.node(leader).restart()
  const streams = await waitRejoined(cluster, admin, leader!)
  t.diagnostic(`${leader} rejoined every stream ${Date.now() - restartedAt} ms after its restart: ${streams.map(formatReplicas).join('; ')}`)
  assert.doesNotMatch(cluster.node(leader).output(), /Catchup for stream .* stalled/, 'the restarted node reported a stalled catch-up')

  // The operators' remedy for a replica that does not catch up (deploy/README.md): a leader step-down
  // hands every stream over to another replica, and the cluster is whole again afterwards.
  const before = new Map(streams.map((s) => [s.stream, s.leader]))
  for (const s of streams) await stepDown(admin, s.stream)
  await waitFor(async () => (await jsm.streams.info('TELEMETRY')).cluster?.leader !== before.get('TELEMETRY') && (await jsm.streams.info('COMMANDS')).cluster?.leader !== before.get('COMMANDS'), 'new leaders after the step-down', 30000)
  await waitRejoined(cluster, admin, leader)
})
