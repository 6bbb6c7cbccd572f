import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import mqtt from 'mqtt'
import { startGateway, tempDir } from '../devkit/index.ts'
import { readOutbox } from './harness/outbox-reader.ts'

// A throw-away CA, a server certificate for 127.0.0.1 and client certificates naming devices.
function makePki (dir: string): void {
  const ossl = (...args: string[]): void => { execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' }) }
  ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=test-ca')
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n')
  for (const [name, cn] of [['server', 'localhost'], ['dev', 'tls-dev'], ['stranger', 'not-registered']]) {
    ossl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`)
    ossl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '1', ...(name === 'server' ? ['-extfile', 'san.ext'] : []))
  }
}

test('transports: mutual TLS names the device by its certificate; an unregistered certificate is refused', { timeout: 60000 }, async (t) => {
  const pki = tempDir('gw-pki-')
  t.after(() => pki.cleanup())
  makePki(pki.dir)
  const f = (n: string): string => join(pki.dir, n)
  const gw = await startGateway({ mqtt: { tls: { port: 0, certFile: f('server.crt'), keyFile: f('server.key'), caFile: f('ca.crt'), requireClientCert: true } } })
  t.after(() => gw.close())
  gw.gateway.registry.add('tls-dev')
  const opts = (name: string) => ({ ca: readFileSync(f('ca.crt')), cert: readFileSync(f(`${name}.crt`)), key: readFileSync(f(`${name}.key`)), rejectUnauthorized: true, reconnectPeriod: 0, connectTimeout: 5000 })
  const dev = await mqtt.connectAsync(`mqtts://localhost:${gw.ports.tls}`, { ...opts('dev'), clientId: 'tls-dev' })
  t.after(() => dev.end(true))
  await dev.publishAsync('devices/tls-dev/telemetry', JSON.stringify({ temperature: 5.5 }), { qos: 1 })
  assert.deepEqual(readOutbox(gw.dataDir).map((e) => [e.deviceId, e.readings.temperature]), [['tls-dev', 5.5]])
  await assert.rejects(mqtt.connectAsync(`mqtts://localhost:${gw.ports.tls}`, { ...opts('stranger'), clientId: 'x' }), /Not authorized|Connection refused/i)
  // Without a client certificate the TLS handshake itself fails (requireClientCert).
  await assert.rejects(mqtt.connectAsync(`mqtts://localhost:${gw.ports.tls}`, { ca: readFileSync(f('ca.crt')), reconnectPeriod: 0, connectTimeout: 3000, username: 'tls-dev', password: 'x' }))
})

test('transports: MQTT over WebSocket ingests like TCP, with credentials', { timeout: 30000 }, async (t) => {
  const gw = await startGateway()
  t.after(() => gw.close())
  const secret = gw.gateway.registry.add('ws-dev')
  const c = await mqtt.connectAsync(`ws://127.0.0.1:${gw.ports.ws}`, { clientId: 'ws-dev', username: 'ws-dev', password: secret, reconnectPeriod: 0 })
  t.after(() => c.end(true))
  await c.publishAsync('devices/ws-dev/telemetry', JSON.stringify({ humidity: 41 }), { qos: 1 })
  assert.deepEqual(readOutbox(gw.dataDir).map((e) => [e.deviceId, e.seq, e.readings.humidity]), [['ws-dev', 1, 41]])
  await assert.rejects(mqtt.connectAsync(`ws://127.0.0.1:${gw.ports.ws}`, { clientId: 'ws-dev', username: 'ws-dev', password: 'wrong', reconnectPeriod: 0 }))
})
