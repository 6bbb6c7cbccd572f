// Polls a condition until it holds or a deadline passes: no fixed sleeps in tests, start-ups or tools.

/** Resolves with the first truthy value of fn(); rejects with `what` after timeoutMs. */
export async function waitFor<T> (fn: () => T | Promise<T>, what: string, timeoutMs = 10000, intervalMs = 20): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v) return v as NonNullable<T>
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`)
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}
