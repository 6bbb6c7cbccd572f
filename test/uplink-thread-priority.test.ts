// The uplink thread runs at a lower CPU priority (uplink.threadNice, Linux: nice is per thread), so a
// drain takes only the CPU the broker and the rules leave; the event loop's thread keeps the
// process's own priority. Read from the kernel's view of each thread (/proc/<pid>/task/<tid>/stat).
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { test } from 'node:test'
import { scrapeMetric, spawnGateway, startNats, tempDir, waitFor } from '../devkit/index.ts'

/** Each thread of `pid` with its nice value (field 19 of stat, after the parenthesised name). */
function threadNices (pid: number): Map<number, number> {
  const out = new Map<number, number>()
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
      out.set(Number(tid), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]))
    } catch { /* the thread ended meanwhile */ }
  }
  return out
}

test('uplink thread priority: the uplink thread runs at uplink.threadNice, the event loop at the process\'s own; 0 leaves it alone', async (t) => {
  const nats = await startNats()
  t.after(() => nats.cleanup())
  for (const nice of [10, 0]) {
    const data = tempDir('gw-nice')
    t.after(() => data.cleanup())
    const gw = await spawnGateway(data.dir, [`uplink.servers=${nats.url}`, `uplink.threadNice=${nice}`, 'http.port=0'])
    t.after(() => gw.kill())
    await waitFor(async () => await scrapeMetric(gw.ports.http!, 'gateway_uplink_thread_up') === 1, 'the uplink thread to run')
    const pid = gw.child.pid!
    const nices = threadNices(pid)
    assert.equal(nices.get(pid), 0, 'the event loop thread keeps the process priority')
    const lowered = [...nices.entries()].filter(([tid, n]) => tid !== pid && n !== 0)
    assert.deepEqual(lowered.map(([, n]) => n), nice === 0 ? [] : [nice], `threads with a lowered priority (nice ${nice} asked)`)
    await gw.kill()
  }
})
