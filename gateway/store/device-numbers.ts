// The outbox's device dictionary: rows of the events table name their device by a small number
// (events.dev), kept beside the device's sequence counter (device_seq.num), instead of repeating
// its id in every row; the uplink puts the id back into each event (stored-event.ts).
import { GatewayError } from '../errors.ts'
import type { Db } from './db.ts'
import { deviceIdField } from './stored-event.ts'

export class DeviceNumbers {
  private readonly nums = new Map<string, number>()
  /** Device ids by number (index = number). */
  private readonly ids: string[] = []
  /** deviceIdField() of each numbered device, made when the uplink first needs it. */
  private readonly fields: Buffer[] = []
  private next = 1
  /** Devices numbered since mark(), and `next` then: what undo() takes back. */
  private given: string[] = []
  private nextAtMark = 1

  /** A number read from the database at start. */
  load (deviceId: string, num: number): void {
    this.nums.set(deviceId, num)
    this.ids[num] = deviceId
    this.next = Math.max(this.next, num + 1)
  }

  /** The device's number; `fresh` when it was handed out now (the caller writes it in the same transaction). */
  numberOf (deviceId: string): { num: number, fresh: boolean } {
    const known = this.nums.get(deviceId)
    if (known !== undefined) return { num: known, fresh: false }
    const num = this.next++
    this.load(deviceId, num)
    this.given.push(deviceId)
    return { num, fresh: true }
  }

  /** Starts a commit: numbers handed out from here can be taken back with undo(). */
  mark (): void {
    this.given = []
    this.nextAtMark = this.next
  }

  /** The commit since mark() failed: its numbers were rolled back with it and are handed out again. */
  undo (): void {
    for (const deviceId of this.given) {
      const num = this.nums.get(deviceId)!
      delete this.ids[num]
      delete this.fields[num]
      this.nums.delete(deviceId)
    }
    this.given = []
    this.next = this.nextAtMark
  }

  /** The id of the device with number `num`. Throws if none has it: the outbox is not consistent. */
  idOf (num: number): string {
    const id = this.ids[num]
    if (id === undefined) throw unknownDeviceNumber(num)
    return id
  }

  /** The encoded device_id field of the device with number `num` (cached). */
  field (num: number): Buffer {
    return this.fields[num] ?? (this.fields[num] = deviceIdField(this.idOf(num)))
  }
}

/** An event names a device number that device_seq does not hold: the outbox is not consistent. */
export function unknownDeviceNumber (num: number): GatewayError {
  return new GatewayError('GW_ERR_OUTBOX_CORRUPT', `an event names device number ${num}, which device_seq does not hold`)
}

/**
 * deviceIdField() by device number, read from device_seq on a connection of the caller's (the
 * uplink thread's) and cached: the number of a row the uplink reads is on disk with the row.
 */
export function deviceFieldLookup (db: Db): (num: number) => Buffer {
  const idOf = db.prepare('SELECT device_id FROM device_seq WHERE num = ?').pluck()
  const fields: Buffer[] = []
  return (num) => {
    const known = fields[num]
    if (known !== undefined) return known
    const id = idOf.get(num) as string | undefined
    if (id === undefined) throw unknownDeviceNumber(num)
    return (fields[num] = deviceIdField(id))
  }
}
