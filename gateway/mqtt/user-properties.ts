// The MQTT 5 user properties of a telemetry publish that travel with the event to the cloud (e.g. a
// W3C traceparent), bounded: at most `max` pairs, keys up to 64 bytes, values up to 256. What does
// not fit is left out and counted (the reading itself is never refused for it); a key given twice
// keeps its first value.
export const USER_PROPERTY_KEY_BYTES = 64
export const USER_PROPERTY_VALUE_BYTES = 256

/** The properties kept (undefined when none), and how many pairs were left out. */
export function boundUserProperties (props: Record<string, string | string[]> | undefined, max: number): { kept: Record<string, string> | undefined, dropped: number } {
  if (!props) return { kept: undefined, dropped: 0 }
  const kept: Record<string, string> = Object.create(null) as Record<string, string>
  let n = 0
  let dropped = 0
  for (const [key, raw] of Object.entries(props)) {
    const values = Array.isArray(raw) ? raw : [raw]
    const value = values[0]
    dropped += values.length - 1
    if (n >= max || Buffer.byteLength(key) > USER_PROPERTY_KEY_BYTES || typeof value !== 'string' || Buffer.byteLength(value) > USER_PROPERTY_VALUE_BYTES) { dropped++; continue }
    kept[key] = value
    n++
  }
  return { kept: n > 0 ? { ...kept } : undefined, dropped }
}
