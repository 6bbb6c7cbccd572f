// Preloaded into a benchmark's gateway child by bench/gc-trace.ts (plain JavaScript: the gateway's
// worker threads inherit the preload and cannot load TypeScript). Appends every GC pause of the
// main thread to the file named by BENCH_GC_TRACE_FILE as "<epoch ms> <duration ms>" lines, flushed
// every 200 ms; the observer costs one entry per GC, not per event.
import { appendFileSync } from 'node:fs'
import { PerformanceObserver, performance } from 'node:perf_hooks'
import { isMainThread } from 'node:worker_threads'

const traceFile = process.env.BENCH_GC_TRACE_FILE
if (traceFile !== undefined && isMainThread) {
  delete process.env.BENCH_GC_TRACE_FILE
  let lines = ''
  const flush = () => {
    if (lines === '') return
    appendFileSync(traceFile, lines)
    lines = ''
  }
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) lines += `${(performance.timeOrigin + e.startTime).toFixed(3)} ${e.duration.toFixed(3)}\n`
  }).observe({ entryTypes: ['gc'] })
  setInterval(flush, 200).unref()
  process.on('exit', flush)
}
