// Group fsync of the outbox's WAL, off the event loop. SQLite with synchronous=FULL fsyncs the WAL
// inside every commit, on the thread that commits: the broker's, which is also the one that takes
// control decisions, so every decision that arrives during a commit waited for the disk (0.2 ms on
// this VM, several ms on SD cards and cheap SSDs). Instead the outbox commits with synchronous=NORMAL
// (the frames reach the file with write(), no sync) and asks this class to run its callbacks once the
// WAL file is on disk: fs.fsync on the libuv thread pool. fsync covers every write made to the file
// before it was called, through any descriptor, so each callback runs only after a sync that started
// after its commit. Commits made while one sync is running share the next one.
//
// At start the outbox asks for one more: rows already in the database may be in the page cache only
// (a SIGKILL ends a process, not the kernel's buffers), so the WAL, the database file and its
// directory (the WAL's entry in it) are synced before anything loaded is acknowledged or replicated.
import { closeSync, fsync, fsyncSync, openSync } from 'node:fs'
import { Lifecycle } from '../../lib/lifecycle.ts'

export type SyncCallback = (err: Error | null) => void

/** Syncs one open file (`file` names it): fs.fsync by default; tests inject one to watch or hold back syncs. */
export type FsyncFn = (fd: number, file: string, cb: (err: Error | null) => void) => void

const fsyncFd: FsyncFn = (fd, _file, cb) => fsync(fd, cb)

interface SyncBatch { callbacks: SyncCallback[], done: boolean }

export class WalSync extends Lifecycle {
  private fd: number | null = null
  private waiting: SyncCallback[] = []
  private running: SyncBatch | null = null
  /** Async fsyncs not returned yet: the descriptor is closed only when none is. */
  private inFlight = 0
  /** Set once close() has flushed: no new sync is accepted. */
  private shut = false
  /** Files besides the WAL that every sync covers until one of them has succeeded (syncAtStart). */
  private unsynced: string[] = []

  /** `file`: the WAL (gateway.db-wal); onSynced(ms) observes the duration of each sync of the WAL alone. */
  constructor (private readonly file: string, private readonly onSynced: (ms: number) => void = () => {}, private readonly syncFd: FsyncFn = fsyncFd) {
    super()
  }

  /**
   * Start-up: cb runs once the WAL and `files` (the database file, its directory) are on disk. Until
   * a sync of them succeeds, every later sync covers them again, so no later callback runs before.
   */
  syncAtStart (files: string[], cb: SyncCallback): void {
    this.unsynced = [...files]
    this.after(cb)
  }

  /** True until the files of syncAtStart are on disk. */
  get startPending (): boolean {
    return this.unsynced.length > 0
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
    const extra = this.unsynced
    const extraFds: number[] = []
    let fd: number
    try {
      fd = this.open()
      for (const f of extra) extraFds.push(openSync(f, 'r'))
    } catch (err) {
      for (const x of extraFds) closeSync(x)
      return this.finish(batch, err as Error)
    }
    const t0 = performance.now()
    this.inFlight++
    let left = 1 + extra.length
    let failed: Error | null = null
    const synced = (err: Error | null): void => {
      failed ??= err
      if (--left > 0) return
      this.inFlight--
      for (const x of extraFds) closeSync(x)
      if (!failed && extra.length === 0) this.onSynced(performance.now() - t0)
      if (!failed) this.unsynced = this.unsynced.filter((f) => !extra.includes(f))
      this.finish(batch, failed)
      this.closeFdWhenIdle()
    }
    this.syncFd(fd, this.file, synced)
    extra.forEach((f, i) => this.syncFd(extraFds[i], f, synced))
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
      for (const f of this.unsynced) {
        const x = openSync(f, 'r')
        try { fsyncSync(x) } finally { closeSync(x) }
      }
      this.unsynced = []
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
