// @ts-check
// Starts the uplink thread (uplink.ts). A worker thread does not inherit the main thread's
// TypeScript loader. The compiled gateway's entry is JavaScript and is imported as it is. When the
// gateway runs from its TypeScript sources, the entry and the project files it imports are bundled
// by esbuild into one JavaScript module (packages stay outside, loaded from node_modules), written
// under node_modules/.cache and imported, then removed. Loading tsx into the thread instead cost
// about 37 MB of RSS and seconds of start-up (its loader thread transforms each file again).
import { mkdirSync, rmSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { threadId, workerData } from 'node:worker_threads'

const { entry } = /** @type {{ entry: string }} */ (workerData)
if (entry.endsWith('.ts')) {
  const { build } = await import('esbuild')
  const dir = fileURLToPath(new URL('../../node_modules/.cache/iot-gateway/', import.meta.url))
  mkdirSync(dir, { recursive: true })
  const outfile = `${dir}uplink-thread-${process.pid}-${threadId}.mjs`
  await build({ entryPoints: [fileURLToPath(entry)], outfile, bundle: true, format: 'esm', platform: 'node', target: 'node20', packages: 'external', logLevel: 'error' })
  try {
    await import(pathToFileURL(outfile).href)
  } finally {
    rmSync(outfile, { force: true })
  }
} else {
  await import(entry)
}
