// Provisions the JetStream streams the gateways replicate into. Idempotent: safe on every start
// (creates what is missing, updates what differs in the settings we own).
import { jetstreamManager, type StreamInfo } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { Kvm } from '@nats-io/kv'
import { CLOUD_BUCKETS, STREAMS } from '../proto/index.ts'
import { CloudError } from './errors.ts'

export interface ProvisionOptions {
  /** 1 for a single server, 3 for a 3-node cluster. */
  replicas?: number
  /** JetStream de-duplication window for batch ids (ms). Beyond it the aggregator's idempotent apply takes over. */
  duplicateWindowMs?: number
  /** How long replicated batches stay in the streams (ms); 0 = forever. */
  maxAgeMs?: number
}

const ms = (n: number): number => n * 1_000_000 // JetStream durations are nanoseconds

/** Creates or updates the TELEMETRY, EVENTS and COMMANDS streams and the RULES bucket; returns the streams' info. */
export async function provisionStreams (nc: NatsConnection, opts: ProvisionOptions = {}): Promise<StreamInfo[]> {
  const jsm = await jetstreamManager(nc)
  const replicas = opts.replicas ?? 1
  const out: StreamInfo[] = []
  for (const s of [STREAMS.telemetry, STREAMS.events, STREAMS.commands]) {
    const cfg = {
      subjects: [...s.subjects],
      num_replicas: replicas,
      duplicate_window: ms(opts.duplicateWindowMs ?? 10 * 60_000),
      max_age: ms(opts.maxAgeMs ?? 7 * 24 * 3600_000),
    }
    try {
      let info: StreamInfo
      try {
        info = await jsm.streams.info(s.name)
        info = await jsm.streams.update(s.name, { ...info.config, ...cfg })
      } catch (err) {
        if (!/not found/i.test((err as Error).message)) throw err
        info = await jsm.streams.add({ name: s.name, storage: 'file' as never, ...cfg })
      }
      out.push(info)
    } catch (err) {
      throw new CloudError('CLOUD_ERR_PROVISION', `cannot provision stream ${s.name}: ${(err as Error).message}`, { cause: err })
    }
  }
  try {
    // Creates the bucket, or opens it when it exists.
    await new Kvm(nc).create(CLOUD_BUCKETS.rules, { replicas, history: 10 })
  } catch (err) {
    throw new CloudError('CLOUD_ERR_PROVISION', `cannot provision KV bucket ${CLOUD_BUCKETS.rules}: ${(err as Error).message}`, { cause: err })
  }
  return out
}

export interface ProvisionViewsOptions {
  /** 1 for a single server, 3 for a 3-node cluster. */
  replicas?: number
  bucket?: string
}

/** Creates (or opens) the views bucket: history 1, file storage, the given replicas. */
export async function provisionViews (nc: NatsConnection, opts: ProvisionViewsOptions = {}): Promise<void> {
  const bucket = opts.bucket ?? CLOUD_BUCKETS.views
  try {
    await new Kvm(nc).create(bucket, { history: 1, replicas: opts.replicas ?? 1, description: 'IoT fleet views: devices (with dedupe state), rollups, gateways' })
  } catch (err) {
    throw new CloudError('CLOUD_ERR_PROVISION', `cannot provision KV bucket ${bucket}: ${(err as Error).message}`, { cause: err })
  }
}
