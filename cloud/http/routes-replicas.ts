// GET /api/replicas (shape in cloud/API.md): the aggregator replicas, their partitions and lag, and
// who holds each partition's lease, read from the lease table in NATS KV.
import type { FastifyInstance } from 'fastify'
import { CloudError } from '../errors.ts'
import type { ReplicasView } from '../partitions/replicas-view.ts'

export function registerReplicaRoutes (app: FastifyInstance, replicas: (() => Promise<ReplicasView>) | null): void {
  app.get('/api/replicas', async () => {
    if (!replicas) throw new CloudError('CLOUD_ERR_UNAVAILABLE', 'the replica list needs the lease table in NATS KV')
    try {
      return await replicas()
    } catch (err) {
      throw new CloudError('CLOUD_ERR_UNAVAILABLE', `the lease table cannot be read: ${(err as Error).message}`, { cause: err })
    }
  })
}
