// A bcrypt hash of a NATS password, for accounts.conf (nats-server recognises "$2a$", "$2b$", ...),
// without the `nats` CLI, which Debian does not ship:
//
//   printf %s 'the password' | node dist/deploy/nats/passwd.js     # prints the hash
//   node dist/deploy/nats/passwd.js --generate                     # a random password, then its hash
//
// Node has no bcrypt of its own and the project carries no bcrypt package, so the hash is made by
// the system's crypt(3) (libxcrypt, through Debian 12's python3 `crypt` module: python3 <= 3.12).
// The password travels on stdin, never on a command line.
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { isMain } from '../../lib/is-main.ts'

const USAGE = `usage: printf %s '<password>' | node dist/deploy/nats/passwd.js [--cost n]
       node dist/deploy/nats/passwd.js --generate [--cost n]
  prints a bcrypt hash for a password in deploy/nats/accounts.conf (the client keeps the clear one)
  --generate  make a random password (printed first, on its own line), then its hash
  --cost n    bcrypt cost, 10-14 (default 11)`

const PY = 'import crypt,sys; pw=sys.stdin.read(); cost=int(sys.argv[1]); print(crypt.crypt(pw, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2**cost)))'

/** The bcrypt hash of `password` ("$2b$<cost>$..."); throws when the system cannot make one. */
export function bcryptHash (password: string, cost = 11): string {
  const r = spawnSync('python3', ['-c', PY, String(cost)], { input: password, encoding: 'utf8' })
  const hash = (r.stdout ?? '').trim()
  if (r.status !== 0 || !/^\$2[abxy]\$\d{2}\$[./A-Za-z0-9]{53}$/.test(hash)) {
    throw new Error(`cannot make a bcrypt hash with python3's crypt module (Debian 12's python3 has it): ${(r.stderr || r.error?.message || hash).trim().split('\n').pop()}`)
  }
  return hash
}

export function main (argv: string[]): number {
  let values
  try {
    ({ values } = parseArgs({ args: argv, options: { generate: { type: 'boolean' }, cost: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }))
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`)
    return 2
  }
  if (values.help) { console.log(USAGE); return 0 }
  const cost = Number(values.cost ?? 11)
  if (!Number.isInteger(cost) || cost < 10 || cost > 14) { console.error(`--cost: 10-14, not ${values.cost}\n${USAGE}`); return 2 }
  let password: string
  if (values.generate) {
    password = randomBytes(24).toString('base64url')
    console.log(password)
  } else {
    password = readFileSync(0, 'utf8').replace(/\r?\n$/, '')
    if (!password) { console.error(`no password on stdin\n${USAGE}`); return 2 }
  }
  try {
    console.log(bcryptHash(password, cost))
  } catch (err) {
    console.error((err as Error).message)
    return 1
  }
  return 0
}

if (isMain(import.meta.url)) process.exit(main(process.argv.slice(2)))
