// The one lifecycle every long-lived part shares (lib/lifecycle.ts): close() idempotent, destroy()
// immediate and idempotent, closed() resolves and never rejects.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Lifecycle } from '../lib/lifecycle.ts'

class Part extends Lifecycle {
  readonly calls: string[] = []
  constructor (private readonly failClose = false) { super() }
  protected async onClose (): Promise<void> {
    this.calls.push('close')
    await new Promise((resolve) => setImmediate(resolve))
    if (this.failClose) throw new Error('flush failed')
  }

  protected onDestroy (err?: Error): void { this.calls.push(`destroy:${err?.message ?? ''}`) }
}

test('lifecycle: close() is idempotent and runs onClose once; closed() resolves', async () => {
  const p = new Part()
  assert.equal(p.close(), p.close())
  await p.close()
  assert.deepEqual(p.calls, ['close'])
  assert.equal(p.lifecycleState, 'closed')
  assert.equal(await p.closed(), undefined)
  p.destroy(new Error('late'))
  assert.deepEqual(p.calls, ['close'], 'destroy after close does nothing')
})

test('lifecycle: destroy(err) is immediate and idempotent; closed() resolves with the error', async () => {
  const p = new Part()
  const err = new Error('disk gone')
  p.destroy(err)
  p.destroy(new Error('again'))
  assert.deepEqual(p.calls, ['destroy:disk gone'])
  assert.equal(await p.closed(), err)
  await p.close()
  assert.deepEqual(p.calls, ['destroy:disk gone'], 'close after destroy does nothing')
})

test('lifecycle: a failed close destroys the part, rejects close() and still resolves closed()', async () => {
  const p = new Part(true)
  await assert.rejects(p.close(), /flush failed/)
  assert.deepEqual(p.calls, ['close', 'destroy:flush failed'])
  assert.equal((await p.closed() as Error).message, 'flush failed')
  assert.equal(p.lifecycleState, 'destroyed')
})

test('lifecycle: destroy() during a close releases at once and closed() resolves with its error', async () => {
  const p = new Part()
  const closing = p.close()
  assert.equal(p.isClosing, true)
  p.destroy(new Error('deadline'))
  assert.equal((await p.closed() as Error).message, 'deadline')
  await closing
  assert.equal(p.lifecycleState, 'destroyed')
})

test('lifecycle: the gateway and every long-lived part of it share it; a closed gateway\'s closed() resolves', async () => {
  const { startGateway } = await import('../devkit/index.ts')
  const gw = await startGateway()
  const g = gw.gateway
  const parts = { gateway: g, outbox: g.outbox, broker: g.broker, uplink: g.uplink, commands: g.commands, control: g.control }
  for (const [name, part] of Object.entries(parts)) assert.ok(part instanceof Lifecycle, `${name} does not use lib/lifecycle.ts`)
  await Promise.all([gw.close(), g.close()])
  assert.equal(await g.closed(), undefined)
  for (const [name, part] of Object.entries(parts)) assert.equal(part.lifecycleState, 'closed', `${name} is ${part.lifecycleState} after the gateway closed`)
})
