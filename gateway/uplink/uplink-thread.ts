// The uplink thread: everything that talks to the cloud runs here, off the event loop that serves
// MQTT and the rules: the link to NATS, the replicator (outbox reads, batch building, JetStream
// publishes and acks), the cloud channel (rules and commands from the cloud), the heartbeat and the
// stall watchdog. It reads the outbox on a read-only connection of its own; the writes of its
// bookkeeping, the rules and the commands go to the main thread as messages (thread-messages.ts).
import Database from 'better-sqlite3'
import { parentPort, workerData } from 'node:worker_threads'
import type { GatewayStatusProps } from '../../proto/index.ts'
import { createRootLogger } from '../../lib/log.ts'
import { niceThisThread } from '../../lib/thread-nice.ts'
import { deviceFieldLookup } from '../store/device-numbers.ts'
import { OutboxReader } from '../store/outbox-reader.ts'
import { AcceptedMarks } from '../store/accepted-marks.ts'
import type { Watermark } from '../store/outbox-types.ts'
import { CloudChannel } from './cloud-channel.ts'
import { DeliveryLedger } from './delivery-ledger.ts'
import { Heartbeat } from './heartbeat.ts'
import { UplinkLink } from './link.ts'
import { Replicator } from './replicator.ts'
import { StallWatchdog } from './stall-watchdog.ts'
import { createUplinkMetrics } from './uplink-metrics.ts'
import type { DeviceDeliveryEntry } from './delivery-ledger.ts'
import type { FromThread, ToThread, UplinkSnapshot, UplinkThreadData } from './thread-messages.ts'

const port = parentPort!
const data = workerData as UplinkThreadData
const cfg = data.uplink
const send = (m: FromThread): void => port.postMessage(m)

// The thread's log lines go to the main thread's logger, so that the gateway has one log stream.
const log = createRootLogger(data.logLevel, { gatewayId: data.gatewayId }, { write: (line: string) => send({ t: 'log', line }) })
const metrics = createUplinkMetrics()
const niced = niceThisThread(cfg.threadNice)
if (niced.ok) log.debug({ tid: niced.tid, nice: niced.nice }, 'uplink thread runs at a lower CPU priority')
else if (cfg.threadNice !== 0) log.warn({ reason: niced.reason }, 'uplink thread priority left as it is')

const db = new Database(data.dbFile, { fileMustExist: true })
db.pragma('query_only = ON')
db.pragma('busy_timeout = 5000')

let durable: Watermark = data.durable
let events = data.events
let shedEvents = data.shedEvents
let status: GatewayStatusProps | null = null
const commitListeners: Array<() => void> = []
const reader = new OutboxReader(db, data.epoch, {
  durable: () => durable,
  shedEvents: () => shedEvents,
  deviceField: deviceFieldLookup(db),
  onCommit: (listener) => commitListeners.push(listener),
})

// Record requests wait for the main thread's answer.
let nextId = 1
const waiting = new Map<number, { resolve: (recorded: boolean[]) => void, reject: (err: Error) => void }>()

const delivery = new DeliveryLedger(new AcceptedMarks(db), { reportDevices: cfg.deliveryReportDevices, scanRows: cfg.deliveryScanRows })
// The ledger is read from the outbox once per heartbeat period (two reads on this thread's connection).
function refreshDelivery (): void {
  const now = Date.now()
  delivery.refresh(now)
  const t = delivery.totals()
  metrics.deliveryDevices.set(t.devices)
  metrics.deliveryDevicesBehind.set(t.devicesBehind)
  metrics.deliveryUnreplicated.set(t.acceptedSeqSum - t.replicatedSeqSum)
  metrics.deliveryOldestUnsent.set(t.oldestUnsentAgeMs / 1000)
}
function deliveryReport (): { delivery: DeviceDeliveryEntry[], deliveryDevices: number } {
  const entries = delivery.report(Date.now())
  metrics.deliveryReported.inc(entries.length)
  return { delivery: entries, deliveryDevices: delivery.devices }
}

const link = new UplinkLink(cfg, data.gatewayId, log.child({ component: 'uplink' }), metrics)
const replicator = new Replicator(reader, {
  record: (batches) => new Promise((resolve, reject) => {
    const id = nextId++
    waiting.set(id, { resolve, reject })
    send({ t: 'record', id, batches })
  }),
  ack: (batch, devSeqs) => {
    if (devSeqs) delivery.acked(devSeqs)
    send({ t: 'ack', batch, snapshot: snapshot() })
  },
}, link, cfg, data.gatewayId, log.child({ component: 'replicator' }), metrics)
const channel = new CloudChannel(link, data.gatewayId, {
  loadRules: (text, revision) => send({ t: 'rules', text, revision }),
  command: (command) => send({ t: 'command', command }),
}, { verifyMs: cfg.channelVerifyMs, retryMinMs: cfg.reconnectMinMs, retryMaxMs: cfg.reconnectMaxMs }, log.child({ component: 'cloud-channel' }), metrics)
const watchdog = new StallWatchdog(cfg, link, () => ({ lastAckTs: replicator.lastAckTs, waiting: events > 0 }), log.child({ component: 'uplink' }), metrics)
// The main thread's status, with this thread's own fields as they are now.
const heartbeat = new Heartbeat(link, data.gatewayId, cfg.heartbeatMs, () => status && {
  ...status,
  tsMs: Date.now(),
  linkState: link.state,
  lastAckTsMs: replicator.lastAckTs,
  lastError: link.lastError,
  cloudChannelState: channel.state,
  cloudChannelError: channel.lastError,
  uplinkStalled: watchdog.stalled,
  uplinkStallsTotal: watchdog.stalls,
  ...deliveryReport(),
}, log.child({ component: 'heartbeat' }))

function snapshot (): UplinkSnapshot {
  const nc = link.current()?.nc
  return {
    link: { state: link.state, lastError: link.lastError, server: nc?.getServer() ?? null, tlsRequired: nc?.info?.tls_required === true },
    channel: { state: channel.state, lastError: channel.lastError },
    watchdog: { stalled: watchdog.stalled, stalls: watchdog.stalls },
    replicator: replicator.stats(),
    delivery: delivery.totals(),
  }
}

let closing = false
async function close (): Promise<void> {
  if (closing) return
  closing = true
  clearInterval(ticker)
  clearInterval(deliveryTicker)
  // The channel may be attaching (requests on the link): it finishes once the link is closed, so
  // the replicator records the acks of its batches in flight first, then the link goes.
  const channelClosed = channel.close()
  await Promise.all([watchdog.close(), heartbeat.close(), replicator.close()])
  await link.close()
  await channelClosed
  for (const w of waiting.values()) w.reject(new Error('uplink thread closing'))
  send({ t: 'closed', snapshot: snapshot() })
  db.close()
  port.close()
}

port.on('message', (m: ToThread) => {
  switch (m.t) {
    case 'outbox':
      durable = m.durable
      events = m.events
      shedEvents = m.shedEvents
      for (const l of commitListeners) l()
      break
    case 'status':
      status = m.status
      break
    case 'recorded':
      waiting.get(m.id)?.resolve(m.recorded)
      waiting.delete(m.id)
      break
    case 'recordFailed':
      waiting.get(m.id)?.reject(new Error(m.message))
      waiting.delete(m.id)
      break
    case 'metrics':
      void metrics.registry.metrics().then((text) => send({ t: 'metrics', id: m.id, text }))
      break
    case 'hold':
      Atomics.wait(new Int32Array(m.flag), 0, 0)
      break
    case 'close':
      void close()
      break
  }
})

// State changes reach the main thread at once; the rest (cursors, throttling) twice a second.
link.onState(() => send({ t: 'snapshot', snapshot: snapshot() }))
const ticker = setInterval(() => send({ t: 'snapshot', snapshot: snapshot() }), 500)
ticker.unref()
refreshDelivery()
const deliveryTicker = setInterval(refreshDelivery, cfg.heartbeatMs)
deliveryTicker.unref()
replicator.start()
link.start()
heartbeat.start()
channel.start()
watchdog.start()
send({ t: 'snapshot', snapshot: snapshot() })
