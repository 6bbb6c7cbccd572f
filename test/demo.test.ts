import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

test('demo: runs nats-server, two gateways and devices, then stops cleanly with a summary that adds up', { timeout: 90000 }, async (t) => {
  // Its own process group: if the demo misbehaves, everything it started is killed with it.
  const child = spawn(process.execPath, ['--import', 'tsx', 'simulators/demo.ts', '--duration', '8', '--devices', '2', '--interval-ms', '200', '--console-port', '0'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  t.after(() => { try { process.kill(-child.pid!, 'SIGKILL') } catch { /* already gone */ } })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  assert.equal(code, 0, out)
  assert.match(out, /gateway site-a: mqtt:\/\/127\.0\.0\.1:\d+/)
  assert.match(out, /site-b\s+up/)
  assert.match(out, /console http:\/\/127\.0\.0\.1:\d+\/console\/ {2}login: operator \/ \S+/)
  const m = /summary: devices sent (\d+), gateways acknowledged (\d+), cloud received (\d+) unique events/.exec(out)
  assert.ok(m, `no summary in:\n${out}`)
  const [sent, acked, cloud] = [Number(m[1]), Number(m[2]), Number(m[3])]
  assert.ok(sent > 20, `too few events: ${sent}`)
  assert.equal(acked, sent, 'every publish of a well-behaved device is acknowledged')
  assert.ok(cloud > 0 && cloud <= acked, `cloud received ${cloud} of ${acked}`)
  // What the gateways accepted is what the cloud's aggregator applied: once, no holes.
  const a = /cloud accounting: applied (\d+), duplicates dropped (\d+), open gaps (\d+)/.exec(out)
  assert.ok(a, `no cloud accounting in:\n${out}`)
  assert.deepEqual([Number(a[1]), Number(a[2]), Number(a[3])], [acked, 0, 0])
})
