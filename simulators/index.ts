// Public surface of the simulators.
export { SimulatedDevice, type DeviceOptions, type DeviceCounters } from './device.ts'
export { Signal, prng, type SensorKind } from './signals.ts'
export { loadScenario, parseScenario, quickScenario, parseDuration, ScenarioError, type Scenario, type ScenarioStep, type BadKind } from './scenario.ts'
export { ScenarioDevice, type ScenarioDeviceOptions, type ScenarioDeviceCounters } from './scenario-device.ts'
