// Layered configuration shared by the gateway and the cloud processes: a base object (a file),
// then environment variables (PREFIX_SECTION__KEY=value), then --set section.key=value flags,
// validated once against a zod schema with messages that name the bad key.
import type { z } from 'zod'

export interface ConfigSources {
  base?: Record<string, unknown>
  env?: NodeJS.ProcessEnv
  /** Only variables with this prefix are read, e.g. "GW_". */
  envPrefix: string
  sets?: string[]
}

/** Merges the sources (later wins) and validates; `fail` turns the message into the caller's error. */
export function loadLayered<S extends z.ZodType> (schema: S, src: ConfigSources, fail: (message: string) => Error): z.infer<S> {
  const base: Record<string, unknown> = structuredClone(src.base ?? {})
  // Strings from env/flags: numbers, booleans and null are recognised, but a key whose schema wants
  // a string keeps the raw text (gatewayId=0042 stays "0042").
  const raw = new Map<string, { path: string[], value: string }>()
  const put = (path: string[], value: string): void => {
    raw.set(path.join('.'), { path, value })
    setPath(base, path, parseScalar(value))
  }
  for (const [key, value] of Object.entries(src.env ?? {})) {
    if (!key.startsWith(src.envPrefix) || value === undefined) continue
    put(key.slice(src.envPrefix.length).split('__').map(envKeyToCamel), value)
  }
  for (const set of src.sets ?? []) {
    const eq = set.indexOf('=')
    if (eq <= 0) throw fail(`--set expects key=value, got "${set}"`)
    put(set.slice(0, eq).split('.'), set.slice(eq + 1))
  }
  const first = schema.safeParse(base)
  if (!first.success) {
    for (const issue of first.error.issues) {
      const r = raw.get(issue.path.join('.'))
      if (r && issue.code === 'invalid_type' && issue.expected === 'string') setPath(base, r.path, r.value)
    }
  }
  return parseWith(schema, base, fail)
}

/** Validates with the schema; the error lists every bad key as `path: reason`. */
export function parseWith<S extends z.ZodType> (schema: S, input: unknown, fail: (message: string) => Error): z.infer<S> {
  const result = schema.safeParse(input)
  if (result.success) return result.data
  const lines = result.error.issues.map((i) => {
    const keys = (i as { keys?: string[] }).keys
    const path = [...i.path, ...(keys && keys.length === 1 ? keys : [])].join('.') || '(root)'
    return `${path}: ${i.message}`
  })
  throw fail(lines.join('; '))
}

// SECTION__BUDGET_BYTES -> section.budgetBytes
function envKeyToCamel (s: string): string {
  return s.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase())
}

function parseScalar (v: string): unknown {
  if (v === 'true') return true
  if (v === 'false') return false
  if (v === 'null') return null
  if (v.trim() !== '' && !Number.isNaN(Number(v))) return Number(v)
  return v
}

function setPath (obj: Record<string, unknown>, path: string[], value: unknown): void {
  let cur = obj
  for (const key of path.slice(0, -1)) {
    if (typeof cur[key] !== 'object' || cur[key] === null) cur[key] = {}
    cur = cur[key] as Record<string, unknown>
  }
  cur[path[path.length - 1]] = value
}
