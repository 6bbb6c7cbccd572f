// The test harness uses the cloud's embedded nats-server launcher (ephemeral ports, temporary store,
// stop/kill/restart on the same port for fault injection).
export * from '../lib/nats-launcher.ts'
