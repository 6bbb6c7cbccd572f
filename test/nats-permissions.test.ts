// NATS accounts and per-gateway permissions (promise 8): a real gateway works with its own
// credentials, and those credentials cannot reach another gateway's subjects. In both ways the server
// can admit it: user/password (deploy/nats/accounts.conf) and decentralized auth (operator mode, the
// user JWT of an enrolled gateway: cloud/fleet/).
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { connect, type NatsConnection, type Status } from '@nats-io/transport-node'
import { decode, type User } from '@nats-io/jwt'
import { gatewayInboxPrefix, gatewayPermissions, gatewayUserBlock } from '../deploy/nats/gateway-user.ts'
import { Fleet } from '../cloud/fleet/fleet.ts'
import { subjects, v1 } from '../proto/index.ts'
import { provisionStreams } from '../cloud/provision.ts'
import { connectDevice, scrapeMetric, startGateway, tempDir, startNats, type NatsServer, waitFor, readStream } from '../devkit/index.ts'
import { deferrer } from './harness/cloud.ts'
import { ACCOUNTS, AUTH_MODES, passwordOf, readDeploy, singleNodeConfig, startUserPassMode, type AuthMode } from './harness/nats-auth.ts'

const CLOUD = { user: 'iot-cloud', pass: passwordOf(ACCOUNTS, 'iot-cloud') }
const SITE_A = { user: 'gw-site-a', pass: passwordOf(ACCOUNTS, 'gw-site-a') }

/** accounts.conf as shipped: gateway blocks exactly as deploy/nats/gateway-user.ts prints them, without "_INBOX.>". */
function strictAccounts (): string {
  for (const id of ['site-a', 'site-b']) {
    const pass = passwordOf(ACCOUNTS, `gw-${id}`)
    assert.ok(ACCOUNTS.includes(gatewayUserBlock(id, pass, { sharedInbox: false })), `accounts.conf: the block of gw-${id} is not what deploy/nats/gateway-user.ts prints`)
  }
  return ACCOUNTS
}

/** The user JWT in an enrolled gateway's .creds: its name, issuer and exactly the permissions of proto/gateway-permissions.ts. */
function assertJwtPermissions (fleet: Fleet, id: string): void {
  const jwt = /-----BEGIN NATS USER JWT-----\n(.+)\n/.exec(readFileSync(Fleet.paths(fleet.dir).gateway(id).creds, 'utf8'))?.[1]
  assert.ok(jwt, 'no JWT in the .creds file')
  const claims = decode<User>(jwt)
  assert.equal(claims.name, `gw-${id}`)
  assert.equal(claims.iss, fleet.info.signingKey, 'signed by the account signing key')
  assert.equal(claims.nats.issuer_account, fleet.info.accounts.IOT)
  const p = gatewayPermissions(id)
  assert.deepEqual({ pub: claims.nats.pub, sub: claims.nats.sub }, { pub: { allow: p.publish.allow, deny: p.publish.deny }, sub: { allow: p.subscribe.allow } })
}

/** The server in `mode`, and the cloud's connection to it with the streams provisioned. */
async function startSecuredNats (defer: (fn: () => unknown) => void, start: (defer: (fn: () => unknown) => void) => Promise<AuthMode>): Promise<AuthMode & { cloudNc: NatsConnection }> {
  const mode = await start(defer)
  const cloudNc = await connect({ servers: mode.nats.url, ...mode.cloud })
  defer(() => cloudNc.close())
  await provisionStreams(cloudNc)
  return { ...mode, cloudNc }
}

/** Collects the asynchronous errors the server sends a connection (permission violations). */
function errorsOf (nc: NatsConnection): string[] {
  const seen: string[] = []
  void (async () => {
    for await (const s of nc.status() as AsyncIterable<Status>) if (s.type === 'error') seen.push(s.error.message)
  })()
  return seen
}

/** The server's log lines about permission violations by `who` ('User "gw-site-a"', 'Nkey "U..."'). */
const violationsLogged = (nats: NatsServer, who: string): string[] =>
  nats.output().split('\n').filter((l) => /(Publish|Subscription) Violation/.test(l) && l.includes(who))

/** Every replication batch a stream holds, decoded. */
async function batchesOf (nc: NatsConnection, stream: string): Promise<ReturnType<typeof v1.ReplicationBatch.decode>[]> {
  const jsm = await jetstreamManager(nc)
  const info = await jsm.streams.info(stream)
  const out = []
  for (let seq = info.state.first_seq; info.state.messages > 0 && seq <= info.state.last_seq; seq++) {
    out.push(v1.ReplicationBatch.decode((await jsm.streams.getMessage(stream, { seq }))!.data))
  }
  return out
}

/** The control events of every batch in EVENTS. */
async function eventsStream (nc: NatsConnection): Promise<Array<{ gatewayId: string, kind: string, ruleId: string }>> {
  return (await batchesOf(nc, 'EVENTS')).flatMap((b) => b.control.map((c) => ({ gatewayId: b.gatewayId, kind: c.kind ?? '', ruleId: c.ruleId ?? '' })))
}

/** Asserts that `p` fails, with the permissions violation or, for a mapped subject, by its timeout (see the caller). */
async function refusedMapped (p: Promise<unknown>, what: string): Promise<void> {
  try {
    await p
  } catch (err) {
    assert.match((err as Error).message, /Permissions Violation for Publish to|timeout/i, `${what}: failed, but not for permissions`)
    return
  }
  assert.fail(`${what}: succeeded`)
}

/** Asserts that `p` fails with the server's permissions violation (not a timeout or anything else). */
async function refused (p: Promise<unknown>, what: string): Promise<void> {
  try {
    await p
  } catch (err) {
    assert.match((err as Error).message, /Permissions Violation for Publish to/, `${what}: failed, but not for permissions`)
    return
  }
  assert.fail(`${what}: allowed`)
}

/** Only gw-site-a's own consumer exists on COMMANDS; site-b's command is still there. */
async function assertOnlyOwnConsumer (jsm: JetStreamManager): Promise<void> {
  const names: string[] = []
  for await (const c of jsm.consumers.list('COMMANDS')) names.push(c.name)
  assert.deepEqual(names, ['gw-site-a'])
  assert.equal((await jsm.streams.info('COMMANDS')).state.messages, 1)
}

/** A throw-away CA, a server certificate for 127.0.0.1 and client certificates (TLS web client usage). */
function makePki (dir: string, clients: string[]): void {
  const ossl = (...args: string[]): void => { execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' }) }
  ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=iot-test-ca')
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n')
  writeFileSync(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n')
  for (const name of ['server', ...clients]) {
    ossl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}-key.pem`, '-out', `${name}.csr`, '-subj', `/CN=${name}`)
    ossl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', `${name}.pem`, '-days', '1', '-extfile', name === 'server' ? 'server.ext' : 'client.ext')
  }
}

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }

const rules = (version: string): string => `
version: ${version}
rules:
  - id: room-warm
    devices: [room-1]
    when: { reading: temperature, above: 30 }
    then:
      - command: { device: fan-1, name: fan, args: { on: true } }
      - raiseAlert: { id: room-warm, severity: warning, message: "room above 30 C" }
`

for (const mode of AUTH_MODES) {
  test(`nats permissions (${mode.name}): a gateway with its own credentials replicates, receives its rules and its commands`, { timeout: 60000 }, async (t) => {
    const defer = deferrer(t)
    const { nats, cloudNc: cloud, cloud: cloudAuth, siteA, siteALogName } = await startSecuredNats(defer, mode.start)
    await (await new Kvm(cloud).open('RULES')).put('site-a', rules('cloud-1'))
    const beats: number[] = []
    const hb = cloud.subscribe(subjects.status('site-a'), { callback: (_e, m) => { beats.push(m.data.length) } })
    defer(() => hb.unsubscribe())

    const gw = await startGateway({ gatewayId: 'site-a', mqtt: ANON, uplink: { servers: [nats.url], ...siteA.uplink, heartbeatMs: 200, reconnectMinMs: 50, reconnectMaxMs: 500 }, commands: { ackTimeoutMs: 500 } })
    defer(() => gw.close())
    await waitFor(() => gw.gateway.uplink.state === 'up', 'the gateway to log in as gw-site-a')
    await waitFor(() => gw.gateway.control.version === 'cloud-1', 'the rule set pushed through KV to be applied')

    // An actuator for the commands, and a sensor whose reading trips the rule.
    const fan = await connectDevice(gw.ports.mqtt, { clientId: 'fan-1', clean: false })
    defer(() => fan.end(true))
    const commands: Array<{ id: string, name: string }> = []
    fan.on('message', (_topic, payload) => commands.push(JSON.parse(payload.toString())))
    await fan.subscribeAsync('devices/fan-1/commands', { qos: 1 })
    const room = await connectDevice(gw.ports.mqtt, { clientId: 'room-1' })
    defer(() => room.end(true))
    for (let i = 0; i < 20; i++) await room.publishAsync('devices/room-1/telemetry', JSON.stringify({ temperature: 20 + i * 0.6, n: i }), { qos: 1 })
    await waitFor(() => commands.some((c) => c.name === 'fan'), 'the rule to command the fan')

    // A command from the cloud, through the gateway's durable consumer on COMMANDS.
    await jetstream(cloud).publish(subjects.commands('site-a'), JSON.stringify({ id: 'cmd-cloud-1', deviceId: 'fan-1', name: 'boost', args: { minutes: 1 } }))
    await waitFor(() => commands.some((c) => c.id === 'cmd-cloud-1'), 'the cloud command to reach the actuator')

    await waitFor(() => gw.gateway.outbox.stats().events === 0 && gw.gateway.uplink.stats().inFlight === 0, 'the gateway to replicate everything')
    const telemetry = await readStream(nats.url, 'TELEMETRY', cloudAuth)
    assert.deepEqual([...(telemetry.events.get('site-a/room-1')?.keys() ?? [])].sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i + 1))
    // The priority lane (decision, alert, command outcomes) in EVENTS.
    const events = await eventsStream(cloud)
    assert.ok(events.some((e) => e.kind === 'decision' && e.ruleId === 'room-warm'), `no decision in EVENTS: ${JSON.stringify(events)}`)
    assert.ok(events.some((e) => e.kind === 'alert_raised'), 'no alert in EVENTS')
    await waitFor(() => beats.length > 0, 'heartbeats on iot.site-a.status')

    assert.equal(await scrapeMetric(gw.ports.http!, 'gateway_uplink_errors_total', { kind: 'permission' }), 0)
    assert.deepEqual(violationsLogged(nats, siteALogName), [])
  })

  test(`nats permissions (${mode.name}): gw-site-a cannot publish as site-b, read its rules or take its commands`, { timeout: 60000 }, async (t) => {
    const defer = deferrer(t)
    const { nats, cloudNc: cloud, cloud: cloudAuth, siteA, siteALogName } = await startSecuredNats(defer, mode.start)
    const rulesKv = await new Kvm(cloud).open('RULES')
    await rulesKv.put('site-b', rules('secret-of-b'))
    await rulesKv.put('site-a', rules('own'))
    const cjs = jetstream(cloud)
    await cjs.publish(subjects.commands('site-b'), JSON.stringify({ id: 'for-b', deviceId: 'x', name: 'x' }))
    const cjsm = await jetstreamManager(cloud)

    // Logged in as site-a, with site-a's own inbox prefix (the only inboxes its user may read).
    const nc = await connect({ servers: nats.url, ...siteA.client, inboxPrefix: gatewayInboxPrefix('site-a'), timeout: 2000 })
    defer(() => nc.close())
    const errors = errorsOf(nc)
    const js = jetstream(nc, { timeout: 1500 })
    const batch = (gatewayId: string): Uint8Array => v1.ReplicationBatch.encode({ gatewayId, batchId: `forged-${Date.now()}`, sentTsMs: Date.now(), events: [{ gatewayId, deviceId: 'd', seq: 1, eventTsMs: Date.now(), ingestTsMs: Date.now(), readings: [{ name: 't', value: 1 }] }] }).finish()

    // The control: its own subject works on the same connection.
    const own = await js.publish(subjects.telemetry('site-a'), batch('site-a'), { msgID: 'own-1' })
    assert.equal(own.stream, 'TELEMETRY')

    // 1. Publishing into another gateway's subjects: the JetStream publish fails, the server says why.
    await refusedMapped(js.publish(subjects.telemetry('site-b'), batch('site-b'), { msgID: 'forged-1' }), 'JetStream publish to iot.site-b.telemetry')
    await refusedMapped(js.publish(subjects.events('site-b'), batch('site-b')), 'JetStream publish to iot.site-b.events')
    nc.publish(subjects.status('site-b'), new Uint8Array(1))
    // Nor may it queue commands, not even for itself.
    await refused(js.publish(subjects.commands('site-a'), '{}'), 'JetStream publish to iot.site-a.commands')
    await waitFor(() => errors.some((e) => /permissions violation for publish to "iot\.site-b\.telemetry(\.\d+)?"/i.test(e)) && errors.some((e) => /permissions violation for publish to "iot\.site-b\.events(\.\d+)?"/i.test(e)) && errors.some((e) => e.includes('iot.site-b.status')), 'the server to report the publish violations')
    const telemetry = await readStream(nats.url, 'TELEMETRY', cloudAuth)
    assert.deepEqual([...telemetry.events.keys()], ['site-a/d'], 'nothing stored for site-b')
    assert.equal((await cjsm.streams.info('EVENTS')).state.messages, 0)

    // 2. Reading site-b's rules: direct get, message get by body, a watch, a plain subscription.
    const kv = await new Kvm(nc).open('RULES', { allow_direct: true })
    assert.match((await kv.get('site-a'))?.string() ?? '', /version: own/, 'its own rules are readable')
    await refused(kv.get('site-b'), 'KV get of $KV.RULES.site-b')
    const jsm = await jetstreamManager(nc)
    await refused(jsm.streams.getMessage('KV_RULES', { last_by_subj: '$KV.RULES.site-b' }), 'STREAM.MSG.GET on KV_RULES')
    await refused(kv.watch({ key: 'site-b' }), 'KV watch of site-b')
    await refused(kv.watch({ key: '>' }), 'KV watch of every key')
    const sub = nc.subscribe('$KV.RULES.>')
    await waitFor(() => errors.some((e) => /permissions violation for subscription to "\$KV\.RULES\.>"/i.test(e)), 'the subscription to $KV.RULES.> to be refused')
    sub.unsubscribe()

    // 3. Taking site-b's commands: its durable, a durable of its own filtered on site-b, the next message.
    const cfg = { ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All }
    await refused(jsm.consumers.add('COMMANDS', { ...cfg, durable_name: 'gw-site-b', filter_subject: subjects.commands('site-b') }), 'creating gw-site-b')
    await refused(jsm.consumers.add('COMMANDS', { ...cfg, durable_name: 'gw-site-a', filter_subject: subjects.commands('site-b') }), 'creating gw-site-a filtered on site-b')
    await refused(jsm.consumers.add('COMMANDS', { ...cfg, name: 'sneaky', filter_subject: subjects.commands('site-b') }), 'an ephemeral consumer on site-b')
    await refused(jsm.consumers.info('COMMANDS', 'gw-site-b'), 'consumer info of gw-site-b')
    await refused(nc.request('$JS.API.CONSUMER.MSG.NEXT.COMMANDS.gw-site-b', JSON.stringify({ batch: 1 }), { timeout: 1000 }), 'pulling from gw-site-b')
    // The create subject names its own filter, the body another's: the server refuses the mismatch.
    const mismatch = await nc.request(`$JS.API.CONSUMER.CREATE.COMMANDS.gw-site-a.${subjects.commands('site-a')}`,
      JSON.stringify({ stream_name: 'COMMANDS', config: { durable_name: 'gw-site-a', name: 'gw-site-a', filter_subject: subjects.commands('site-b'), ack_policy: 'explicit', deliver_policy: 'all' } }))
    assert.equal(mismatch.json<{ error?: { err_code: number } }>().error?.err_code, 10131, mismatch.string())
    // Its own consumer, on the other hand, is allowed (what the gateway does).
    await jsm.consumers.add('COMMANDS', { ...cfg, durable_name: 'gw-site-a', filter_subject: subjects.commands('site-a') })
    await assertOnlyOwnConsumer(cjsm)
    // The server logs every attempt with the user's name (what an operator would grep for).
    assert.ok(violationsLogged(nats, siteALogName).some((l) => /Subject "iot\.site-b\.telemetry(\.\d+)?"/.test(l)), nats.output().slice(-2000))
  })

  test(`nats permissions (${mode.name}): with its own inbox prefix a gateway client needs no shared _INBOX.>`, { timeout: 60000 }, async (t) => {
    const defer = deferrer(t)
    // As shipped: accounts.conf's blocks as gateway-user.ts prints them; the JWT as enrollment signs it.
    const { nats, cloudNc: cloud, siteA, fleet } = await startSecuredNats(defer, mode.name === 'JWT' ? mode.start : (d) => startUserPassMode(d, strictAccounts()))
    if (fleet) assertJwtPermissions(fleet, 'site-a')
    await (await new Kvm(cloud).open('RULES')).put('site-a', 'v1')
    const nc = await connect({ servers: nats.url, ...siteA.client, inboxPrefix: gatewayInboxPrefix('site-a') })
    defer(() => nc.close())
    const errors = errorsOf(nc)
    // What the gateway does: publish with acks, watch its rules, create and consume its durable.
    const js = jetstream(nc)
    const ack = await js.publish(subjects.telemetry('site-a'), v1.ReplicationBatch.encode({ gatewayId: 'site-a', batchId: 'b1' }).finish(), { msgID: 'b1' })
    assert.equal(ack.seq, 1)
    const kv = await new Kvm(nc).open('RULES')
    const watch = await kv.watch({ key: 'site-a' })
    const seen: string[] = []
    void (async () => { for await (const e of watch) seen.push(e.string()) })()
    await waitFor(() => seen.includes('v1'), 'the watch to deliver the current rules')
    await (await new Kvm(cloud).open('RULES')).put('site-a', 'v2')
    await waitFor(() => seen.includes('v2'), 'the watch to deliver an update')
    watch.stop()
    const jsm = await jetstreamManager(nc)
    await jsm.consumers.add('COMMANDS', { durable_name: 'gw-site-a', filter_subject: subjects.commands('site-a'), ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All })
    await jetstream(cloud).publish(subjects.commands('site-a'), '{"id":"c1"}')
    const consumer = await js.consumers.get('COMMANDS', 'gw-site-a')
    const m = await consumer.next({ expires: 5000 })
    assert.equal(m?.json<{ id: string }>().id, 'c1')
    await m!.ackAck()
    assert.deepEqual(errors, [])
    // And the shared inbox is closed to it.
    nc.subscribe('_INBOX.>')
    await waitFor(() => errors.some((e) => /permissions violation for subscription to "_INBOX\.>"/i.test(e)), 'the subscription to _INBOX.> to be refused')
  })
}

test('nats TLS: with deploy/nats/tls.conf (mutual TLS) a gateway replicates through uplink.tls; a client without a certificate is refused', { timeout: 60000 }, async (t) => {
  const defer = deferrer(t)
  const pki = tempDir('nats-pki-')
  defer(() => pki.cleanup())
  makePki(pki.dir, ['iot-cloud', 'gw-site-a'])
  const tls = readDeploy('tls.conf')
  assert.match(tls, /^\s*verify: true$/m)
  const nats = await startNats({ config: `${singleNodeConfig()}\n${tls.replaceAll('/etc/nats/tls/', `${pki.dir}/`)}` })
  defer(() => nats.cleanup())
  const f = (name: string): string => join(pki.dir, name)
  const clientTls = (name: string): { caFile: string, certFile: string, keyFile: string } => ({ caFile: f('ca.pem'), certFile: f(`${name}.pem`), keyFile: f(`${name}-key.pem`) })
  const cloud = await connect({ servers: nats.url, ...CLOUD, tls: clientTls('iot-cloud') })
  defer(() => cloud.close())
  await provisionStreams(cloud)

  const gw = await startGateway({ gatewayId: 'site-a', mqtt: ANON, uplink: { servers: [nats.url], ...SITE_A, tls: clientTls('gw-site-a'), reconnectMinMs: 50, reconnectMaxMs: 500 } })
  defer(() => gw.close())
  // Link up first: events committed before it are backlog, which goes after live events (lanes),
  // and this test reads the stream in order.
  await waitFor(() => gw.gateway.uplink.state === 'up', 'the uplink to connect over TLS')
  const dev = await connectDevice(gw.ports.mqtt, { clientId: 'tls-1' })
  defer(() => dev.end(true))
  for (let i = 0; i < 5; i++) await dev.publishAsync('devices/tls-1/telemetry', JSON.stringify({ temperature: 20 + i }), { qos: 1 })
  await waitFor(() => gw.gateway.uplink.ackedEvents === 5, 'the gateway to replicate over TLS')
  assert.equal(gw.gateway.uplink.tlsRequired, true)
  const seqs = (await batchesOf(cloud, 'TELEMETRY')).flatMap((b) => b.events.map((e) => `${b.gatewayId}/${e.deviceId}/${e.seq}`))
  assert.deepEqual(seqs, [1, 2, 3, 4, 5].map((n) => `site-a/tls-1/${n}`))

  // The right password and a trusted server, but no client certificate: refused (verify: true).
  await assert.rejects(connect({ servers: nats.url, ...SITE_A, tls: { caFile: f('ca.pem') }, reconnect: false, timeout: 3000 }))
})
