// The commands the operator docs show, extracted and turned into scripts that test/doc-commands.test.ts
// runs as written (README.md, deploy/README.md).
//
// A fenced block whose info string is `sh doctest=<session>` is run; blocks of one session run in
// document order, in one sandbox (a copy of the repository's layout), each block from the
// repository root as a fresh terminal would be. In a block:
// - a server (a command ending in `&`, `nats-server -c <file>`, `cloud/main.ts` or its build
//   `dist/cloud/main.js`, the gateway) is
//   started in the background and the block goes on once its output says it is ready; it keeps
//   running until the session ends. Servers written without `&` in one block are alternatives (the
//   same thing two ways): each is stopped before the next starts;
// - every other command must exit 0;
// - a block without servers runs as one script (loops over several lines work).
// The scripts run in their own network and PID namespaces (`unshare`), so the documented fixed ports
// are private to the run and every process goes when the script ends.

export interface DocBlock { file: string, line: number, session: string, text: string }

const FENCE = /^```sh\s+doctest=([A-Za-z0-9_-]+)\s*$/

/** The blocks marked `sh doctest=<session>` in a Markdown text. */
export function docBlocks (markdown: string, file: string): DocBlock[] {
  const out: DocBlock[] = []
  const lines = markdown.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const m = FENCE.exec(lines[i])
    if (!m) continue
    const start = i + 1
    let end = start
    while (end < lines.length && !lines[end].startsWith('```')) end++
    if (end === lines.length) throw new Error(`${file}:${i + 1}: unterminated doctest block`)
    out.push({ file, line: i + 1, session: m[1], text: lines.slice(start, end).join('\n') })
    i = end
  }
  return out
}

/** The commands of a block: continuation lines joined, comment lines dropped. */
export function commandsOf (text: string): string[] {
  const out: string[] = []
  let cur = ''
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd()
    if (cur === '' && (line.trim() === '' || line.trim().startsWith('#'))) continue
    if (line.endsWith('\\')) { cur += line.slice(0, -1) + ' '; continue }
    out.push((cur + line).trim())
    cur = ''
  }
  if (cur) out.push(cur.trim())
  return out
}

/** The command without a trailing comment (docs put no ` #` inside quotes). */
const withoutComment = (cmd: string): string => cmd.replace(/\s+#.*$/, '').trim()

export type Step = { kind: 'run', cmd: string } | { kind: 'serve', cmd: string, background: boolean }

export function stepOf (command: string): Step {
  const cmd = withoutComment(command)
  if (cmd.endsWith('&') && !cmd.endsWith('&&')) return { kind: 'serve', cmd: cmd.slice(0, -1).trim(), background: true }
  if (/\bnats-server\s+-c\s+\S+$/.test(cmd) || /(cloud|gateway)\/main\.(ts|js)\b|npm run gateway\b/.test(cmd)) return { kind: 'serve', cmd, background: false }
  return { kind: 'run', cmd }
}

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`

// The helpers of every session script. `set -m`: each server gets its own process group, so a stop
// takes its children (the node behind npm, the server behind `cd … &&`) with it.
const PRELUDE = String.raw`set -euo pipefail
set -m
ip link set lo up
ROOT=$PWD
LOGS=$ROOT/.doctest-logs
mkdir -p "$LOGS"
READY='Server is ready|"msg":"(cloud|gateway) started"'
n=0
fg=''
stop () { kill -TERM -- "-$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
serve () {
  local background=$1 cmd=$2
  n=$((n + 1))
  local log="$LOGS/server-$n.log"
  if [ "$background" = 0 ] && [ -n "$fg" ]; then echo "(stopping the previous alternative)"; stop "$fg"; fg=''; fi
  echo "\$ $cmd    [server $n]"
  ( eval "$cmd" ) >"$log" 2>&1 &
  local pid=$!
  if [ "$background" = 0 ]; then fg=$pid; fi
  local deadline=$((SECONDS + 90))
  until grep -Eq "$READY" "$log"; do
    if ! kill -0 "$pid" 2>/dev/null; then echo "server $n exited before it was ready:"; cat "$log"; return 1; fi
    if [ "$SECONDS" -ge "$deadline" ]; then echo "server $n not ready within 90 s:"; cat "$log"; return 1; fi
    sleep 0.2
  done
}
run () { echo "\$ $1"; eval "$1"; }
`

/** The bash script of one session (run from the sandbox's root, inside `unshare`). */
export function sessionScript (blocks: DocBlock[]): string {
  const parts = [PRELUDE]
  for (const b of blocks) {
    parts.push(`# ${b.file}:${b.line}`, 'cd "$ROOT"; fg=\'\'')
    const steps = commandsOf(b.text).map(stepOf)
    if (steps.every((s) => s.kind === 'run')) {
      parts.push(`run ${q(b.text)}`)
      continue
    }
    for (const s of steps) parts.push(s.kind === 'run' ? `run ${q(s.cmd)}` : `serve ${s.background ? 1 : 0} ${q(s.cmd)}`)
  }
  parts.push('echo "session done"')
  return parts.join('\n') + '\n'
}
