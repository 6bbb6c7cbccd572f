// Public surface of the simulators.
export { SimulatedDevice, type DeviceOptions, type DeviceCounters } from './device.ts'
export { Signal, prng, type SensorKind } from './signals.ts'
