// A growable byte writer and its reader: varints (up to 2^53), zigzag, float64 and UTF-8 strings.
// The building blocks of the tier codec (tier-codec.ts); plain Math instead of bit operations so
// that values beyond 32 bits stay exact.

/** Zigzag: small magnitudes of either sign become small unsigned numbers. */
export const zigzag = (n: number): number => n >= 0 ? 2 * n : -2 * n - 1
export const unzigzag = (z: number): number => z % 2 === 0 ? z / 2 : -(z + 1) / 2

export class ByteWriter {
  private buf = new Uint8Array(512)
  private view = new DataView(this.buf.buffer)
  private pos = 0

  private ensure (n: number): void {
    if (this.pos + n <= this.buf.length) return
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n))
    next.set(this.buf.subarray(0, this.pos))
    this.buf = next
    this.view = new DataView(next.buffer)
  }

  u8 (b: number): void {
    this.ensure(1)
    this.buf[this.pos++] = b
  }

  /** Unsigned integer, 7 bits a byte, low first. */
  varint (n: number): void {
    this.ensure(8)
    while (n >= 128) {
      this.buf[this.pos++] = (n % 128) + 128
      n = Math.floor(n / 128)
    }
    this.buf[this.pos++] = n
  }

  f64 (v: number): void {
    this.ensure(8)
    this.view.setFloat64(this.pos, v, true)
    this.pos += 8
  }

  str (s: string): void {
    const b = Buffer.from(s, 'utf8')
    this.varint(b.length)
    this.ensure(b.length)
    this.buf.set(b, this.pos)
    this.pos += b.length
  }

  /** The bytes written (a copy: the writer may be reused). */
  bytes (): Uint8Array { return this.buf.slice(0, this.pos) }
}

export class ByteReader {
  private readonly view: DataView
  private pos = 0

  constructor (private readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  }

  private need (n: number): void {
    if (this.pos + n > this.buf.length) throw new RangeError(`truncated document: ${n} more bytes wanted at ${this.pos} of ${this.buf.length}`)
  }

  u8 (): number {
    this.need(1)
    return this.buf[this.pos++]
  }

  varint (): number {
    let n = 0
    let mul = 1
    for (;;) {
      const b = this.u8()
      n += (b % 128) * mul
      if (b < 128) return n
      mul *= 128
      if (mul > 2 ** 56) throw new RangeError('varint too long')
    }
  }

  f64 (): number {
    this.need(8)
    const v = this.view.getFloat64(this.pos, true)
    this.pos += 8
    return v
  }

  str (): string {
    const n = this.varint()
    this.need(n)
    const s = Buffer.from(this.buf.buffer, this.buf.byteOffset + this.pos, n).toString('utf8')
    this.pos += n
    return s
  }

  get done (): boolean { return this.pos === this.buf.length }
}
