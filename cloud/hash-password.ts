// Prints the scrypt hash of a password for console.passwordHash (IOT_CLOUD_CONSOLE__PASSWORD_HASH):
// `node dist/cloud/hash-password.js` and type the password (read from stdin, never an argument).
import { hashPassword } from './http/auth.ts'

const chunks: Buffer[] = []
for await (const c of process.stdin) chunks.push(c as Buffer)
const password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
if (!password) {
  console.error('usage: echo -n "<password>" | node dist/cloud/hash-password.js')
  process.exit(2)
}
console.log(await hashPassword(password))
