// One lifecycle for every long-lived part, written once (the model is undici's dispatcher-base):
// an idempotent graceful close(), an immediate destroy(err?), and closed(), a promise that resolves
// (never rejects) once the part is closed or destroyed, with the error that destroyed it, if any.
// A part implements onClose() (flush, then release) and onDestroy(err) (release now); start()
// stays its own, since what a start takes and returns differs from part to part.

export type LifecycleState = 'open' | 'closing' | 'closed' | 'destroyed'

export abstract class Lifecycle {
  #state: LifecycleState = 'open'
  #closing: Promise<void> | null = null
  #settle!: (result: void | Error) => void
  readonly #closed = new Promise<void | Error>((resolve) => { this.#settle = resolve })

  /** 'open' until close() or destroy() is called. */
  get lifecycleState (): LifecycleState { return this.#state }

  /** True once close() or destroy() has been called: the part takes no new work. */
  get isClosing (): boolean { return this.#state !== 'open' }

  /** Graceful: finishes or hands back what is in hand, then releases. Idempotent; after destroy() it resolves at once. */
  close (): Promise<void> {
    if (this.#closing) return this.#closing
    if (this.#state === 'destroyed') return Promise.resolve()
    this.#state = 'closing'
    this.#closing = (async () => {
      try {
        await this.onClose()
      } catch (err) {
        // A close that fails leaves nothing half open: release everything now, and say why.
        this.destroy(err as Error)
        throw err
      }
      if (this.#state === 'closing') {
        this.#state = 'closed'
        this.#settle()
      }
    })()
    return this.#closing
  }

  /** Immediate: releases everything now; what is in flight fails (with err when given). Idempotent. */
  destroy (err?: Error): void {
    if (this.#state === 'closed' || this.#state === 'destroyed') return
    this.#state = 'destroyed'
    try {
      this.onDestroy(err)
    } finally {
      this.#settle(err)
    }
  }

  /** Resolves once the part is closed or destroyed: with the error that destroyed it, if any. Never rejects. */
  closed (): Promise<void | Error> { return this.#closed }

  /** The graceful part of close(): called once. */
  protected abstract onClose (): Promise<void> | void
  /** The immediate part of destroy(): called at most once, also when a close fails or is overtaken. */
  protected abstract onDestroy (err?: Error): void
}
