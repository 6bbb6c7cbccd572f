// Refuses an MQTT packet larger than a limit as soon as its header announces its length, before
// its body is buffered. aedes has no such limit, so we hook the per-client mqtt-packet parser
// (mqtt-packet 9: Parser#_parseLength sets packet.length). test/broker-limits.test.ts pins it.
import { GatewayError } from '../errors.ts'

interface ParserLike {
  packet: { length: number }
  _parseLength: () => boolean
  emit: (event: string, err: Error) => boolean
}

/** Installs the size check on a client's parser; onRefuse runs once when a packet is too large. */
export function guardPacketSize (parser: ParserLike, maxBytes: number, onRefuse: (length: number) => void): void {
  const parseLength = parser._parseLength
  parser._parseLength = function (this: ParserLike) {
    const ok = parseLength.call(this)
    if (ok && this.packet.length > maxBytes) {
      onRefuse(this.packet.length)
      this.emit('error', new GatewayError('GW_ERR_PACKET_TOO_LARGE', `packet of ${this.packet.length} bytes exceeds ${maxBytes}`))
      return false
    }
    return ok
  }
}
