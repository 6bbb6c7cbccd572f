// Public surface of the edge gateway.
export { Gateway, type GatewayPorts } from './gateway.ts'
export { loadConfig, parseConfig, configSchema, type GatewayConfig, type GatewayConfigInput } from './config.ts'
export { GatewayError, GatewayErrorCodes, type GatewayErrorCode } from './errors.ts'
export { createLogger } from './log.ts'
export { openDb } from './store/db.ts'
export { DeviceRegistry } from './store/device-registry.ts'
export { LANE_PRIORITY, LANE_TELEMETRY } from './store/outbox-types.ts'
export { telemetryTopic, commandTopic, commandAckTopic } from '../proto/topics.ts'
