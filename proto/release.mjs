// Records the current schema as the released one: regenerates proto/gen and copies proto/gen/iot.json
// to proto/descriptors/iot.v1.json, the baseline test/proto-compat.test.ts checks every later change against.
// Run it (`npm run proto:release`) only when a version of the contracts is released, after `npm test` passed
// against the previous baseline, and commit the updated descriptor with the release. Running it at any other
// time would silently accept whatever changed since the last release.
import { execFileSync } from 'node:child_process'
import { copyFileSync, mkdirSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = dirname(fileURLToPath(import.meta.url))
execFileSync(process.execPath, [join(root, 'generate.mjs')], { stdio: 'inherit' })
const from = join(root, 'gen', 'iot.json')
const to = join(root, 'descriptors', 'iot.v1.json')
mkdirSync(dirname(to), { recursive: true })
copyFileSync(from, to)
console.log(`released descriptor written to ${relative(process.cwd(), to)}`)
