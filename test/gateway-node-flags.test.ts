// The gateway's V8 flags (lib/node-entry.ts GATEWAY_NODE_FLAGS) are read at start-up only, so every
// way of starting it names them: the harnesses (nodeArgsFor), `npm run gateway`, the systemd unit
// and the documented command lines. A gateway started without them says so in its log.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { GATEWAY_NODE_FLAGS, nodeArgsFor, SOURCE_ROOT } from '../lib/node-entry.ts'
import { spawnGateway, tempDir, waitFor } from '../devkit/index.ts'

const read = (path: string): string => readFileSync(join(SOURCE_ROOT, path), 'utf8')

test('node flags: every way of starting the gateway names GATEWAY_NODE_FLAGS', () => {
  assert.ok(GATEWAY_NODE_FLAGS.length > 0)
  const launchers: Array<[string, string]> = [
    ['nodeArgsFor (tsx)', nodeArgsFor('gateway/main.ts', 'tsx').join(' ')],
    ['package.json scripts.gateway', (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts.gateway],
    ['deploy/gateway/iot-gateway.service ExecStart', read('deploy/gateway/iot-gateway.service').split('\n').find((l) => l.startsWith('ExecStart='))!],
  ]
  // Every documented command line that runs the compiled gateway.
  for (const doc of ['README.md', 'deploy/README.md']) {
    for (const line of read(doc).split('\n').filter((l) => /^\s*(\/usr\/bin\/)?node .*dist\/gateway\/main\.js/.test(l))) launchers.push([doc, line])
  }
  assert.ok(launchers.length >= 5, `found ${launchers.length} launchers`)
  for (const [where, line] of launchers) {
    for (const flag of GATEWAY_NODE_FLAGS) assert.ok(line.includes(flag), `${where} lacks ${flag}: ${line}`)
  }
})

test('node flags: a gateway started without them warns, one started with them does not', async (t) => {
  const data = tempDir('gw-flags')
  t.after(() => data.cleanup())
  const withFlags = await spawnGateway(data.dir, ['mqtt.port=0'], { keepOutput: 'all' })
  t.after(() => withFlags.kill())
  // Drops node's arguments after the executable that are the flags (nodeArgsFor puts them first).
  const strip = ['bash', '-c', `exec "$1" "\${@:${2 + GATEWAY_NODE_FLAGS.length}}"`, 'bash']
  const data2 = tempDir('gw-flags-none')
  t.after(() => data2.cleanup())
  const without = await spawnGateway(data2.dir, [], { keepOutput: 'all', wrapper: strip, runtime: 'tsx' })
  t.after(() => without.kill())
  await waitFor(() => without.stderr().includes('missingFlags'), 'the warning of a gateway started without its flags')
  assert.match(without.stderr(), new RegExp(GATEWAY_NODE_FLAGS[0]!))
  assert.doesNotMatch(withFlags.stderr(), /missingFlags/)
})
