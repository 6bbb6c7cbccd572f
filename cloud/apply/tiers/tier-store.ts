// The fleet's view store as the cloud opens it: VIEWS for every document (JSON), except the rollup
// tiers, each routed to its own KV bucket (provisioned with its retention: cloud/provision.ts) and
// stored in the compact tier form (tier-codec.ts).
import type { NatsConnection } from '@nats-io/transport-node'
import { KvViewStore } from '../../store/kv-view-store.ts'
import { RoutedViewStore } from '../../store/routed-view-store.ts'
import type { DocCodec, ViewStore } from '../../store/view-store.ts'
import { decodeTierDoc, encodeTierDoc } from './tier-codec.ts'
import { TIER_NAMES, TIERS, type TierDoc } from './tiers.ts'

export const TIER_CODEC: DocCodec = {
  encode: (value) => encodeTierDoc(value as TierDoc),
  decode: (bytes) => decodeTierDoc(bytes),
}

/** The views bucket plus the tier buckets, as one store; `views` is the VIEWS store itself (live updates watch it). */
export async function openFleetStore (nc: NatsConnection, viewsBucket: string): Promise<{ store: ViewStore, views: KvViewStore }> {
  const views = await KvViewStore.open(nc, viewsBucket)
  const routes = new Map<string, ViewStore>()
  for (const t of TIER_NAMES) routes.set(TIERS[t].keyPrefix, await KvViewStore.open(nc, TIERS[t].bucket, TIER_CODEC))
  return { store: new RoutedViewStore(views, routes), views }
}
