/**
 * Gateway API keys: random 256-bit tokens, stored only as SHA-256 hashes (a fast hash is enough for random keys of this
 * length; scrypt matters for human passwords), each with optional per-key limits: requests per minute (rpm) and
 * tokens per minute (tpm), enforced by a Limiter (limits.ts).
 */
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { z } from "zod";
import { fileError, SpecError, validateYaml } from "../core/spec-errors.js";
import { LocalLimiter, type KeyLimits, type Limiter } from "./limits.js";

const storedKeySchema = z.object({
  id: z.string(),
  name: z.string(),
  /** "sha256:<hex>" */
  hash: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  /** The first characters of the key, shown in listings so a person can tell keys apart. */
  prefix: z.string(),
  createdAt: z.string(),
  rpm: z.number().int().positive().optional(),
  /** Tokens per minute (usage.total_tokens of the answers; estimated from bytes when absent). */
  tpm: z.number().int().positive().optional(),
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

/**
 * The keys file; none yet is no keys. One that cannot be read or is not a keys file is a SpecError
 * (`file:line:col: path: message (fix: ...)`, spec-errors.ts), as for every config file.
 */
export function readKeysFile(path: string): KeysFile {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return { version: 1, keys: [] };
    throw fileError(
      path,
      `the gateway keys file cannot be read (${code ?? (err as Error).message})`,
      "make it readable by this user (it should be 0600), or point --keys-file at another one",
    );
  }
  try {
    return validateYaml(keysFileSchema, text, path, { syntax: "JSON" }).data;
  } catch (err) {
    if (!(err instanceof SpecError)) throw err;
    // Each issue's own fix, and the way out when the file cannot be mended.
    const last = "or remove the file (its keys are then lost and must be issued again)";
    throw new SpecError(
      err.issues.map((i) => ({ ...i, fix: `${i.fix}; ${last}` })),
      err.omitted,
    );
  }
}

function writeKeysFile(path: string, file: KeysFile): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}

/** Creates a key; the plaintext is returned once and never stored. */
export function addKey(
  path: string,
  opts: { name: string; rpm?: number; tpm?: number },
): { key: string; record: StoredKey } {
  const file = readKeysFile(path);
  const key = `sy-${randomBytes(32).toString("base64url")}`;
  const record: StoredKey = {
    id: randomUUID().slice(0, 8),
    name: opts.name,
    hash: hashKey(key),
    prefix: key.slice(0, 10),
    createdAt: new Date().toISOString(),
    ...(opts.rpm !== undefined && { rpm: opts.rpm }),
    ...(opts.tpm !== undefined && { tpm: opts.tpm }),
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

export interface AuthResult {
  ok: boolean;
  keyId?: string;
  /** Seconds to wait when rate limited. */
  retryAfterS?: number;
  reason?: "missing" | "invalid" | "rate_limited";
  /** Which limit refused (rate_limited). */
  limit?: "rpm" | "tpm";
}

/** A key that authenticated, with its limits. */
export interface Identified {
  keyId: string;
  limits: KeyLimits;
}

/** Checks bearer tokens against hashed keys; reloads the keys file when it changes (polled, at most every second). */
export class KeyAuthenticator {
  private byHash = new Map<string, StoredKey>();
  private limiter = new LocalLimiter();
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

  /** The key behind an Authorization header, without applying limits; a reason when there is none. */
  identify(authorization: string | undefined): Identified | "missing" | "invalid" {
    this.reload(false);
    if (authorization === undefined) return "missing";
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (m === null) return "invalid";
    const record = this.byHash.get(hashKey(m[1]!));
    if (record === undefined) return "invalid";
    return { keyId: record.id, limits: { rpm: record.rpm, tpm: record.tpm } };
  }

  /** identify() plus this authenticator's own (one-process) limiter. */
  authenticate(authorization: string | undefined, limiter: Limiter = this.limiter): AuthResult {
    const who = this.identify(authorization);
    if (typeof who === "string") return { ok: false, reason: who };
    const refusal = limiter.admit(who.keyId, who.limits, this.now());
    if (refusal instanceof Promise) throw new Error("authenticate() needs a synchronous limiter; use identify()");
    if (refusal !== undefined) {
      return {
        ok: false,
        keyId: who.keyId,
        reason: "rate_limited",
        retryAfterS: refusal.retryAfterS,
        limit: refusal.limit,
      };
    }
    return { ok: true, keyId: who.keyId };
  }
}
