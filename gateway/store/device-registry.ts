// The device registry: per-device credentials, stored as salted SHA-256 hashes, never logged.
// Secrets are 192-bit random tokens generated here, so a fast hash is safe (brute force is
// infeasible) and keeps reconnect storms of thousands of devices cheap.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Db } from './db.ts'
import { GatewayError } from '../errors.ts'
import { DEVICE_ID, DEVICE_ID_RULE } from '../../proto/ids.ts'

export interface DeviceInfo { deviceId: string, disabled: boolean, createdTs: number, rotatedTs: number }
export type AuthResult = { ok: true } | { ok: false, reason: 'unknown_device' | 'disabled_device' | 'bad_credentials' }

const hash = (salt: Buffer, secret: string): Buffer => createHash('sha256').update(salt).update(secret).digest()

/** Reads and changes the devices table; safe to use from the CLI while the gateway runs (WAL). */
export class DeviceRegistry {
  constructor (private readonly db: Db) {}

  /** Registers a device and returns its secret; the secret is shown once and never stored. */
  add (deviceId: string): string {
    checkId(deviceId)
    const secret = randomBytes(24).toString('base64url')
    const salt = randomBytes(16)
    const now = Date.now()
    try {
      this.db.prepare('INSERT INTO devices (device_id, salt, hash, disabled, created_ts, rotated_ts) VALUES (?, ?, ?, 0, ?, ?)').run(deviceId, salt, hash(salt, secret), now, now)
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw new GatewayError('GW_ERR_DEVICE_EXISTS', `device ${deviceId} is already registered`, { cause: err })
      throw err
    }
    return secret
  }

  /** Replaces a device's secret (the old one stops working at the next connect) and returns the new one. */
  rotate (deviceId: string): string {
    const secret = randomBytes(24).toString('base64url')
    const salt = randomBytes(16)
    const res = this.db.prepare('UPDATE devices SET salt = ?, hash = ?, rotated_ts = ? WHERE device_id = ?').run(salt, hash(salt, secret), Date.now(), deviceId)
    if (res.changes === 0) throw new GatewayError('GW_ERR_DEVICE_UNKNOWN', `device ${deviceId} is not registered`)
    return secret
  }

  setDisabled (deviceId: string, disabled: boolean): void {
    const res = this.db.prepare('UPDATE devices SET disabled = ? WHERE device_id = ?').run(disabled ? 1 : 0, deviceId)
    if (res.changes === 0) throw new GatewayError('GW_ERR_DEVICE_UNKNOWN', `device ${deviceId} is not registered`)
  }

  list (): DeviceInfo[] {
    return (this.db.prepare('SELECT device_id, disabled, created_ts, rotated_ts FROM devices ORDER BY device_id').all() as Array<{ device_id: string, disabled: number, created_ts: number, rotated_ts: number }>)
      .map((r) => ({ deviceId: r.device_id, disabled: r.disabled === 1, createdTs: r.created_ts, rotatedTs: r.rotated_ts }))
  }

  /** Checks a device's secret (constant-time compare). */
  verify (deviceId: string, secret: string | null): AuthResult {
    const row = this.db.prepare('SELECT salt, hash, disabled FROM devices WHERE device_id = ?').get(deviceId) as { salt: Buffer, hash: Buffer, disabled: number } | undefined
    if (!row) return { ok: false, reason: 'unknown_device' }
    if (row.disabled) return { ok: false, reason: 'disabled_device' }
    // A certificate-authenticated device (mutual TLS) passes secret null after the TLS layer verified it.
    if (secret === null) return { ok: true }
    return timingSafeEqual(hash(row.salt, secret), row.hash) ? { ok: true } : { ok: false, reason: 'bad_credentials' }
  }
}

function checkId (deviceId: string): void {
  if (!DEVICE_ID.test(deviceId)) throw new GatewayError('GW_ERR_DEVICE_ID', `device id "${deviceId}" must be ${DEVICE_ID_RULE}`)
}
