// The kit that tests, benchmarks and simulators share (never imported by gateway/ or cloud/ at run
// time): real nats-servers on ephemeral ports (one or a 3-node cluster), gateways in process or as
// SIGKILL-able child processes, a TCP proxy that slows and cuts links, polling with a deadline, and
// an API client that logs in to the console.
export { waitFor } from '../lib/wait-for.ts'
export { natsServerMissing, assertNatsServer, startNats, type NatsServer, type StartNatsOptions } from '../lib/nats-launcher.ts'
export * from './nats-cluster.ts'
export * from './gateway.ts'
export * from './tcp-proxy.ts'
export * from './stream-account.ts'
export * from './console-session.ts'
