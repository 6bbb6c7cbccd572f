// Cloud control views (#5/#6): decisions, alerts, command timelines and rule sets between a real
// gateway (rules file, actuator on MQTT) and the cloud's API; live events; idempotent apply of
// control batches; two aggregator replicas against one.
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { jetstream } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { subjects, v1, type ControlEventProps } from '../proto/index.ts'
import { applyAlerts, applyCommands, applyDecisions, applyDeviceControl, newAlertsDoc, newCommandsDoc, newDecisionsDoc, newDeviceControlDoc, parseDetail, recordQueued, type ControlEv } from '../cloud/apply/control/index.ts'
import { checkRuleSetText } from '../cloud/http/rule-set-check.ts'
import { parseRuleSetText } from '../proto/rules/schema.ts'
import { connectDevice, startGateway, tempDir, startNats, type NatsServer, waitFor } from '../devkit/index.ts'
import { actuator, coolerRules } from './harness/actuator.ts'
import { apiFetch, deferrer, startCloud, rng, shuffle } from './harness/cloud.ts'

const ANON = { allowAnonymous: true, ratePerDevice: 1e6, burstPerDevice: 1e6 }



async function http<T = any> (method: string, url: string, body?: unknown, contentType?: string): Promise<{ status: number, body: T }> {
  const headers: Record<string, string> = {}
  let data: string | undefined
  if (body !== undefined) {
    data = typeof body === 'string' ? body : JSON.stringify(body)
    headers['content-type'] = contentType ?? (typeof body === 'string' ? 'text/plain' : 'application/json')
  }
  const r = await apiFetch(url, { method, headers, body: data })
  const text = await r.text()
  return { status: r.status, body: (text ? JSON.parse(text) : null) as T }
}

const getJson = async <T = any>(url: string): Promise<T> => {
  const r = await http<T>('GET', url)
  if (r.status !== 200) throw new Error(`${url}: HTTP ${r.status} ${JSON.stringify(r.body)}`)
  return r.body
}

interface SseEvent { event: string, data: any }

/** A server-sent events client on fetch: collects every event until close(). */
async function sse (url: string): Promise<{ events: SseEvent[], close: () => void }> {
  const ac = new AbortController()
  const r = await apiFetch(url, { signal: ac.signal })
  assert.equal(r.status, 200)
  assert.match(r.headers.get('content-type') ?? '', /^text\/event-stream/)
  const events: SseEvent[] = []
  const reader = r.body!.getReader()
  const decoder = new TextDecoder()
  void (async () => {
    let buf = ''
    try {
      for (;;) {
        const { value, done } = await reader.read()
        if (done) return
        buf += decoder.decode(value, { stream: true })
        let i
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i)
          buf = buf.slice(i + 2)
          let event = 'message'
          let data = ''
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7)
            else if (line.startsWith('data: ')) data += line.slice(6)
          }
          if (data) events.push({ event, data: JSON.parse(data) })
        }
      }
    } catch { /* aborted */ }
  })()
  return { events, close: () => ac.abort() }
}



test('cloud control: decisions, alerts (raise, ack, clear), command timelines, cloud commands, rule push and live events through the API', { timeout: 120000 }, async (t) => {
  const defer = deferrer(t)
  const nats = await startNats()
  defer(() => nats.cleanup())
  const { cloud, api } = await startCloud(nats)
  defer(() => cloud.close())
  const dir = tempDir()
  defer(() => dir.cleanup())
  const file = join(dir.dir, 'rules.yaml')
  writeFileSync(file, coolerRules('v1', 8))
  const gwId = 'gw-ctl'
  const gw = await startGateway({ gatewayId: gwId, mqtt: ANON, rules: { file }, uplink: { servers: [nats.url], heartbeatMs: 200 } })
  defer(() => gw.close())
  const cooler = await actuator(gw.ports.mqtt, 'cooler-1')
  const room = await connectDevice(gw.ports.mqtt, { clientId: 'room-1' })
  defer(() => { cooler.client.end(true); room.end(true) })

  const live = await sse(`${api}/api/events?gateway=${gwId}`)
  defer(() => live.close())
  await waitFor(() => live.events.some((e) => e.event === 'ready'), 'the live stream to be ready')
  const seen = (pred: (e: SseEvent) => boolean, what: string): Promise<SseEvent> => waitFor(() => live.events.find(pred), `live event: ${what} (seen: ${live.events.map((e) => e.event + ':' + JSON.stringify(e.data).slice(0, 150)).join('; ')})`, 15000)

  // A decision that commands the cooler and raises an alert.
  await room.publishAsync('devices/room-1/telemetry', JSON.stringify({ temperature: 7 }), { qos: 1 })
  await room.publishAsync('devices/room-1/telemetry', JSON.stringify({ temperature: 9.5 }), { qos: 1 })
  const decisions = await waitFor(async () => {
    const d = await getJson(`${api}/api/gateways/${gwId}/decisions`)
    return d.decisions.length === 1 ? d.decisions : null
  }, 'the decision in the API', 15000)
  assert.deepEqual([decisions[0].ruleId, decisions[0].deviceId, decisions[0].kind, decisions[0].ruleSetVersion], ['cold-room-warm', 'room-1', 'fired', 'v1'])
  assert.deepEqual(decisions[0].trigger, { reading: 'temperature', value: 9.5, eventTsMs: decisions[0].trigger.eventTsMs })
  assert.ok(decisions[0].durationMs >= 0 && decisions[0].durationMs < 1000)
  assert.deepEqual(decisions[0].actions.map((a: any) => a.type), ['command', 'raiseAlert'])

  const active = await waitFor(async () => (await getJson(`${api}/api/alerts?active=1&gateway=${gwId}`)).alerts[0], 'the alert to be active')
  assert.deepEqual([active.alertId, active.gatewayId, active.deviceId, active.severity, active.active, active.acknowledged], ['cold-room-warm', gwId, 'room-1', 'critical', true, false])
  // The operator acknowledges it.
  const ack = await http('POST', `${api}/api/alerts/${gwId}/cold-room-warm/ack`, { by: 'ops-1', note: 'on it' })
  assert.equal(ack.status, 200)
  assert.deepEqual([ack.body.alert.acknowledged, ack.body.alert.ack.by], [true, 'ops-1'])
  assert.equal((await getJson(`${api}/api/alerts?active=1`)).alerts[0].acknowledged, true, 'the acknowledgement is stored in the view')
  assert.equal((await http('POST', `${api}/api/alerts/${gwId}/no-such-alert/ack`, {})).status, 404)

  // The rule's command: sent -> delivered -> acknowledged, in the gateway's and the device's views.
  // Views converge whatever the order the batches are applied in (promise 3): a batch redelivered
  // after a nak may bring 'delivered' after 'acknowledged', so wait for the whole timeline.
  const ruleCmd = await waitFor(async () => {
    const c = (await getJson(`${api}/api/gateways/${gwId}/commands`)).commands[0]
    return c?.status === 'acknowledged' && c.timeline.length >= 3 ? c : null
  }, 'the rule command acknowledged, with its whole timeline', 15000)
  assert.deepEqual(ruleCmd.timeline.map((e: any) => e.status), ['sent', 'delivered', 'acknowledged'])
  assert.deepEqual([ruleCmd.deviceId, ruleCmd.name, ruleCmd.source, ruleCmd.ruleId, ruleCmd.args, ruleCmd.terminal], ['cooler-1', 'cooler', 'rule', 'cold-room-warm', { on: true }, true])
  assert.equal((await getJson(`${api}/api/commands/${gwId}/${ruleCmd.commandId}`)).status, 'acknowledged')
  const coolerRefs = await getJson(`${api}/api/devices/${gwId}/cooler-1/control`)
  assert.deepEqual(coolerRefs.commands.map((c: any) => [c.commandId, c.status]), [[ruleCmd.commandId, 'acknowledged']])

  // The value falls: the rule clears, the alert is cleared.
  await room.publishAsync('devices/room-1/telemetry', JSON.stringify({ temperature: 6.5 }), { qos: 1 })
  await waitFor(async () => (await getJson(`${api}/api/alerts?active=1&gateway=${gwId}`)).alerts.length === 0, 'the alert to be cleared', 15000)
  const all = await getJson(`${api}/api/alerts?gateway=${gwId}`)
  assert.deepEqual([all.alerts[0].active, all.alerts[0].acknowledged], [false, true])
  assert.deepEqual(all.events.map((e: any) => e.change), ['cleared', 'raised'])
  const roomRefs = await waitFor(async () => {
    const r = await getJson(`${api}/api/devices/${gwId}/room-1/control`)
    return r.decisions.length === 2 ? r : null
  }, 'both decisions referenced by the trigger device')
  assert.deepEqual(roomRefs.decisions.map((d: any) => d.kind), ['cleared', 'fired'])
  assert.deepEqual(roomRefs.alerts.map((a: any) => a.change), ['cleared', 'raised'])

  // A command from the cloud: queued in the view, published to the gateway, acknowledged by the device.
  const sent = await http('POST', `${api}/api/commands`, { gatewayId: gwId, deviceId: 'cooler-1', name: 'defrost', args: { minutes: 5 }, ttlMs: 30000 })
  assert.equal(sent.status, 202, JSON.stringify(sent.body))
  const id = sent.body.id as string
  const statuses: string[] = []
  const cloudCmd = await waitFor(async () => {
    const c = await getJson(`${api}/api/commands/${gwId}/${id}`)
    if (statuses.at(-1) !== c.status) statuses.push(c.status)
    return c.status === 'acknowledged' ? c : null
  }, 'the cloud command acknowledged', 20000, 5)
  const order = ['queued', 'sent', 'delivered', 'acknowledged']
  assert.deepEqual(cloudCmd.timeline.map((e: any) => e.status), order)
  assert.ok(statuses.every((st, i) => i === 0 || order.indexOf(st) > order.indexOf(statuses[i - 1])), `statuses seen in order: ${statuses.join(' -> ')}`)
  assert.deepEqual([cloudCmd.source, cloudCmd.args, cloudCmd.expiresAtMs > Date.now()], ['cloud', { minutes: 5 }, true])
  const got = cooler.received.find((c) => c.id === id)
  assert.deepEqual([got?.name, got?.args], ['defrost', { minutes: 5 }])
  assert.equal((await http('POST', `${api}/api/commands`, { gatewayId: gwId, deviceId: 'cooler-1' })).status, 400)
  // For a gateway that is not connected, the command waits in its stream: queued in the views.
  const waiting = await http('POST', `${api}/api/commands`, { gatewayId: 'gw-away', deviceId: 'valve-1', name: 'close' })
  assert.equal(waiting.status, 202)
  const queued = await getJson(`${api}/api/commands/gw-away/${waiting.body.id}`)
  assert.deepEqual([queued.status, queued.timeline.map((e: any) => e.status), queued.deviceId, queued.source], ['queued', ['queued'], 'valve-1', 'cloud'])
  assert.deepEqual((await getJson(`${api}/api/devices/gw-away/valve-1/control`)).commands.map((c: any) => c.status), ['queued'])

  // Live events: a value change, the alert, the command's status, decisions, the gateway.
  const valueEvent = await seen((e) => e.event === 'device' && e.data.deviceId === 'room-1' && e.data.readings.temperature === 6.5, 'room-1 at 6.5')
  assert.equal(valueEvent.data.gatewayId, gwId)
  await seen((e) => e.event === 'alert' && e.data.alertId === 'cold-room-warm' && e.data.change === 'raised', 'alert raised')
  await seen((e) => e.event === 'alert' && e.data.change === 'acknowledged', 'alert acknowledged')
  await seen((e) => e.event === 'alert' && e.data.change === 'cleared', 'alert cleared')
  for (const status of ['queued', 'sent', 'acknowledged']) await seen((e) => e.event === 'command' && e.data.commandId === id && e.data.status === status, `cloud command ${status}`)
  await seen((e) => e.event === 'decision' && e.data.kind === 'cleared', 'the clearing decision')
  await seen((e) => e.event === 'gateway' && e.data.gatewayId === gwId, 'gateway status')
  const before = live.events.length
  await room.publishAsync('devices/room-1/telemetry', JSON.stringify({ temperature: 5.25 }), { qos: 1 })
  await seen((e) => live.events.indexOf(e) >= before && e.event === 'device' && e.data.readings.temperature === 5.25, 'a new value')

  // A rule set pushed through the API reaches the gateway, which reports running it.
  const bad = await http('PUT', `${api}/api/rules/${gwId}`, 'version: x\nrules: {}', 'application/yaml')
  assert.deepEqual([bad.status, bad.body.error], [422, 'invalid_rule_set'])
  const text = coolerRules('cloud-2', 30)
  const put = await http('PUT', `${api}/api/rules/${gwId}`, text, 'application/yaml')
  assert.equal(put.status, 200, JSON.stringify(put.body))
  assert.deepEqual([put.body.version, put.body.rules, put.body.revision > 0], ['cloud-2', 1, true])
  const gwView = await waitFor(async () => {
    const g = (await getJson(`${api}/api/gateways/${gwId}`)).status
    return g.ruleSetVersion === 'cloud-2' ? g : null
  }, 'the gateway to report running cloud-2', 15000)
  const stored = await getJson(`${api}/api/rules/${gwId}`)
  assert.deepEqual([stored.text, stored.version, stored.runningVersion, stored.inSync], [text, 'cloud-2', 'cloud-2', true])
  assert.ok((await getJson(`${api}/api/rules`)).gateways.some((g: any) => g.gatewayId === gwId && g.inSync))
  // JSON is stored as sent, not re-serialised.
  const json = '{ "version": "cloud-3", "rules": [] }'
  assert.equal((await http('PUT', `${api}/api/rules/${gwId}`, json, 'application/json')).status, 200)
  assert.equal((await getJson(`${api}/api/rules/${gwId}`)).text, json)
  assert.equal((await http('POST', `${api}/api/rules/${gwId}/validate`, 'version: 1\nrules: [{ id: a }]')).status, 422)

  // The gateway view carries what the console needs; link health has one sample per heartbeat.
  assert.ok(gwView.decisionP99Ms > 0, 'decision latency reported')
  for (const k of ['quarantinedTotal', 'rejectedTotal', 'backlogEvents', 'oldestUnsentAgeMs', 'replicationLagMs', 'ingestEventsPerSec']) assert.equal(typeof gwView[k], 'number', k)
  assert.ok(gwView.applyLagMs !== null && gwView.applyLagMs >= 0 && gwView.applyLagMs < 10000, `apply lag ${gwView.applyLagMs}`)
  const health = await waitFor(async () => {
    const h = await getJson(`${api}/api/gateways/${gwId}/health`)
    return h.samples.length >= 3 ? h : null
  }, 'link-health samples')
  const last = health.samples.at(-1)
  assert.deepEqual(Object.keys(last), ['t', 'backlogEvents', 'oldestUnsentAgeMs', 'replicationLagMs', 'ingestEventsPerSec', 'uplinkEventsPerSec', 'linkUp'])
  assert.equal(last.linkUp, 1)
  assert.ok(health.samples.every((s: any, i: number) => i === 0 || s.t > health.samples[i - 1].t))

  // Control accounting: every control event applied once, each in exactly one view.
  await waitFor(() => gw.gateway.outbox.stats().events === 0 && gw.gateway.uplink.stats().inFlight === 0, 'the gateway to drain')
  const acct = await waitFor(async () => {
    const a = (await getJson(`${api}/api/accounting?gateway=${gwId}`)).control[0]
    return a && a.received === a.highestSeq ? a : null
  }, 'control accounting')
  assert.deepEqual([acct.duplicates, acct.gapsOpen], [0, 0])
  const cmds = (await getJson(`${api}/api/gateways/${gwId}/commands`)).commands
  const inViews = (await getJson(`${api}/api/gateways/${gwId}/decisions`)).decisions.length +
    (await getJson(`${api}/api/alerts?gateway=${gwId}`)).events.length +
    cmds.reduce((n: number, c: any) => n + c.timeline.filter((e: any) => e.status !== 'queued').length, 0)
  assert.equal(inViews, acct.received)
})

// --- replay and replicas -------------------------------------------------------------------------



const BASE = Date.UTC(2026, 10, 3, 8, 0)
/** Rollup tiers that keep a year: the history of 2026-11 is not too old for any of them. */
const KEEP_2026_11 = { rollup1mMs: 365 * 24 * 3600_000, rollup5mMs: 365 * 24 * 3600_000 }

/** A gateway's control script: decisions, alert raises and clears, command outcomes (250 commands: under the view's bound). */
function controlScript (gatewayId: string): ControlEventProps[] {
  const out: ControlEventProps[] = []
  let seq = 0
  const push = (e: ControlEventProps): void => { seq++; out.push({ gatewayId, deviceId: '$control', seq, eventTsMs: BASE + seq * 1000, ingestTsMs: BASE + seq * 1000, ...e }) }
  for (let i = 0; i < 250; i++) {
    const dev = `room-${i % 4}`
    const alertId = `hot-${i % 6}`
    const fired = Math.floor(i / 6) % 2 === 0
    const ruleId = `rule-${i % 3}`
    push({ kind: 'decision', subjectDeviceId: dev, ruleId, ruleSetVersion: 'v1', message: fired ? 'fired' : 'cleared', durationMs: 0.1 + (i % 7) / 10, detailJson: JSON.stringify({ trigger: { deviceId: dev, reading: 'temperature', value: 20 + (i % 10), eventTsMs: BASE + i }, actions: [{ command: { device: `act-${i % 2}`, name: 'cool', args: { on: fired } } }, fired ? { raiseAlert: { id: alertId, severity: 'warning', message: 'hot' } } : { clearAlert: { id: alertId } }], evalMicros: 3 }) })
    push({ kind: fired ? 'alert_raised' : 'alert_cleared', subjectDeviceId: dev, ruleId, ruleSetVersion: 'v1', alertId, severity: fired ? (i % 3 === 0 ? 'critical' : 'warning') : '', message: fired ? `hot ${i}` : '' })
    for (const status of i % 5 === 0 ? ['sent', 'timed_out'] : ['sent', 'delivered', 'acknowledged']) {
      push({ kind: 'command_result', subjectDeviceId: `act-${i % 2}`, ruleId, ruleSetVersion: 'v1', commandId: `cmd-${i}`, commandName: 'cool', commandStatus: status, durationMs: status === 'sent' ? 0 : 25, detailJson: JSON.stringify({ args: { on: fired }, attempts: status === 'timed_out' ? 3 : 1, source: 'rule', expiresAtMs: BASE + 60_000 }) })
    }
  }
  return out
}

interface Published { subject: string, data: Uint8Array, control: boolean }

/** Telemetry and control batches, shuffled; control seqs 500..509 are missing and explained by a gap record. */
function script (gatewayId: string): { batches: Published[], telemetry: number, control: number, devices: string[] } {
  const rand = rng(11)
  const devices = ['room-0', 'room-1', 'room-2']
  const events = []
  for (const d of devices) {
    for (let seq = 1; seq <= 300; seq++) events.push({ deviceId: d, seq, eventTsMs: BASE + seq * 9000 + Math.floor(rand() * 20_000), ingestTsMs: BASE + seq * 9000, readings: [{ name: 'temperature', value: Math.round(rand() * 400) / 10 }] })
  }
  const control = controlScript(gatewayId).filter((c) => Number(c.seq) < 500 || Number(c.seq) > 509)
  const batches: Published[] = []
  const shuffledEvents = shuffle(events, rand)
  for (let i = 0; i < shuffledEvents.length; i += 50) {
    batches.push({ subject: subjects.telemetry(gatewayId), control: false, data: v1.ReplicationBatch.encode({ gatewayId, batchId: `t-${i}`, sentTsMs: BASE, events: shuffledEvents.slice(i, i + 50).map((e) => ({ gatewayId, ...e })) }).finish() })
  }
  const shuffledControl = shuffle(control, rand)
  for (let i = 0; i < shuffledControl.length; i += 30) {
    batches.push({ subject: subjects.events(gatewayId), control: true, data: v1.ReplicationBatch.encode({ gatewayId, batchId: `c-${i}`, sentTsMs: BASE, control: shuffledControl.slice(i, i + 30) }).finish() })
  }
  batches.push({ subject: subjects.events(gatewayId), control: true, data: v1.ReplicationBatch.encode({ gatewayId, batchId: 'gap', sentTsMs: BASE, gaps: [{ gatewayId, deviceId: '$control', fromSeq: 500, toSeq: 509, count: 10, reason: 'shed', recordedTsMs: BASE }] }).finish() })
  return { batches: shuffle(batches, rand), telemetry: events.length, control: control.length, devices }
}

async function publish (url: string, batches: Published[], prefix: string): Promise<void> {
  const nc = await connect({ servers: url })
  const js = jetstream(nc)
  for (let i = 0; i < batches.length; i++) await js.publish(batches[i].subject, batches[i].data, { msgID: `${prefix}-${i}` })
  await nc.close()
}

/**
 * Everything the API shows of one gateway, less what depends on when or in which order batches
 * arrived: duplicate counts, apply times, `gapsClosed` (holes filled late: an arrival-order count by
 * definition), and the last bits of rollup sums (floating-point addition in a different order).
 */
async function snapshot (api: string, gatewayId: string, devices: string[]): Promise<unknown> {
  const strip = ({ duplicates: _, gapRecordDuplicates: __, gapsClosed: ___, ...rest }: any): unknown => rest
  const round = (buckets: any[]): unknown => buckets.map((b) => ({ ...b, readings: Object.fromEntries(Object.entries(b.readings).map(([n, a]: [string, any]) => [n, { ...a, sum: Number(a.sum.toPrecision(12)), avg: Number(a.avg.toPrecision(12)) }])) }))
  const acct = await getJson(`${api}/api/accounting?gateway=${gatewayId}`)
  const out: Record<string, unknown> = {
    totals: strip(acct.totals),
    devices: acct.devices.map(strip),
    control: acct.control.map(strip),
    alerts: await getJson(`${api}/api/alerts?gateway=${gatewayId}&limit=1000`),
    decisions: await getJson(`${api}/api/gateways/${gatewayId}/decisions`),
    commands: await getJson(`${api}/api/gateways/${gatewayId}/commands`),
  }
  for (const d of [...devices, 'act-0', 'act-1', 'room-3']) {
    const dv = d.startsWith('room-') && d !== 'room-3' ? await getJson(`${api}/api/devices/${gatewayId}/${d}`) : null
    out[d] = {
      device: dv && { latest: { ...dv.latest, appliedMs: 0 }, accounting: strip(dv.accounting) },
      control: await getJson(`${api}/api/devices/${gatewayId}/${d}/control`),
      m1: dv && round((await getJson(`${api}/api/devices/${gatewayId}/${d}/history?from=${BASE - 3600_000}&to=${BASE + 3 * 3600_000}&res=1m`)).buckets),
      h1: dv && round((await getJson(`${api}/api/devices/${gatewayId}/${d}/history?from=${BASE - 3600_000}&to=${BASE + 3 * 3600_000}&res=1h`)).buckets),
    }
  }
  return out
}

async function applied (api: string, gatewayId: string, telemetry: number, control: number, duplicates = 0): Promise<void> {
  await waitFor(async () => {
    const a = await getJson(`${api}/api/accounting?gateway=${gatewayId}`)
    const c = a.control[0]
    return a.totals.received === telemetry && c?.received === control && c.gapRecords === 1 && c.duplicates === duplicates
  }, `${telemetry} events and ${control} control events applied (${duplicates} duplicates)`, 60000, 50)
}

test('cloud control: two aggregator replicas give the same views as one (one of them applies the gateway); replaying control batches changes nothing', { timeout: 180000 }, async (t) => {
  const defer = deferrer(t)
  const gatewayId = 'gw-rep'
  const s = script(gatewayId)

  // The reference: one replica on its own nats-server.
  const natsOne = await startNats()
  defer(() => natsOne.cleanup())
  const one = await startCloud(natsOne, { retention: KEEP_2026_11 })
  defer(() => one.cloud.close())
  await publish(natsOne.url, s.batches, 'one')
  await applied(one.api, gatewayId, s.telemetry, s.control)
  const reference = await snapshot(one.api, gatewayId, s.devices)
  // The history compared below is there (every telemetry event in the 1m and the 1h tier).
  const counted = (res: 'm1' | 'h1'): number => s.devices.reduce((n, d) => n + ((reference as any)[d][res] ?? []).reduce((m: number, b: any) => m + b.readings.temperature.count, 0), 0)
  assert.deepEqual([counted('m1'), counted('h1')], [s.telemetry, s.telemetry])

  // Two replicas on another server, small groups. The work is partitioned by gateway (README
  // "Scaling out"): one replica holds this gateway's partition and applies all of it.
  const natsTwo = await startNats()
  defer(() => natsTwo.cleanup())
  const a = await startCloud(natsTwo, { aggregator: { maxBatchMessages: 4 }, retention: KEEP_2026_11 })
  defer(() => a.cloud.close())
  const b = await startCloud(natsTwo, { aggregator: { maxBatchMessages: 4 }, retention: KEEP_2026_11 })
  defer(() => b.cloud.close())
  await publish(natsTwo.url, s.batches, 'two')
  await applied(a.api, gatewayId, s.telemetry, s.control)
  const statsA = a.cloud.aggregator!.stats()
  const statsB = b.cloud.aggregator!.stats()
  assert.equal(statsA.batches + statsB.batches, s.batches.length, 'every batch applied by one replica or the other')
  assert.ok((statsA.batches === 0) !== (statsB.batches === 0), `one replica applied the gateway's batches, not both (${statsA.batches} + ${statsB.batches})`)
  assert.deepEqual(await snapshot(b.api, gatewayId, s.devices), reference)
  const acct = await getJson(`${a.api}/api/accounting?gateway=${gatewayId}`)
  assert.deepEqual([acct.totals.received, acct.totals.duplicates, acct.totals.gapsOpen], [s.telemetry, 0, 0])
  assert.deepEqual([acct.control[0].received, acct.control[0].duplicates, acct.control[0].gapsOpen, acct.control[0].gapsExplained], [s.control, 0, 0, 10])

  // The control batches again, with message ids JetStream has not seen: only duplicate counts change.
  await publish(natsTwo.url, s.batches.filter((x) => x.control), 'replay')
  await applied(a.api, gatewayId, s.telemetry, s.control, s.control)
  assert.deepEqual(await snapshot(a.api, gatewayId, s.devices), reference)
  assert.equal((await getJson(`${a.api}/api/accounting?gateway=${gatewayId}`)).control[0].gapRecordDuplicates, 1)
})

// --- pure apply -----------------------------------------------------------------------------------

function toEv (c: ControlEventProps): ControlEv {
  return { seq: Number(c.seq), kind: c.kind ?? '', eventTsMs: Number(c.eventTsMs), ingestTsMs: Number(c.ingestTsMs), deviceId: c.subjectDeviceId ?? '', ruleId: c.ruleId ?? '', ruleSetVersion: c.ruleSetVersion ?? '', alertId: c.alertId ?? '', severity: c.severity ?? '', message: c.message ?? '', commandId: c.commandId ?? '', commandName: c.commandName ?? '', commandStatus: c.commandStatus ?? '', durationMs: c.durationMs ?? 0, detail: parseDetail(c.detailJson) }
}

test('cloud control apply: any order, any chunking, any duplicates give the same bounded documents', () => {
  const events = controlScript('gw').map(toEv)
  const limits = { decisions: 40, alerts: 100, alertEvents: 30, commands: 300, timeline: 2, deviceRefs: 7 }
  const run = (order: ControlEv[], chunk: number): string => {
    const docs = { dec: newDecisionsDoc('gw'), alr: newAlertsDoc('gw'), cmd: newCommandsDoc('gw'), dev: newDeviceControlDoc('gw', 'act-1'), room: newDeviceControlDoc('gw', 'room-2') }
    for (let i = 0; i < order.length; i += chunk) {
      const part = order.slice(i, i + chunk)
      applyDecisions(docs.dec, part, limits.decisions)
      applyAlerts(docs.alr, part, limits)
      applyCommands(docs.cmd, part, limits)
      applyDeviceControl(docs.dev, part.filter((e) => e.deviceId === 'act-1'), limits.deviceRefs)
      applyDeviceControl(docs.room, part.filter((e) => e.deviceId === 'room-2'), limits.deviceRefs)
    }
    return JSON.stringify(docs)
  }
  const reference = run(events, events.length)
  const rand = rng(5)
  for (let k = 0; k < 5; k++) {
    const noisy = shuffle([...events, ...events.filter(() => rand() < 0.3)], rand)
    const got = run(noisy, 1 + Math.floor(rand() * 40))
    if (got !== reference) {
      const a = JSON.parse(got), b = JSON.parse(reference)
      for (const key of Object.keys(b)) if (JSON.stringify(a[key]) !== JSON.stringify(b[key])) assert.deepEqual(a[key], b[key], `shuffle ${k}: ${key}`)
    }
  }
  const docs = JSON.parse(reference)
  assert.equal(docs.dec.items.length, 40)
  assert.equal(docs.dec.items[0].seq, Math.max(...events.filter((e) => e.kind === 'decision').map((e) => e.seq)))
  assert.equal(docs.alr.events.length, 30)
  assert.equal(docs.alr.alerts.length, 6)
  assert.ok(docs.cmd.commands.every((c: any) => c.timeline.length <= 2 && (c.status === 'acknowledged' || c.status === 'timed_out')))
  assert.equal(docs.dev.commands.length, 7)
  // The same events again change nothing (no write).
  const cmd = newCommandsDoc('gw')
  assert.equal(applyCommands(cmd, events, limits), true)
  assert.equal(applyCommands(cmd, events, limits), false)
  // A command queued by the cloud, then reported by the gateway in any order, has one timeline.
  const q = { commandId: 'cmd-7', deviceId: 'act-1', name: 'cool', args: { on: true }, queuedAtMs: BASE, expiresAtMs: BASE + 60_000 }
  const early = newCommandsDoc('gw')
  applyCommands(early, events.filter((e) => e.commandId === 'cmd-7'), { commands: 10, timeline: 16 })
  recordQueued(early, q, { commands: 10, timeline: 16 })
  const late = newCommandsDoc('gw')
  recordQueued(late, q, { commands: 10, timeline: 16 })
  applyCommands(late, events.filter((e) => e.commandId === 'cmd-7'), { commands: 10, timeline: 16 })
  assert.deepEqual(early, late)
  assert.deepEqual(early.commands[0].timeline.map((e) => e.status), ['queued', 'sent', 'delivered', 'acknowledged'])
})

test('cloud rules check: the gateway\'s own schema and checker, so the cloud stores only what a gateway runs; a refusal names the rule and the field', () => {
  assert.deepEqual(checkRuleSetText(coolerRules('v9', 3)), { ok: true, summary: { version: 'v9', rules: 1, ruleIds: ['cold-room-warm'] } })
  const rule = '{ id: x, when: { reading: t, above: 1 }, then: [{ clearAlert: { id: a } }] }'
  for (const [text, why] of [
    // A numeric version: the gateway refuses it, so the cloud must not store it (the old light check did).
    ['{"version": 2, "rules": []}', /version: expected string/],
    ['rules: []', /version: required/],
    ['version: a\nrules: {}', /rules: expected array/],
    ['version: a\nrules: [{ when: {} }]', /rules\[0\]: id: required/],
    [`version: a\nrules: [${rule}, ${rule}]`, /rule "x": id: duplicate rule id/],
    ['version: [', /not valid YAML/],
    ['- 1', /\(root\): expected object/],
  ] as const) {
    const r = checkRuleSetText(text)
    assert.ok(!r.ok && why.test(r.message), `${text}: ${JSON.stringify(r)}`)
    assert.throws(() => parseRuleSetText(text), (err: Error) => r.ok === false && r.message === err.message, `${text}: the gateway's message differs`)
  }
})
