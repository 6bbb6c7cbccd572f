// MQTT 5 with a third-party client: Debian's mosquitto-clients (installed by deploy/setup.sh) against a
// real gateway on a real socket. What mosquitto_pub prints of the answers (-d: the packets with their
// reason codes) and its exit status are what a device maker would see.
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { test, type TestContext } from 'node:test'
import { startGateway, waitFor, type TestGateway } from '../devkit/index.ts'
import type { GatewayConfigInput } from '../gateway/config.ts'

interface Run { code: number, out: string }

/** Runs a mosquitto client against the gateway; resolves with its exit status and stdout + stderr. */
function mosquitto (bin: 'mosquitto_pub' | 'mosquitto_sub', port: number, args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(bin, ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 15000 }, (err, stdout, stderr) => {
      if (err && typeof (err as { code?: unknown }).code !== 'number') return reject(err)
      resolve({ code: err ? (err as { code: number }).code : 0, out: stdout + stderr })
    })
  })
}

async function gateway (t: TestContext, cfg: GatewayConfigInput = {}): Promise<TestGateway> {
  const gw = await startGateway(cfg)
  t.after(() => gw.close())
  return gw
}

/** mosquitto_pub of one QoS 1 message as `id` with `secret`, MQTT 5 unless told. */
const pub = (gw: TestGateway, id: string, secret: string, topic: string, message: string, extra: string[] = []): Promise<Run> =>
  mosquitto('mosquitto_pub', gw.ports.mqtt, ['-V', 'mqttv5', '-i', id, '-u', id, '-P', secret, '-t', topic, '-m', message, '-q', '1', '-d', ...extra])

const stored = (gw: TestGateway, deviceId: string): number => (gw.gateway.db.prepare('SELECT count(*) AS n FROM events e JOIN device_seq d ON d.num = e.dev WHERE d.device_id = ?').get(deviceId) as { n: number }).n

test('mosquitto v5: accepted (PUBACK RC 0), refused with the connection kept (0x87 not authorized, 0x99 payload format invalid), and MQTT 3.1.1 still accepted', async (t) => {
  const gw = await gateway(t)
  const secret = gw.gateway.registry.add('mq-a')
  const ok = await pub(gw, 'mq-a', secret, 'devices/mq-a/telemetry', '{"temperature": 21.5}')
  assert.equal(ok.code, 0, ok.out)
  assert.match(ok.out, /received PUBACK \(Mid: 1, RC:0\)/)
  const denied = await pub(gw, 'mq-a', secret, 'devices/mq-b/telemetry', '{"temperature": 21.5}')
  assert.match(denied.out, /received PUBACK \(Mid: 1, RC:135\)/)
  assert.match(denied.out, /Publish 1 failed: Not authorized/)
  // The connection outlived the refusal: mosquitto_pub sent its own DISCONNECT after the PUBACK.
  assert.match(denied.out, /RC:135\)\n.*sending DISCONNECT/)
  const bad = await pub(gw, 'mq-a', secret, 'devices/mq-a/telemetry', '{"temperature": ')
  assert.match(bad.out, /received PUBACK \(Mid: 1, RC:153\)/)
  assert.match(bad.out, /Payload format invalid/)
  const v311 = await mosquitto('mosquitto_pub', gw.ports.mqtt, ['-V', 'mqttv311', '-i', 'mq-a', '-u', 'mq-a', '-P', secret, '-t', 'devices/mq-a/telemetry', '-m', '{"temperature": 22}', '-q', '1'])
  assert.equal(v311.code, 0, v311.out)
  assert.equal(stored(gw, 'mq-a'), 2)
  assert.equal((gw.gateway.db.prepare('SELECT count(*) AS n FROM dead_letters').get() as { n: number }).n, 1)
})

test('mosquitto v5: 0x97 quota exceeded at the disk budget with reject-new', async (t) => {
  const gw = await gateway(t, { outbox: { budgetBytes: 1500, overflow: 'reject-new' } })
  const secret = gw.gateway.registry.add('mq-full')
  let last: Run | null = null
  for (let i = 0; i < 40; i++) {
    last = await pub(gw, 'mq-full', secret, 'devices/mq-full/telemetry', JSON.stringify({ temperature: i, humidity: 50 + i }))
    if (!/RC:0\)/.test(last.out)) break
  }
  assert.match(last!.out, /received PUBACK \(Mid: 1, RC:151\)/)
  assert.match(last!.out, /Quota exceeded/)
})

test('mosquitto v5: CONNACK 0x86 for a bad password, 0x85 for another device\'s client id, 0x97 for a second connection of one device', async (t) => {
  const gw = await gateway(t, { mqtt: { clientIdPattern: '{device}-*' } })
  const secret = gw.gateway.registry.add('mq-c')
  const other = gw.gateway.registry.add('mq-d')
  const wrong = await pub(gw, 'mq-c-1', 'nope', 'devices/mq-c/telemetry', '{"temperature": 1}', ['-u', 'mq-c'])
  assert.match(wrong.out, /Bad User Name or Password/)
  const stolen = await mosquitto('mosquitto_pub', gw.ports.mqtt, ['-V', 'mqttv5', '-i', 'mq-c-1', '-u', 'mq-d', '-P', other, '-t', 'devices/mq-d/telemetry', '-m', '{"temperature": 1}', '-q', '1'])
  assert.match(stolen.out, /Client Identifier not valid/)
  // mq-c holds one connection (a subscriber); a second client id of mq-c is over its quota.
  // stdbuf: mosquitto_sub's stdout to a pipe is block-buffered; its -d lines are wanted as they come.
  const sub = spawn('stdbuf', ['-oL', 'mosquitto_sub', '-h', '127.0.0.1', '-p', String(gw.ports.mqtt), '-V', 'mqttv5', '-i', 'mq-c-1', '-u', 'mq-c', '-P', secret, '-t', 'devices/mq-c/commands', '-d'])
  t.after(() => { if (sub.exitCode === null) sub.kill() })
  let subOut = ''
  sub.stdout.on('data', (d: Buffer) => { subOut += d.toString() })
  await waitFor(() => subOut.includes('SUBACK'), 'mosquitto_sub subscribed')
  const second = await mosquitto('mosquitto_pub', gw.ports.mqtt, ['-V', 'mqttv5', '-i', 'mq-c-2', '-u', 'mq-c', '-P', secret, '-t', 'devices/mq-c/telemetry', '-m', '{"temperature": 1}', '-q', '1'])
  assert.match(second.out, /Quota exceeded/)
  // The same client id again is a takeover: the subscriber is told 0x8E and the newcomer gets in.
  const takeover = await mosquitto('mosquitto_pub', gw.ports.mqtt, ['-V', 'mqttv5', '-i', 'mq-c-1', '-u', 'mq-c', '-P', secret, '-t', 'devices/mq-c/telemetry', '-m', '{"temperature": 2}', '-q', '1'])
  assert.equal(takeover.code, 0, takeover.out)
  await waitFor(() => /Received DISCONNECT/.test(subOut) || sub.exitCode !== null, 'mosquitto_sub told of the takeover')
  assert.match(subOut, /Received DISCONNECT \(142\)/)
  const counted = Object.fromEntries((await gw.gateway.metrics.rejected.get()).values.map((v) => [String(v.labels.reason), v.value]))
  assert.deepEqual({ bad: counted.bad_credentials, bound: counted.client_id_not_bound, cap: counted.device_connection_limit }, { bad: 1, bound: 1, cap: 1 })
})
