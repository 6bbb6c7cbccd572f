// An aggregator over the fleet store (VIEWS plus the rollup tier buckets) on its own nats-server,
// consuming TELEMETRY, with the views that read it: for the rollup-tier and history tests.
import { jetstream, type JetStreamClient } from '@nats-io/jetstream'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { Aggregator } from '../../cloud/apply/aggregator.ts'
import { openFleetStore } from '../../cloud/apply/tiers/tier-store.ts'
import type { TierRetention } from '../../cloud/apply/tiers/tiers.ts'
import { createLogger } from '../../cloud/log.ts'
import { createCloudMetrics, type CloudMetrics } from '../../cloud/metrics.ts'
import { provisionStreams, provisionViews } from '../../cloud/provision.ts'
import type { ViewStore } from '../../cloud/store/view-store.ts'
import { FleetViews } from '../../cloud/views/views.ts'
import { startNats } from '../../devkit/index.ts'
import { deferrer } from './cloud.ts'

export interface ViewsRig { nc: NatsConnection, js: JetStreamClient, store: ViewStore, metrics: CloudMetrics, agg: Aggregator, views: FleetViews }

/** Starts the rig; everything is closed after the test. */
export async function startViewsRig (t: { after: (fn: () => Promise<void>) => void }, opts: { retention?: TierRetention, now?: () => number } = {}): Promise<ViewsRig> {
  const defer = deferrer(t)
  const nats = await startNats()
  defer(() => nats.cleanup())
  const nc = await connect({ servers: nats.url })
  defer(() => nc.close())
  await provisionStreams(nc)
  await provisionViews(nc, { retention: opts.retention })
  const { store } = await openFleetStore(nc, 'VIEWS')
  const metrics = createCloudMetrics({ defaultMetrics: false })
  const agg = new Aggregator(nc, store, metrics, createLogger(process.env.TEST_LOG ?? 'silent'), { retention: opts.retention, now: opts.now, streams: ['telemetry'] })
  await agg.start()
  defer(() => agg.close())
  return { nc, js: jetstream(nc), store, metrics, agg, views: new FleetViews(store, { offlineTimeoutMs: 5000 }) }
}
