// Group fsync of the outbox's WAL, off the event loop. SQLite with synchronous=FULL fsyncs the WAL
// inside every commit, on the thread that commits: the broker's, which is also the one that takes
// control decisions, so every decision that arrives during a commit waited for the disk (0.2 ms on
// this VM, several ms on SD cards and cheap SSDs). Instead the outbox commits with synchronous=NORMAL
// (the frames reach the file with write(), no sync) and asks this class to run its callbacks once the
// WAL file is on disk: fs.fsync on the libuv thread pool. fsync covers every write made to the file
// before it was called, through any descriptor, so each callback runs only after a sync that started
// after its commit. Commits made while one sync is running share the next one.
import { closeSync, fsync, fsyncSync, openSync } from 'node:fs'
import { Lifecycle } from '../../lib/lifecycle.ts'

export type SyncCallback = (err: Error | null) => void

interface SyncBatch { callbacks: SyncCallback[], done: boolean }

export class WalSync extends Lifecycle {
  private fd: number | null = null
  private waiting: SyncCallback[] = []
  private running: SyncBatch | null = null
  /** Async fsyncs not returned yet: the descriptor is closed only when none is. */
  private inFlight = 0
  /** Set once close() has flushed: no new sync is accepted. */
  private shut = false

  /** `file`: the WAL (gateway.db-wal); onSynced(ms) observes each sync's duration. */
  constructor (private readonly file: string, private readonly onSynced: (ms: number) => void = () => {}) {
    super()
  }

  /** Runs cb once everything written to the WAL until now is on disk (err: the sync failed). */
  after (cb: SyncCallback): void {
    if (this.shut) return cb(new Error('WAL sync is closed'))
    this.waiting.push(cb)
    if (this.running === null) this.start()
  }

  private start (): void {
    const batch: SyncBatch = { callbacks: this.waiting, done: false }
    this.waiting = []
    this.running = batch
    let fd: number
    try {
      fd = this.open()
    } catch (err) {
      return this.finish(batch, err as Error)
    }
    const t0 = performance.now()
    this.inFlight++
    fsync(fd, (err) => {
      this.inFlight--
      if (!err) this.onSynced(performance.now() - t0)
      this.finish(batch, err)
      this.closeFdWhenIdle()
    })
  }

  private open (): number {
    if (this.fd === null) this.fd = openSync(this.file, 'r+')
    return this.fd
  }

  private finish (batch: SyncBatch, err: Error | null): void {
    if (this.running === batch) this.running = null
    if (!batch.done) {
      batch.done = true
      for (const cb of batch.callbacks) cb(err)
    }
    if (this.running === null && this.waiting.length > 0 && !this.shut) this.start()
  }

  /** Syncs now, on this thread, and runs every callback still waiting. For shutdown. */
  flushSync (): void {
    const batches = [this.running, { callbacks: this.waiting, done: false }].filter((b): b is SyncBatch => b !== null && !b.done)
    this.waiting = []
    if (batches.every((b) => b.callbacks.length === 0)) return
    let err: Error | null = null
    try {
      fsyncSync(this.open())
    } catch (e) {
      err = e as Error
    }
    for (const b of batches) this.finish(b, err)
  }

  /** Flushes, then closes the descriptor (once no async sync still uses it). Idempotent. */
  protected onClose (): void {
    this.flushSync()
    this.shut = true
    this.closeFdWhenIdle()
  }

  private closeFdWhenIdle (): void {
    if (!this.shut || this.inFlight > 0 || this.fd === null) return
    closeSync(this.fd)
    this.fd = null
  }

  protected onDestroy (): void {
    // Nothing to flush on the way out: the callbacks waiting get the final sync all the same.
    this.onClose()
  }
}
