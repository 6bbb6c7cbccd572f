// An fsync for the outbox (gateway option `fsync`) that, once held, keeps every sync waiting until
// released: a commit waiting for the disk, made visible and controllable in a behaviour test.
import { fsync } from 'node:fs'
import type { FsyncFn } from '../../gateway/store/wal-sync.ts'

export function heldFsync (): { fsync: FsyncFn, hold: (on: boolean) => void, waiting: () => number } {
  let holding = false
  const waiting: Array<() => void> = []
  return {
    fsync: (fd, _file, cb) => { if (holding) waiting.push(() => fsync(fd, cb)); else fsync(fd, cb) },
    hold: (on) => { holding = on; if (!on) for (const go of waiting.splice(0)) go() },
    waiting: () => waiting.length,
  }
}
