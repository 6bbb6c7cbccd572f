// Public surface of the edge gateway.
export { Gateway, type GatewayPorts } from './gateway.ts'
export { loadConfig, parseConfig, configSchema, type GatewayConfig, type GatewayConfigInput } from './config.ts'
export { GatewayError, GatewayErrorCodes, type GatewayErrorCode } from './errors.ts'
export { createLogger } from './log.ts'
export { openDb } from './db.ts'
export { DeviceRegistry } from './device-registry.ts'
export { LANE_PRIORITY, LANE_TELEMETRY } from './outbox.ts'
export { telemetryTopic, commandTopic, commandAckTopic } from './topics.ts'
