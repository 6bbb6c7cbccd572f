// Scenario files (simulators/scenarios/*.yaml): a fleet of devices, a duration and a timeline of
// fault steps. Parsed with `yaml`, validated with zod; an error names the file and the bad field.
import { readFileSync } from 'node:fs'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import type { SensorKind } from './signals.ts'

const SENSORS = ['temperature', 'humidity', 'vibration', 'power', 'door'] as const satisfies readonly SensorKind[]
export const BAD_KINDS = ['malformed_json', 'non_finite', 'unknown_field', 'oversized'] as const
export type BadKind = typeof BAD_KINDS[number]

/** "500ms", "5s", "2m", or a bare number of seconds; returns ms. */
export function parseDuration (v: unknown): number | null {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? Math.round(v * 1000) : null
  if (typeof v !== 'string') return null
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$/.exec(v)
  if (!m) return null
  const n = Number(m[1])
  return Math.round(m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000)
}

const duration = z.union([z.string(), z.number()], { error: (iss) => iss.input === undefined ? 'required (a duration such as 500ms, 5s, 2m)' : `not a duration: ${JSON.stringify(iss.input)} (use e.g. 500ms, 5s, 2m)` }).transform((v, ctx) => {
  const ms = parseDuration(v)
  if (ms === null) { ctx.addIssue({ code: 'custom', message: `not a duration: ${JSON.stringify(v)} (use e.g. 500ms, 5s, 2m)` }); return z.NEVER }
  return ms
})
const positiveDuration = duration.refine((ms) => ms > 0, 'must be longer than 0')

const step = z.discriminatedUnion('do', [
  /** Every device publishes at `interval` for `for`. */
  z.object({ at: duration, do: z.literal('burst'), for: positiveDuration, interval: positiveDuration }).strict(),
  /** nats-server stopped for `for`, then restarted on the same port and store. */
  z.object({ at: duration, do: z.literal('outage'), for: positiveDuration }).strict(),
  /** The gateway child is SIGKILLed and restarted on the same data dir (and ports) after `for`. */
  z.object({ at: duration, do: z.literal('power-cut'), for: duration.default(500) }).strict(),
  /** Every device drops its connection at once; all reconnect together after `after`. */
  z.object({ at: duration, do: z.literal('reconnect-storm'), after: duration.default(200) }).strict(),
]).superRefine((s, ctx) => {
  if (s.at < 0) ctx.addIssue({ code: 'custom', path: ['at'], message: 'must not be negative' })
})

export const scenarioSchema = z.object({
  name: z.string().min(1),
  description: z.string().default(''),
  devices: z.object({
    count: z.number().int().min(1).max(10000),
    sensors: z.array(z.enum(SENSORS)).min(1),
    interval: positiveDuration,
  }).strict(),
  /** Raw MQTT clients publishing only bad payloads (quarantined by the gateway), beside the good devices. */
  badDevices: z.object({
    count: z.number().int().min(1).max(1000),
    interval: positiveDuration,
    kinds: z.array(z.enum(BAD_KINDS)).min(1).default([...BAD_KINDS]),
  }).strict().optional(),
  duration: positiveDuration,
  /**
   * One-way delay on every device's link to the gateway (a TCP proxy in between; 0 = direct). A
   * power cut drops what the link holds, the gateway's last PUBACKs included, as a real one does.
   */
  linkLatency: duration.default(0),
  /** Longest wait, after the devices stop, for the gateway's backlog to reach the cloud. */
  drainTimeout: positiveDuration.default(30_000),
  timeline: z.array(step).default([]),
  /** --quick: at most this many devices, and every time scaled so the run lasts `duration`. */
  quick: z.object({
    devices: z.number().int().min(1).optional(),
    badDevices: z.number().int().min(1).optional(),
    duration: positiveDuration.optional(),
  }).strict().prefault({}),
}).strict().superRefine((s, ctx) => {
  s.timeline.forEach((st, i) => {
    if (st.at >= s.duration) ctx.addIssue({ code: 'custom', path: ['timeline', i, 'at'], message: `step at ${st.at} ms is not before the end of the scenario (${s.duration} ms)` })
  })
})

export type Scenario = z.infer<typeof scenarioSchema>
export type ScenarioStep = Scenario['timeline'][number]

export class ScenarioError extends Error {}

/** Validates a parsed document; the error names each bad field by its path. */
export function parseScenario (doc: unknown, source = 'scenario'): Scenario {
  const r = scenarioSchema.safeParse(doc)
  if (r.success) return r.data
  const lines = r.error.issues.map((i) => `  ${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`)
  throw new ScenarioError(`invalid scenario ${source}:\n${lines.join('\n')}`)
}

/** Reads and validates a scenario file. */
export function loadScenario (file: string): Scenario {
  let doc: unknown
  try {
    doc = parseYaml(readFileSync(file, 'utf8'))
  } catch (err) {
    throw new ScenarioError(`cannot read scenario ${file}: ${(err as Error).message}`)
  }
  return parseScenario(doc, file)
}

/** The --quick version: fewer devices and every time scaled down to quick.duration (default 8 s). */
export function quickScenario (s: Scenario): Scenario {
  const target = s.quick.duration ?? Math.min(s.duration, 8000)
  const k = Math.min(1, target / s.duration)
  const scale = (ms: number): number => Math.max(1, Math.round(ms * k))
  return {
    ...s,
    devices: { ...s.devices, count: Math.min(s.devices.count, s.quick.devices ?? 5) },
    badDevices: s.badDevices ? { ...s.badDevices, count: Math.min(s.badDevices.count, s.quick.badDevices ?? 2) } : undefined,
    duration: scale(s.duration),
    drainTimeout: Math.min(s.drainTimeout, 15_000),
    timeline: s.timeline.map((st) => {
      switch (st.do) {
        case 'burst': return { ...st, at: scale(st.at), for: scale(st.for) }
        case 'outage': return { ...st, at: scale(st.at), for: scale(st.for) }
        case 'power-cut': return { ...st, at: scale(st.at), for: scale(st.for) }
        case 'reconnect-storm': return { ...st, at: scale(st.at) }
      }
    }),
  }
}
