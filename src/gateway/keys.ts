/**
 * Gateway API keys: random 256-bit tokens, stored only as SHA-256 hashes (a fast hash is enough for random keys of this
 * length; scrypt matters for human passwords), each with an optional per-key rate limit (requests per minute).
 */
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { z } from "zod";

const storedKeySchema = z.object({
  id: z.string(),
  name: z.string(),
  /** "sha256:<hex>" */
  hash: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  /** The first characters of the key, shown in listings so a person can tell keys apart. */
  prefix: z.string(),
  createdAt: z.string(),
  rpm: z.number().int().positive().optional(),
  revokedAt: z.string().optional(),
});
const keysFileSchema = z.object({ version: z.literal(1), keys: z.array(storedKeySchema) });

export type StoredKey = z.infer<typeof storedKeySchema>;
export type KeysFile = z.infer<typeof keysFileSchema>;

export function switchyardHome(env: NodeJS.ProcessEnv = process.env): string {
  const home = env.SWITCHYARD_HOME;
  return home !== undefined && home !== "" ? home : join(homedir(), ".switchyard");
}

export function defaultKeysPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(switchyardHome(env), "gateway-keys.json");
}

export function hashKey(key: string): string {
  return `sha256:${createHash("sha256").update(key, "utf8").digest("hex")}`;
}

export function readKeysFile(path: string): KeysFile {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { version: 1, keys: [] };
    throw err;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new Error(`${path}: not valid JSON; fix or remove the file (keys are then lost and must be re-issued)`);
  }
  const parsed = keysFileSchema.safeParse(raw);
  if (!parsed.success) {
    throw new Error(`${path}: not a switchyard keys file: ${parsed.error.issues[0]?.message ?? "invalid"}`);
  }
  return parsed.data;
}

function writeKeysFile(path: string, file: KeysFile): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}

/** Creates a key; the plaintext is returned once and never stored. */
export function addKey(path: string, opts: { name: string; rpm?: number }): { key: string; record: StoredKey } {
  const file = readKeysFile(path);
  const key = `sy-${randomBytes(32).toString("base64url")}`;
  const record: StoredKey = {
    id: randomUUID().slice(0, 8),
    name: opts.name,
    hash: hashKey(key),
    prefix: key.slice(0, 10),
    createdAt: new Date().toISOString(),
    ...(opts.rpm !== undefined && { rpm: opts.rpm }),
  };
  file.keys.push(record);
  writeKeysFile(path, file);
  return { key, record };
}

export function revokeKey(path: string, idOrName: string): StoredKey | undefined {
  const file = readKeysFile(path);
  const record = file.keys.find((k) => k.revokedAt === undefined && (k.id === idOrName || k.name === idOrName));
  if (record === undefined) return undefined;
  record.revokedAt = new Date().toISOString();
  writeKeysFile(path, file);
  return record;
}

/** Token bucket per key: `rpm` requests per minute, bursts up to `rpm`. */
export class RateLimiter {
  private buckets = new Map<string, { tokens: number; at: number }>();

  /** Returns 0 when allowed, else the seconds to wait. */
  take(id: string, rpm: number, now: number): number {
    const perMs = rpm / 60_000;
    let b = this.buckets.get(id);
    if (b === undefined) {
      b = { tokens: rpm, at: now };
      this.buckets.set(id, b);
    }
    b.tokens = Math.min(rpm, b.tokens + (now - b.at) * perMs);
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - b.tokens) / perMs / 1000);
  }
}

export interface AuthResult {
  ok: boolean;
  keyId?: string;
  /** Seconds to wait when rate limited. */
  retryAfterS?: number;
  reason?: "missing" | "invalid" | "rate_limited";
}

/** Checks bearer tokens against hashed keys; reloads the keys file when it changes (polled, at most every second). */
export class KeyAuthenticator {
  private byHash = new Map<string, StoredKey>();
  private limiter = new RateLimiter();
  private mtimeMs = -1;
  private checkedAt = 0;

  constructor(
    private readonly source: { path: string } | { keys: StoredKey[] },
    private readonly now: () => number = Date.now,
  ) {
    if ("keys" in source) this.index(source.keys);
    else this.reload(true);
  }

  get size(): number {
    return this.byHash.size;
  }

  private index(keys: StoredKey[]): void {
    this.byHash = new Map(keys.filter((k) => k.revokedAt === undefined).map((k) => [k.hash, k]));
  }

  private reload(force: boolean): void {
    if (!("path" in this.source)) return;
    const now = this.now();
    if (!force && now - this.checkedAt < 1000) return;
    this.checkedAt = now;
    let mtimeMs: number;
    try {
      mtimeMs = statSync(this.source.path).mtimeMs;
    } catch {
      mtimeMs = 0;
    }
    if (mtimeMs === this.mtimeMs) return;
    this.mtimeMs = mtimeMs;
    try {
      this.index(readKeysFile(this.source.path).keys);
    } catch {
      // A half-written or broken file keeps the keys we had: failing open would be worse than stale keys.
    }
  }

  authenticate(authorization: string | undefined): AuthResult {
    this.reload(false);
    if (authorization === undefined) return { ok: false, reason: "missing" };
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (m === null) return { ok: false, reason: "invalid" };
    const record = this.byHash.get(hashKey(m[1]!));
    if (record === undefined) return { ok: false, reason: "invalid" };
    if (record.rpm !== undefined) {
      const wait = this.limiter.take(record.id, record.rpm, this.now());
      if (wait > 0) return { ok: false, keyId: record.id, reason: "rate_limited", retryAfterS: wait };
    }
    return { ok: true, keyId: record.id };
  }
}
