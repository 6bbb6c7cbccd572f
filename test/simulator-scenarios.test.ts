// Scenario files run end to end (--quick): nats-server, the cloud aggregator, a gateway child and
// simulated devices; the runner's exit code and its summary must add up.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { natsServerMissing } from '../devkit/index.ts'
import { loadScenario, parseScenario, quickScenario, ScenarioError } from '../simulators/scenario.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

interface Summary { sent: number, goodSent: number, badSent: number, acked: number, goodAcked: number, badAcked: number, refused: number, received: number, duplicates: number, gapsOpen: number, unackedAtCut: number, resendsDropped: number }

async function run (file: string): Promise<{ code: number | null, out: string, summary: Summary }> {
  // Its own process group: if the runner misbehaves, everything it started is killed with it.
  const child = spawn(process.execPath, ['--import', 'tsx', 'simulators/run-scenario.ts', `simulators/scenarios/${file}`, '--quick'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  const killer = setTimeout(() => { try { process.kill(-child.pid!, 'SIGKILL') } catch { /* gone */ } }, 60000)
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  clearTimeout(killer)
  const s = /summary \([^)]*\): sent (\d+) \(good (\d+), bad (\d+)\), acknowledged (\d+) \(good (\d+), bad (\d+)\), refused (\d+)/.exec(out)
  const c = /cloud accounted for: received (\d+), duplicates (\d+), open gaps (\d+)/.exec(out)
  const r = /resends: (\d+) publishes were unacknowledged when their link or gateway was cut, .* committed (\d+) of them and dropped those resends/.exec(out)
  assert.ok(s && c && r, `no summary in:\n${out}`)
  const n = (m: RegExpExecArray, i: number): number => Number(m[i])
  return { code, out, summary: { sent: n(s, 1), goodSent: n(s, 2), badSent: n(s, 3), acked: n(s, 4), goodAcked: n(s, 5), badAcked: n(s, 6), refused: n(s, 7), received: n(c, 1), duplicates: n(c, 2), gapsOpen: n(c, 3), unackedAtCut: n(r, 1), resendsDropped: n(r, 2) } }
}

test('scenario files: every shipped scenario is valid; a bad field is named in the error', () => {
  const dir = fileURLToPath(new URL('../simulators/scenarios/', import.meta.url))
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'))
  for (const f of ['steady.yaml', 'burst.yaml', 'outage.yaml', 'power-cut.yaml', 'bad-payloads.yaml', 'reconnect-storm.yaml']) assert.ok(files.includes(f), f)
  for (const f of files) {
    const s = quickScenario(loadScenario(dir + f))
    assert.ok(s.duration <= 12000, `${f}: quick duration ${s.duration}`)
  }
  const base = { name: 'x', devices: { count: 1, sensors: ['temperature'], interval: '1s' }, duration: '10s' }
  assert.throws(() => parseScenario({ ...base, devices: { ...base.devices, interval: 'soon' } }), (e: Error) => e instanceof ScenarioError && /devices\.interval: not a duration/.test(e.message))
  assert.throws(() => parseScenario({ ...base, timeline: [{ at: '2s', do: 'outage' }] }), /timeline\.0\.for: required/)
  assert.throws(() => parseScenario({ ...base, timeline: [{ at: '2s', do: 'meteor' }] }), /timeline\.0\.do/)
  assert.throws(() => parseScenario({ ...base, devices: { ...base.devices, sensors: ['smell'] } }), /devices\.sensors\.0/)
  assert.throws(() => parseScenario({ ...base, timeline: [{ at: '12s', do: 'power-cut' }] }), /timeline\.0\.at: step at 12000 ms is not before the end/)
  assert.throws(() => parseScenario({ ...base, colour: 'red' }), /colour/)
})

for (const file of ['steady.yaml', 'power-cut.yaml', 'bad-payloads.yaml']) {
  test(`scenario ${file} --quick: exit 0 and the summary adds up`, { timeout: 90000 }, async () => {
    // CI installs nats-server (deploy/setup.sh): without it this test fails, it never skips.
    assert.equal(natsServerMissing(), undefined)
    const { code, out, summary: s } = await run(file)
    assert.equal(code, 0, out)
    assert.match(out, /result: the summary adds up/)
    assert.match(out, /\[ {3}1s\] connected \d+\/\d+ {2}sent \d+/, 'a progress line every second')
    assert.match(out, /PUBACK latency \(good\): p50 \d+\.\d ms, p99 \d+\.\d ms/)
    assert.ok(s.goodSent > 10, `too little traffic: ${s.goodSent}`)
    // What devices sent = what the gateway accepted + refused.
    assert.equal(s.sent, s.goodSent + s.badSent)
    assert.equal(s.acked, s.sent, 'every publish acknowledged')
    assert.equal(s.goodAcked + s.refused, s.acked, 'accepted + refused = acknowledged')
    assert.equal(s.refused, s.badSent)
    // What was accepted is what the cloud applied, exactly: resends of committed readings are dropped at the edge.
    assert.equal(s.received, s.goodAcked, 'cloud received == acknowledged good events')
    // By identity: each acknowledged reading (device, ts) once in the stream, every seq explained.
    const ids = /identity check: (\d+) acknowledged readings, (\d+) problems/.exec(out)
    assert.ok(ids, `no identity check in:\n${out}`)
    assert.deepEqual([Number(ids[1]), Number(ids[2])], [s.goodAcked, 0], out)
    assert.match(out, /ok {3}cloud received == distinct \(device, seq\) in the stream/)
    assert.equal(s.gapsOpen, 0)
    assert.ok(s.resendsDropped <= s.unackedAtCut, `resends dropped ${s.resendsDropped} <= unacknowledged at a cut ${s.unackedAtCut}`)
    if (file === 'power-cut.yaml') {
      assert.match(out, /step: gateway power cut/)
      // The cuts land in bursts over slow links: committed publishes lose their PUBACK and are resent.
      assert.ok(s.resendsDropped > 0, `the power cuts left no committed publish unacknowledged (unacknowledged at a cut: ${s.unackedAtCut}): the resend path was not exercised`)
    }
    if (file === 'bad-payloads.yaml') assert.ok(s.badSent > 0)
  })
}
