// Every command of the operator docs runs as written: the blocks marked `sh doctest=<session>` in
// README.md and deploy/README.md (test/harness/doc-commands.ts says how they run). Each session runs
// in a sandbox (symlinks to the repository's code, a copy of deploy/) inside its own network and PID
// namespaces: the documented ports (4222, 8080, ...) are private to it, only its loopback is used, and
// everything it started ends with it. A session has a deadline; past it, it is killed.
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { docBlocks, sessionScript, type DocBlock } from './harness/doc-commands.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const DOCS = ['README.md', 'deploy/README.md']
const SESSION_DEADLINE_MS = 240_000
// Not linked into the sandbox: deploy/ is copied (servers write their stores under deploy/nats/data),
// and run state starts empty.
const NOT_LINKED = new Set(['.git', '.data', 'deploy', 'test-artifacts', 'bench-results'])

// The sessions need user namespaces (unprivileged `unshare`); where the kernel forbids them the
// sessions are skipped with the reason, not passed.
const probe = spawnSync('unshare', ['--user', '--map-root-user', '--net', '--pid', '--fork', 'true'], { encoding: 'utf8' })
const noNamespaces = probe.status === 0 ? false : `unshare cannot make private namespaces here: ${(probe.stderr || probe.error?.message || '').trim()}`

const blocks = DOCS.flatMap((f) => docBlocks(readFileSync(join(ROOT, f), 'utf8'), f))
const sessions = new Map<string, DocBlock[]>()
for (const b of blocks) sessions.set(b.session, [...sessions.get(b.session) ?? [], b])

function sandbox (): string {
  const dir = mkdtempSync(join(tmpdir(), 'doctest-'))
  for (const e of readdirSync(ROOT)) if (!NOT_LINKED.has(e)) symlinkSync(join(ROOT, e), join(dir, e))
  cpSync(join(ROOT, 'deploy'), join(dir, 'deploy'), { recursive: true, filter: (src) => !src.includes(join('deploy', 'nats', 'data')) })
  return dir
}

/** Runs a script in fresh network and PID namespaces; resolves with its exit code and output. */
function runIsolated (dir: string, script: string): Promise<{ code: number | null, output: string }> {
  writeFileSync(join(dir, '.doctest.sh'), script)
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('IOT_CLOUD_') && !k.startsWith('GW_')))
  const child = spawn('unshare', ['--user', '--map-root-user', '--net', '--pid', '--fork', '--mount-proc', '--kill-child', 'bash', '.doctest.sh'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (d: Buffer) => { output += d.toString() })
  child.stderr.on('data', (d: Buffer) => { output += d.toString() })
  const timer = setTimeout(() => { output += '\n[deadline passed: killed]'; child.kill('SIGKILL') }, SESSION_DEADLINE_MS)
  return new Promise((resolve) => child.on('close', (code) => { clearTimeout(timer); resolve({ code, output }) }))
}

test('docs: the operator docs mark their commands (at least the deploy sessions)', () => {
  for (const s of ['single', 'cluster', 'tls', 'cloud', 'gateway']) assert.ok(sessions.has(s), `no doctest block of session ${s}`)
})

for (const [name, list] of sessions) {
  test(`docs: session ${name} (${list.map((b) => `${b.file}:${b.line}`).join(', ')}) runs as written`, { timeout: SESSION_DEADLINE_MS + 30_000, skip: noNamespaces }, async () => {
    const dir = sandbox()
    try {
      const { code, output } = await runIsolated(dir, sessionScript(list))
      let logs = ''
      try {
        for (const f of readdirSync(join(dir, '.doctest-logs'))) logs += `\n--- ${f}\n${readFileSync(join(dir, '.doctest-logs', f), 'utf8').slice(-4000)}`
      } catch {}
      assert.equal(code, 0, `session ${name} failed:\n${output}${code === 0 ? '' : logs}`)
      assert.match(output, /session done/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
}
