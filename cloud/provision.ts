// Provisions the JetStream streams the gateways replicate into. Idempotent: safe on every start
// (creates what is missing, updates what differs in the settings we own).
import { jetstreamManager, type StreamInfo } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { Kvm } from '@nats-io/kv'
import { CLOUD_BUCKETS, STREAMS } from '../proto/index.ts'
import { CloudError } from './errors.ts'
import { DEFAULT_RETENTION, TIER_NAMES, TIERS, type TierRetention } from './apply/tiers/tiers.ts'

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
  /** Retention of the rollup tiers (default DEFAULT_RETENTION: 14 d, 90 d, 730 d). */
  retention?: TierRetention
}

/** Creates (or opens) the views bucket (history 1, file storage, the given replicas) and the rollup tier buckets. */
export async function provisionViews (nc: NatsConnection, opts: ProvisionViewsOptions = {}): Promise<void> {
  const bucket = opts.bucket ?? CLOUD_BUCKETS.views
  try {
    await new Kvm(nc).create(bucket, { history: 1, replicas: opts.replicas ?? 1, description: 'IoT fleet views: devices (with dedupe state), gateways, control views (rollups: ROLLUP_* buckets)' })
  } catch (err) {
    throw new CloudError('CLOUD_ERR_PROVISION', `cannot provision KV bucket ${bucket}: ${(err as Error).message}`, { cause: err })
  }
  await provisionTiers(nc, { replicas: opts.replicas, retention: opts.retention ?? DEFAULT_RETENTION })
}

/**
 * Creates the rollup tier buckets (ROLLUP_1M, ROLLUP_5M, ROLLUP_1H; history 1) with max_age = the
 * tier's retention, so NATS ages old rollups out; on an existing bucket a changed retention is
 * applied (documents older than a shortened retention go at once).
 */
export async function provisionTiers (nc: NatsConnection, opts: { replicas?: number, retention: TierRetention }): Promise<void> {
  const jsm = await jetstreamManager(nc)
  for (const tier of TIER_NAMES) {
    const { bucket } = TIERS[tier]
    const maxAge = ms(opts.retention[tier])
    try {
      let info: StreamInfo | null = null
      try {
        info = await jsm.streams.info(`KV_${bucket}`)
      } catch (err) {
        if (!/not found/i.test((err as Error).message)) throw err
      }
      if (!info) {
        await new Kvm(nc).create(bucket, { history: 1, replicas: opts.replicas ?? 1, ttl: opts.retention[tier], description: `IoT fleet rollups, ${tier} tier (retention = max_age)` })
      } else if (info.config.max_age !== maxAge) {
        await jsm.streams.update(info.config.name, { ...info.config, max_age: maxAge, duplicate_window: Math.min(info.config.duplicate_window, maxAge) })
      }
    } catch (err) {
      throw new CloudError('CLOUD_ERR_PROVISION', `cannot provision KV bucket ${bucket}: ${(err as Error).message}`, { cause: err })
    }
  }
}
