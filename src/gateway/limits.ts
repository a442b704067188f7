/**
 * Per-key limits: requests per minute (RPM) and tokens per minute (TPM), as token buckets that refill continuously.
 *
 * RPM is decided before the request (one request takes one token). TPM cannot be: a request's tokens are known only
 * from the answer's `usage` (or estimated from the bytes when the answer has none). So a key may start a request
 * while its TPM bucket holds at least one token, and the request's tokens are taken when it ends; the bucket may go
 * into debt (down to minus one minute's worth), and the key waits until it has refilled. This is how hosted APIs
 * behave too: a single large answer can overshoot the minute's budget, and the next requests wait for it.
 *
 * One process: LocalLimiter. Several gateway processes (`gateway --workers N`): the primary process owns the buckets
 * (LimitAuthority in cluster.ts) and workers hold small leases of RPM tokens and a mirror of the TPM balance, so a
 * key gets about its limit across all workers, not N times it.
 */

export interface KeyLimits {
  rpm?: number | undefined;
  tpm?: number | undefined;
}

/** Seconds the client should wait (Retry-After), and which limit said no. */
export interface LimitRefusal {
  retryAfterS: number;
  limit: "rpm" | "tpm";
}

export interface Limiter {
  /**
   * Admission of one request of `key`: undefined when allowed (one RPM token is taken), else why not. Asynchronous
   * only when a cluster worker has to ask its primary for a lease.
   */
  admit(key: string, limits: KeyLimits, now: number): LimitRefusal | undefined | Promise<LimitRefusal | undefined>;
  /** The tokens a finished request of `key` used. */
  spend(key: string, limits: KeyLimits, tokens: number, now: number): void;
}

/** A token bucket of `perMinute` capacity that refills at perMinute per minute; may go into debt down to -perMinute. */
export class Bucket {
  tokens: number;
  at: number;
  constructor(
    public perMinute: number,
    now: number,
  ) {
    this.tokens = perMinute;
    this.at = now;
  }

  refill(perMinute: number, now: number): void {
    this.perMinute = perMinute;
    if (now > this.at) this.tokens = Math.min(perMinute, this.tokens + ((now - this.at) * perMinute) / 60_000);
    this.at = Math.max(this.at, now);
  }

  /** Seconds until the bucket holds `need` tokens (at least 1 s). */
  waitS(need: number): number {
    return Math.max(1, Math.ceil(((need - this.tokens) * 60) / this.perMinute));
  }

  take(n: number): void {
    this.tokens = Math.max(-this.perMinute, this.tokens - n);
  }
}

/** Keys whose buckets have not been touched for this long are forgotten (they are full again by then). */
const IDLE_FORGET_MS = 120_000;

export class LocalLimiter implements Limiter {
  private readonly rpm = new Map<string, Bucket>();
  private readonly tpm = new Map<string, Bucket>();
  private sweptAt = 0;

  admit(key: string, limits: KeyLimits, now: number): LimitRefusal | undefined {
    this.sweep(now);
    if (limits.tpm !== undefined) {
      const b = bucket(this.tpm, key, limits.tpm, now);
      if (b.tokens < 1) return { retryAfterS: b.waitS(1), limit: "tpm" };
    }
    if (limits.rpm !== undefined) {
      const b = bucket(this.rpm, key, limits.rpm, now);
      if (b.tokens < 1) return { retryAfterS: b.waitS(1), limit: "rpm" };
      b.take(1);
    }
    return undefined;
  }

  spend(key: string, limits: KeyLimits, tokens: number, now: number): void {
    if (limits.tpm === undefined || tokens <= 0) return;
    bucket(this.tpm, key, limits.tpm, now).take(tokens);
  }

  /** The TPM balance of a key (tests, the cluster primary's broadcasts). */
  tpmBalance(key: string, tpm: number, now: number): number {
    return bucket(this.tpm, key, tpm, now).tokens;
  }

  private sweep(now: number): void {
    if (now - this.sweptAt < IDLE_FORGET_MS) return;
    this.sweptAt = now;
    for (const m of [this.rpm, this.tpm]) {
      for (const [k, b] of m) if (now - b.at > IDLE_FORGET_MS) m.delete(k);
    }
  }
}

export function bucket(map: Map<string, Bucket>, key: string, perMinute: number, now: number): Bucket {
  let b = map.get(key);
  if (b === undefined) {
    b = new Bucket(perMinute, now);
    map.set(key, b);
  } else {
    b.refill(perMinute, now);
  }
  return b;
}

const TOTAL_TOKENS = Buffer.from('"total_tokens"');

/**
 * The `usage.total_tokens` of an answer (chat/completions/embeddings/responses all name it so), read from its last
 * occurrence in `buf` without parsing the JSON; undefined when absent.
 */
export function totalTokensIn(buf: Buffer): number | undefined {
  const at = buf.lastIndexOf(TOTAL_TOKENS);
  if (at < 0) return undefined;
  let i = at + TOTAL_TOKENS.length;
  while (i < buf.length && (buf[i] === 0x20 || buf[i] === 0x3a || buf[i] === 0x0a || buf[i] === 0x0d)) i++;
  let n = 0;
  let digits = 0;
  while (i < buf.length && buf[i]! >= 0x30 && buf[i]! <= 0x39 && digits < 12) {
    n = n * 10 + (buf[i]! - 0x30);
    i++;
    digits++;
  }
  return digits === 0 ? undefined : n;
}

/** Tokens estimated from bytes when an answer carries no usage: about 4 bytes per token (English text, BPE). */
export function estimateTokens(bytes: number): number {
  return Math.ceil(bytes / 4);
}
