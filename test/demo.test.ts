import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { assertExactlyOnce, mergeAccounts, readStream, startNats } from '../devkit/index.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

interface Row { gw: string, link: string, backlog: number, cloud: string }
interface Block { phase: string, rows: Row[] }

/** The demo's live tables: "[  8s] OUTAGE: uplinks cut · cloud received …" and a row per gateway. */
function tables (out: string): Block[] {
  const blocks: Block[] = []
  for (const line of out.split('\n')) {
    const head = /^\[\s*\d+s\] (.+?) · cloud received/.exec(line)
    if (head) { blocks.push({ phase: head[1], rows: [] }); continue }
    const row = /^ {2}(site-\w+)\s+link (\S+)\s+backlog\s+(\d+) .* cloud: (.+)$/.exec(line)
    if (row && blocks.length > 0) blocks[blocks.length - 1].rows.push({ gw: row[1], link: row[2], backlog: Number(row[3]), cloud: row[4] })
  }
  return blocks
}

test('demo: two sites with a cold room, an uplink outage whose backlog grows and drains, and an accounting exact by identity', { timeout: 150000 }, async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'iot-demo-'))
  t.after(() => rmSync(dataDir, { recursive: true, force: true }))
  // Its own process group: if the demo misbehaves, everything it started is killed with it.
  const child = spawn(process.execPath, ['--import', 'tsx', 'simulators/demo.ts', '--duration', '30', '--devices', '2', '--interval-ms', '200',
    '--outage-at', '6', '--outage-for', '12', '--console-port', '0', '--data-dir', dataDir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  t.after(() => { try { process.kill(-child.pid!, 'SIGKILL') } catch { /* already gone */ } })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  assert.equal(code, 0, out)
  assert.match(out, /gateway site-a: mqtt:\/\/127\.0\.0\.1:\d+ {2}http:\/\/127\.0\.0\.1:\d+\/readyz/)
  assert.match(out, /console http:\/\/127\.0\.0\.1:\d+\/console\/ {2}login: operator \/ \S+/)

  // The table, read from each gateway's /readyz: up, then a backlog during the cut, then drained.
  const blocks = tables(out)
  const cut = blocks.findIndex((b) => b.phase.startsWith('OUTAGE'))
  assert.ok(cut > 0, `a table before and during the outage:\n${out}`)
  assert.ok(blocks.slice(0, cut).some((b) => b.rows.length === 2 && b.rows.every((r) => r.link === 'up' && r.cloud === 'online')), `both gateways up and online before the cut:\n${out}`)
  const during = blocks.filter((b) => b.phase.startsWith('OUTAGE'))
  for (const gw of ['site-a', 'site-b']) {
    const backlogs = during.flatMap((b) => b.rows.filter((r) => r.gw === gw).map((r) => r.backlog))
    assert.ok(backlogs.some((n) => n > 0), `${gw}: a backlog above 0 during the cut (${backlogs.join(', ')}):\n${out}`)
    assert.ok(during.some((b) => b.rows.some((r) => r.gw === gw && r.link !== 'up')), `${gw}: its link is not "up" during the cut:\n${out}`)
  }
  // The cloud (and so the console) sees the gateways go offline, while its API keeps answering.
  assert.ok(blocks.some((b) => b.rows.some((r) => /^offline since \S+/.test(r.cloud))), `the cloud shows a gateway offline:\n${out}`)
  const lastCut = blocks.length - 1 - [...blocks].reverse().findIndex((b) => b.phase.startsWith('OUTAGE'))
  assert.ok(blocks.slice(lastCut + 1).some((b) => b.rows.length === 2 && b.rows.every((r) => r.backlog === 0 && r.link === 'up')), `the backlogs drain to 0 after the cut:\n${out}`)

  const m = /summary: devices sent (\d+), gateways acknowledged (\d+), cloud received (\d+) unique events/.exec(out)
  assert.ok(m, `no summary in:\n${out}`)
  const [sent, acked, cloud] = [Number(m[1]), Number(m[2]), Number(m[3])]
  assert.ok(sent > 100, `too few events: ${sent}`)
  assert.equal(acked, sent, 'every publish of a well-behaved device is acknowledged, outage or not')
  assert.equal(cloud, acked, 'the cloud received every acknowledged event')
  const a = /cloud accounting: applied (\d+), duplicates dropped (\d+), open gaps (\d+)/.exec(out)
  assert.ok(a, `no cloud accounting in:\n${out}`)
  assert.deepEqual([Number(a[1]), Number(a[2]), Number(a[3])], [acked, 0, 0])
  // The rules ran at the edge: the cold room's thermostat decided, its cooler obeyed, the cloud heard of it.
  const c = /control: rules \S+: (\d+) decisions at the edge, (\d+) commands obeyed by devices, (\d+) control events/.exec(out)
  assert.ok(c, `no control line in:\n${out}`)
  assert.ok(Number(c[1]) > 0 && Number(c[2]) > 0 && Number(c[3]) > 0, `decisions, commands and control events: ${c[0]}`)
  assert.match(out, new RegExp(`accounting by identity: exact: each of the ${acked} acknowledged readings`))

  // Checked again here, independently of the demo: its NATS store, read by identity.
  const ids = JSON.parse(readFileSync(join(dataDir, 'acked.json'), 'utf8')) as { by: 'ts', gateways: Record<string, Record<string, number[]>> }
  assert.equal(Object.values(ids.gateways).flatMap((d) => Object.values(d)).reduce((n, ts) => n + ts.length, 0), acked)
  const nats = await startNats({ storeDir: join(dataDir, 'nats') })
  t.after(() => nats.stop())
  const acc = mergeAccounts(await readStream(nats.url, 'TELEMETRY'), await readStream(nats.url, 'EVENTS'))
  for (const [gw, devices] of Object.entries(ids.gateways)) assertExactlyOnce(acc, gw, new Map(Object.entries(devices)), 'ts')
})
