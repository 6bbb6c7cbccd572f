// Moves SQLite's WAL checkpoints off the broker's event loop. With SQLite's automatic checkpoint, the
// commit that crosses 1000 WAL pages also copies them into the database file and syncs it: several
// milliseconds on the thread that decides and acknowledges, a few times a second under load. Here
// the ingest connection never checkpoints by itself; a worker thread with its own connection
// checkpoints in PASSIVE mode every intervalMs. If the worker cannot keep up (the WAL passes
// maxWalBytes: a passive checkpoint never catches a writer that never pauses), the ingest
// connection runs one passive checkpoint itself after a commit; most frames are already copied by
// then, and its next write starts the WAL over. If the worker dies, automatic checkpoints come back.
import { Worker } from 'node:worker_threads'
import type { Db } from './db.ts'
import type { Logger } from '../log.ts'
import type { GatewayMetrics } from '../metrics.ts'
import { Lifecycle } from '../../lib/lifecycle.ts'

export interface CheckpointerOptions {
  /** Database file (the one `db` has open). */
  file: string
  intervalMs: number
  /** WAL size beyond which the ingest connection checkpoints by itself after its next commit. */
  maxWalBytes: number
  durability: 'full' | 'normal'
}

/** What checkpoint-worker.mjs is started with. */
interface CheckpointWorkerData { file: string, intervalMs: number, synchronous: 'FULL' | 'NORMAL' }
/** What it sends: one checkpoint (duration, WAL frames in all, frames now in the database file), an error, or its goodbye. */
type CheckpointWorkerMessage =
  | { kind: 'checkpoint', ms: number, walFrames: number, checkpointedFrames: number, pageSize: number }
  | { kind: 'error', message: string, code?: string }
  | { kind: 'closed' }

/** SQLite's default: checkpoint on the commit that takes the WAL past this many pages. */
const SQLITE_AUTOCHECKPOINT_PAGES = 1000

/** Lifecycle: start(), close() (one last checkpoint), destroy(). */
export class Checkpointer extends Lifecycle {
  private worker: Worker | null = null
  private walOverLimit = false

  constructor (private readonly db: Db, private readonly opts: CheckpointerOptions, private readonly log: Logger, private readonly metrics: GatewayMetrics) {
    super()
  }

  start (): void {
    this.db.pragma('wal_autocheckpoint = 0')
    // A WAL that grew during a long burst is cut back to this size when it starts over.
    this.db.pragma(`journal_size_limit = ${this.opts.maxWalBytes}`)
    const workerData: CheckpointWorkerData = {
      file: this.opts.file,
      intervalMs: this.opts.intervalMs,
      synchronous: this.opts.durability === 'full' ? 'FULL' : 'NORMAL',
    }
    const worker = new Worker(new URL('./checkpoint-worker.mjs', import.meta.url), { workerData, name: 'checkpointer', resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 2 } })
    worker.unref()
    worker.on('message', (m: CheckpointWorkerMessage) => this.onMessage(m))
    worker.on('error', (err) => this.fallBack(err))
    worker.on('exit', (code) => { if (!this.isClosing) this.fallBack(new Error(`checkpoint worker exited with code ${code}`)) })
    this.worker = worker
  }

  private onMessage (m: CheckpointWorkerMessage): void {
    if (m.kind === 'checkpoint') {
      this.metrics.checkpointSeconds.observe(m.ms / 1000)
      const walBytes = m.walFrames * m.pageSize
      this.metrics.walBytes.set(walBytes)
      this.walOverLimit = walBytes > this.opts.maxWalBytes
    } else if (m.kind === 'error') {
      this.metrics.checkpointFailures.inc()
      // Rebuilt from its message and code: an Error crosses the thread boundary without its code.
      this.log.warn({ err: Object.assign(new Error(m.message), { code: m.code }) }, 'WAL checkpoint failed; retried on the next interval')
    }
  }

  /** Called by the outbox after each commit: only does work when the worker has fallen behind. */
  afterCommit (): void {
    if (!this.walOverLimit) return
    this.walOverLimit = false
    const t0 = performance.now()
    this.db.pragma('wal_checkpoint(PASSIVE)')
    this.metrics.checkpointSeconds.observe((performance.now() - t0) / 1000)
    this.log.debug({ durationMs: performance.now() - t0 }, 'WAL over its limit: checkpointed on the ingest connection')
  }

  // Without the worker the WAL would grow without bound: SQLite's own checkpoints take over again.
  private fallBack (err: Error): void {
    if (this.worker === null) return
    this.worker = null
    this.metrics.checkpointFailures.inc()
    this.log.error({ err }, 'checkpoint worker failed; SQLite checkpoints on the ingest connection from now on')
    if (this.db.open) this.db.pragma(`wal_autocheckpoint = ${SQLITE_AUTOCHECKPOINT_PAGES}`)
  }

  /** Runs one last checkpoint in the worker and stops it. Idempotent. */
  protected onClose (): Promise<void> {
    const worker = this.worker
    const done = worker === null
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
        // The worker is unref'd so that it never keeps a process alive; while we wait for its last
        // checkpoint it must, or the process could exit with this promise still pending.
        worker.ref()
        worker.on('exit', () => resolve())
        worker.on('message', (m: CheckpointWorkerMessage) => { if (m.kind === 'closed') void worker.terminate() })
        worker.postMessage({ cmd: 'close' })
      })
    this.worker = null
    return done
  }

  /** Stops the worker at once (its connection closes with the thread; the WAL stays valid). */
  protected onDestroy (): void {
    void this.worker?.terminate()
    this.worker = null
  }
}
