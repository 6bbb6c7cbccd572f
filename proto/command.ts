// The cloud-to-edge command: JSON on iot.<gatewayId>.commands (stream COMMANDS), written by the
// cloud's console API and read by the gateway's cloud channel, which hands it to the command
// tracker. One schema for both ends, so a field cannot mean one thing at the cloud and another at
// the edge. Unknown fields are ignored (a newer cloud may add some); a missing or mistyped known
// field makes the command malformed.
import { z } from 'zod'
import { DEVICE_ID, DEVICE_ID_RULE } from './ids.ts'

/** A command name: 1-64 characters of [A-Za-z0-9_.:-]. */
export const COMMAND_NAME = /^[A-Za-z0-9_.:-]{1,64}$/
export const COMMAND_NAME_RULE = '1-64 characters of [A-Za-z0-9_.:-]'
/** Longest command id: it is also the JetStream message id and a key in the cloud's views. */
export const MAX_COMMAND_ID = 128

/** The zod schema of a command from the cloud. */
export const cloudCommandSchema = z.object({
  /** Chosen by the cloud; the tracker and every report of the command use it. */
  id: z.string().min(1).max(MAX_COMMAND_ID),
  deviceId: z.string().regex(DEVICE_ID, `deviceId must be ${DEVICE_ID_RULE}`),
  name: z.string().regex(COMMAND_NAME, `name must be ${COMMAND_NAME_RULE}`),
  args: z.record(z.string(), z.unknown()).optional(),
  /** Wall-clock expiry (ms); a command that reaches the gateway later is recorded as expired, not sent. */
  expiresAtMs: z.number().optional(),
})

/** A command from the cloud, as JSON on iot.<gatewayId>.commands. */
export type CloudCommand = z.infer<typeof cloudCommandSchema>

/** Parses a command message; a malformed one comes back with the reason, naming the field. */
export function parseCloudCommand (text: string): { ok: true, command: CloudCommand } | { ok: false, reason: string } {
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch (err) {
    return { ok: false, reason: `not JSON: ${(err as Error).message}` }
  }
  const r = cloudCommandSchema.safeParse(doc)
  if (r.success) return { ok: true, command: r.data }
  return { ok: false, reason: r.error.issues.map((i) => `${i.path.join('.') || 'command'}: ${i.message}`).join('; ') }
}
