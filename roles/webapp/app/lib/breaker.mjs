// A small circuit breaker: after a failure, callers fail fast for `openMs`
// instead of each waiting for the database timeout; then one probe is let
// through (half-open) while the others keep failing fast.
//
// Invariants: at most one probe is in flight; a success closes the breaker;
// the clock is injected so tests need no sleeps.

export class CircuitOpenError extends Error {
  constructor(lastError, retryAfterMs) {
    super(`circuit open after: ${lastError}`);
    this.name = 'CircuitOpenError';
    this.retryAfterMs = retryAfterMs;
  }
}

export class Breaker {
  constructor({ openMs = 3000, now = () => Date.now() } = {}) {
    this.openMs = openMs;
    this.now = now;
    this.openedAt = null; // null = closed
    this.lastError = null;
    this.probing = false;
  }

  /** ms until a probe is allowed; 0 when closed or due. */
  retryAfterMs() {
    if (this.openedAt === null) return 0;
    return Math.max(0, this.openedAt + this.openMs - this.now());
  }

  async run(fn) {
    let probe = false;
    if (this.openedAt !== null) {
      const wait = this.retryAfterMs();
      if (wait > 0 || this.probing) throw new CircuitOpenError(this.lastError, wait || this.openMs);
      this.probing = probe = true;
    }
    try {
      const result = await fn();
      this.openedAt = null;
      this.lastError = null;
      return result;
    } catch (err) {
      this.openedAt = this.now();
      this.lastError = err?.message ?? String(err);
      throw err;
    } finally {
      if (probe) this.probing = false;
    }
  }
}
