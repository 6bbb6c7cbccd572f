// Sends an account JWT to the NATS servers of operator mode: a request on $SYS.REQ.CLAIMS.UPDATE
// from a system account user. A `full` resolver stores it and passes it to the other servers of the
// cluster; each closes the connections of users the update revokes.
import { readFileSync } from 'node:fs'
import { connect, credsAuthenticator } from '@nats-io/transport-node'
import { CloudError } from '../errors.ts'

const CLAIMS_UPDATE = '$SYS.REQ.CLAIMS.UPDATE'

interface ClaimsReply { data?: { code?: number, message?: string }, error?: { code?: number, description?: string } }

/** Sends `accountJwt` to `servers` with the system user's .creds; resolves with the server's message. */
export async function pushAccountJwt (servers: string[], sysCredsFile: string, accountJwt: string, timeoutMs = 5000): Promise<string> {
  let nc
  try {
    nc = await connect({ servers, authenticator: credsAuthenticator(readFileSync(sysCredsFile)), timeout: timeoutMs, reconnect: false, name: 'iot-fleet' })
  } catch (err) {
    throw new CloudError('CLOUD_ERR_FLEET_PUSH', `cannot connect to ${servers.join(',')} as the system user: ${(err as Error).message}`, { cause: err })
  }
  try {
    const msg = await nc.request(CLAIMS_UPDATE, accountJwt, { timeout: timeoutMs })
    const reply = msg.json<ClaimsReply>()
    if (reply.error || reply.data?.code !== 200) {
      throw new CloudError('CLOUD_ERR_FLEET_PUSH', `the server refused the account update: ${reply.error?.description ?? msg.string()}`)
    }
    return reply.data.message ?? 'updated'
  } catch (err) {
    if (err instanceof CloudError) throw err
    throw new CloudError('CLOUD_ERR_FLEET_PUSH', `account update not confirmed by ${servers.join(',')}: ${(err as Error).message}`, { cause: err })
  } finally {
    await nc.close()
  }
}
