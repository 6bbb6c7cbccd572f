// Wire-compatibility check between a released protobufjs JSON descriptor (`pbjs -t json`) and the current one.
// Run by test/proto-compat.test.ts against proto/descriptors/iot.v1.json, so CI fails before an incompatible
// schema ships. Rules are deliberately strict: any type change is reported, even ones the wire format tolerates
// (int32 -> uint32), because consumers decode into generated classes and JSON, not just the wire.
import protobuf from 'protobufjs'

type Schema = protobuf.Type | protobuf.Enum

/** Returns the incompatibilities of `current` relative to `released` (two `pbjs -t json` descriptors); empty means compatible. */
export function checkCompatible(released: unknown, current: unknown): string[] {
  const old = load(released, 'released')
  const now = load(current, 'current')
  // An unreadable descriptor is itself the problem; there is nothing meaningful to compare.
  if (typeof old === 'string' || typeof now === 'string') return [old, now].filter((p): p is string => typeof p === 'string')

  const problems: string[] = []
  for (const [name, before] of old) {
    const after = now.get(name)
    if (!after) problems.push(`${name}: ${kind(before)} was removed`)
    else if (before instanceof protobuf.Type && after instanceof protobuf.Type) problems.push(...compareMessages(name, before, after))
    else if (before instanceof protobuf.Enum && after instanceof protobuf.Enum) problems.push(...compareEnums(name, before, after))
    else problems.push(`${name}: changed from ${kind(before)} to ${kind(after)}`)
  }
  return problems
}

// Parses and resolves a descriptor into full name (without the leading dot) -> message/enum.
// Resolving matters: field types are written relative to their scope ("Reading"), so only the
// resolved full name (".iot.v1.Reading") tells whether two fields really have the same type.
function load(json: unknown, label: string): Map<string, Schema> | string {
  if (typeof json !== 'object' || json === null) return `${label} descriptor is not an object`
  try {
    const root = protobuf.Root.fromJSON(json as protobuf.INamespace)
    root.resolveAll()
    const out = new Map<string, Schema>()
    collect(root, out)
    return out
  } catch (err) {
    // protobufjs throws on e.g. a field that uses a number reserved in the same message, or an unknown type.
    return `${label} descriptor is invalid: ${(err as Error).message}`
  }
}

// Walks namespaces and messages (a Type is a Namespace: messages can nest messages and enums); services are not compared.
function collect(ns: protobuf.NamespaceBase, out: Map<string, Schema>): void {
  for (const child of ns.nestedArray) {
    if (child instanceof protobuf.Type || child instanceof protobuf.Enum) out.set(child.fullName.replace(/^\./, ''), child)
    if (child instanceof protobuf.Namespace) collect(child, out)
  }
}

function kind(s: Schema): string {
  return s instanceof protobuf.Type ? 'message' : 'enum'
}

// The wire-relevant shape of a field: cardinality, key type for maps, and the resolved value type.
function shape(field: protobuf.Field): string {
  const type = field.resolvedType ? field.resolvedType.fullName.replace(/^\./, '') : field.type
  if (field instanceof protobuf.MapField) return `map<${field.keyType}, ${type}>`
  return field.repeated ? `repeated ${type}` : type
}

function compareMessages(name: string, before: protobuf.Type, after: protobuf.Type): string[] {
  const problems: string[] = []
  for (const field of before.fieldsArray) {
    const at = `${name} field ${field.name} (#${field.id})`
    const same = after.fieldsById[field.id]
    if (same) {
      // A rename keeps the wire format (only numbers travel), so only the shape is compared.
      const was = shape(field)
      const is = shape(same)
      if (was !== is) problems.push(`${at}: changed from ${was} to ${is}${same.name !== field.name ? ` (now named ${same.name})` : ''}`)
      continue
    }
    if (after.isReservedId(field.id)) continue
    // Name the likely cause: a field that moved to another number breaks every existing payload.
    const moved = after.fields[field.name]
    if (moved) problems.push(`${at}: renumbered from ${field.id} to ${moved.id}; keep ${field.id} or reserve it and add a new field`)
    else problems.push(`${at}: removed without reserving number ${field.id}`)
  }
  for (const field of after.fieldsArray) {
    // New fields only: a field whose number existed in the release was already compared above.
    if (before.fieldsById[field.id]) continue
    const at = `${name} field ${field.name} (#${field.id})`
    // Old payloads may still carry data under a reserved number, decoded with the wrong meaning.
    if (before.isReservedId(field.id)) problems.push(`${at}: reuses number ${field.id}, reserved in the released schema`)
    // Reserved names protect the JSON mapping, where names are what travels.
    if (before.isReservedName(field.name)) problems.push(`${at}: reuses name ${field.name}, reserved in the released schema`)
  }
  return problems
}

function compareEnums(name: string, before: protobuf.Enum, after: protobuf.Enum): string[] {
  const problems: string[] = []
  const oldNumbers = new Set(Object.values(before.values))
  const newNumbers = new Set(Object.values(after.values))
  // Numbers, not names, travel on the wire; aliases share a number, so check each number once.
  for (const n of oldNumbers) {
    if (newNumbers.has(n) || after.isReservedId(n)) continue
    const names = Object.keys(before.values).filter((k) => before.values[k] === n).join('/')
    problems.push(`${name} value ${names} (${n}): removed without reserving number ${n}`)
  }
  for (const [value, n] of Object.entries(after.values)) {
    if (!oldNumbers.has(n) && before.isReservedId(n)) problems.push(`${name} value ${value} (${n}): reuses number ${n}, reserved in the released schema`)
  }
  return problems
}
