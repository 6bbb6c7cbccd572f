// A cloud started while its 3-node cluster is not whole (a node down, or not yet joined) cannot
// place 3-replica streams ("no suitable peers for placement"): it says so, tries again, and starts
// once the node is back, instead of exiting (cloud.provisionRetryMs bounds the wait).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Cloud } from '../cloud/cloud.ts'
import { parseCloudConfig } from '../cloud/config.ts'
import { createRootLogger } from '../lib/log.ts'
import { CloudError } from '../cloud/errors.ts'
import { startNatsCluster, waitFor } from '../devkit/index.ts'
import { deferrer, TEST_CONSOLE } from './harness/cloud.ts'

function capturedLog (): { lines: Array<Record<string, unknown>>, log: ReturnType<typeof createRootLogger> } {
  const lines: Array<Record<string, unknown>> = []
  return { lines, log: createRootLogger('warn', { service: 'cloud' }, { write: (l: string) => { lines.push(JSON.parse(l) as Record<string, unknown>) } }) }
}

test('cloud provisioning: with a node of the 3-node cluster down the start waits, says why, and completes once the node is back; with no time to wait it fails with CLOUD_ERR_PROVISION', { timeout: 120000 }, async (t) => {
  const defer = deferrer(t)
  const cluster = await startNatsCluster()
  defer(() => cluster.cleanup())
  const down = cluster.nodes[2]!
  await down.stop()

  const impatient = capturedLog()
  const quick = new Cloud(parseCloudConfig({ logLevel: 'warn', replicas: 3, provisionRetryMs: 0, nats: { servers: cluster.liveUrls() }, http: { host: '127.0.0.1', port: null }, console: TEST_CONSOLE }), impatient.log, { defaultMetrics: false })
  defer(() => quick.close())
  await assert.rejects(quick.start(), (err: unknown) => err instanceof CloudError && err.code === 'CLOUD_ERR_PROVISION')

  const { lines, log } = capturedLog()
  const cloud = new Cloud(parseCloudConfig({ logLevel: 'warn', replicas: 3, nats: { servers: cluster.liveUrls() }, http: { host: '127.0.0.1', port: null }, console: TEST_CONSOLE }), log, { defaultMetrics: false })
  defer(() => cloud.close())
  let started = false
  const start = cloud.start().then(() => { started = true })
  await waitFor(() => lines.some((l) => l.msg === 'provisioning failed: trying again'), 'a retry of the provisioning', 30000)
  assert.equal(started, false, 'not started while streams cannot be placed')
  assert.match(String((lines.find((l) => l.msg === 'provisioning failed: trying again')!.err as { message?: string }).message), /cannot provision/)
  await down.restart()
  await start
  assert.equal(started, true)
})
