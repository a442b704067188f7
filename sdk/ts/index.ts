/**
 * switchyard rank SDK for Node ranks: the same contract as sdk/python/switchyard (docs/rank-contract.md).
 *
 * Reports are JSON lines appended to SWITCHYARD_REPORT with one synchronous write each, so a line is in
 * the file when the call returns. Without SWITCHYARD_REPORT every report is a no-op, so scripts run
 * outside switchyard unchanged.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";

export const MANIFEST_FORMAT = "switchyard-checkpoint/1";
export const MANIFEST_NAME = "MANIFEST.json";

/** One file of a checkpoint, as listed in its manifest. */
export interface ManifestFile {
  path: string;
  size: number;
  sha256: string;
}

/** MANIFEST.json of a checkpoint directory; written last, after every file it lists is fsynced. */
export interface CheckpointManifest {
  format: typeof MANIFEST_FORMAT;
  step: number;
  shards: number;
  created: number;
  files: ManifestFile[];
}

/** Optional fields of a step report; any other key is copied into the line as is. */
export interface StepFields {
  loss?: number;
  tokens?: number;
  computeS?: number;
  [extra: string]: unknown;
}

export interface CheckpointOptions {
  /** Number of shards that make up this checkpoint (default 1). */
  shards?: number;
  /** Checkpoint root; default SWITCHYARD_CHECKPOINT_DIR, else ./checkpoints. */
  root?: string;
}

type Env = Record<string, string | undefined>;

const RESERVED = new Set(["t", "kind", "rank", "attempt"]);

/** Name of the directory of a finished checkpoint: step-00000042. */
export function checkpointDirName(step: number): string {
  return `step-${String(Math.trunc(step)).padStart(8, "0")}`;
}

/** Make a value JSON-encodable without bare NaN/Infinity (JSON.stringify would turn them into null). */
export function jsonSafe(value: unknown): unknown {
  if (typeof value === "number") {
    if (Number.isNaN(value)) return "nan";
    if (value === Infinity) return "inf";
    if (value === -Infinity) return "-inf";
    return value;
  }
  if (typeof value === "bigint") return Number(value);
  if (Array.isArray(value)) return value.map(jsonSafe);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, jsonSafe(v)]));
  }
  return value;
}

function envInt(env: Env, name: string): number | undefined {
  const raw = env[name]?.trim();
  if (!raw) return undefined;
  const n = Number(raw);
  return Number.isInteger(n) ? n : undefined;
}

function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
  } catch {
    // Directories cannot be opened or fsynced on some platforms (Windows); the rename is still atomic.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

async function syncAndHash(file: string): Promise<{ size: number; sha256: string }> {
  const handle = await fsp.open(file, "r+");
  try {
    await handle.sync();
    const hash = createHash("sha256");
    let size = 0;
    for await (const chunk of handle.createReadStream({ autoClose: false })) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    return { size, sha256: hash.digest("hex") };
  } finally {
    await handle.close();
  }
}

async function manifestFiles(root: string): Promise<ManifestFile[]> {
  const files: ManifestFile[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = await fsp.readdir(dir, { withFileTypes: true });
    for (const entry of entries) {
      const full = path.join(dir, entry.name);
      const rel = path.relative(root, full).split(path.sep).join("/");
      if (entry.isDirectory()) {
        await walk(full);
      } else if (rel !== MANIFEST_NAME) {
        files.push({ path: rel, ...(await syncAndHash(full)) });
      }
    }
    if (dir !== root) fsyncDir(dir);
  };
  await walk(root);
  return files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** A rank's view of the rank contract, read from an environment (process.env by default). */
export class Rank {
  private fd: number | undefined;
  private fdPath: string | undefined;
  private started = false;

  constructor(private readonly env: Env = process.env) {}

  get rank(): number {
    return envInt(this.env, "RANK") ?? 0;
  }
  get localRank(): number {
    return envInt(this.env, "LOCAL_RANK") ?? 0;
  }
  get worldSize(): number {
    return envInt(this.env, "WORLD_SIZE") ?? 1;
  }
  /** SWITCHYARD_ATTEMPT (1-based), null outside switchyard. */
  get attempt(): number | null {
    return envInt(this.env, "SWITCHYARD_ATTEMPT") ?? null;
  }
  isMain(): boolean {
    return this.rank === 0;
  }
  /** The verified checkpoint directory to resume from, null for a fresh start. */
  resumePath(): string | null {
    return this.env.SWITCHYARD_RESUME_FROM?.trim() || null;
  }

  /** Append one report line of the given kind; the first report of a process is preceded by a start line. */
  report(kind: string, fields: Record<string, unknown> = {}): void {
    const file = this.env.SWITCHYARD_REPORT?.trim();
    if (!file) return;
    if (!this.started) {
      this.started = true;
      this.writeLine(file, "start", { pid: process.pid });
    }
    this.writeLine(file, kind, fields);
  }

  /** Report that training step `step` finished. Undefined fields are omitted. */
  step(step: number, fields: StepFields = {}): void {
    const { loss, tokens, computeS, ...extra } = fields;
    const line: Record<string, unknown> = { step: Math.trunc(step) };
    if (loss !== undefined) line.loss = loss;
    if (tokens !== undefined) line.tokens = tokens;
    if (computeS !== undefined) line.compute_s = computeS;
    for (const [k, v] of Object.entries(extra)) if (!(k in line) && v !== undefined) line[k] = v;
    this.report("step", line);
  }

  /** Report that training finished at `step` (the last step completed). */
  done(step: number, extra: Record<string, unknown> = {}): void {
    this.report("done", {
      step: Math.trunc(step),
      ...Object.fromEntries(Object.entries(extra).filter(([k]) => k !== "step")),
    });
  }

  /**
   * Write a checkpoint atomically: `write` fills a fresh temp directory; then every file is fsynced and
   * hashed, MANIFEST.json is written last, and the directory is renamed to <root>/step-<step:08d>.
   * If `write` throws, the temp directory is removed and the error propagates. Returns the final path.
   */
  async checkpoint(
    step: number,
    write: (dir: string) => Promise<void> | void,
    options: CheckpointOptions = {},
  ): Promise<string> {
    const started = performance.now();
    const root = path.resolve(options.root ?? (this.env.SWITCHYARD_CHECKPOINT_DIR?.trim() || "checkpoints"));
    await fsp.mkdir(root, { recursive: true });
    const tmp = path.join(root, `.tmp-${checkpointDirName(step)}-${process.pid}`);
    const final = path.join(root, checkpointDirName(step));
    await fsp.rm(tmp, { recursive: true, force: true });
    await fsp.mkdir(tmp);
    let files: ManifestFile[];
    try {
      await write(tmp);
      files = await manifestFiles(tmp);
      if (files.length === 0) {
        throw new Error(
          `checkpoint(${step}): nothing was written into ${tmp}; write the state files into the directory ` +
            "passed to the callback (an empty checkpoint cannot be resumed from)",
        );
      }
      const manifest: CheckpointManifest = {
        format: MANIFEST_FORMAT,
        step: Math.trunc(step),
        shards: options.shards ?? 1,
        created: Date.now() / 1000,
        files,
      };
      const handle = await fsp.open(path.join(tmp, MANIFEST_NAME), "w");
      try {
        await handle.writeFile(JSON.stringify(manifest, null, 1) + "\n");
        await handle.sync();
      } finally {
        await handle.close();
      }
      fsyncDir(tmp);
      await install(tmp, final);
    } catch (err) {
      await fsp.rm(tmp, { recursive: true, force: true });
      throw err;
    }
    this.report("checkpoint", {
      step: Math.trunc(step),
      path: final,
      save_s: (performance.now() - started) / 1000,
      bytes: files.reduce((sum, f) => sum + f.size, 0),
    });
    return final;
  }

  /** Close the report file (tests; a rank process need not call it). */
  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
    this.fdPath = undefined;
  }

  private writeLine(file: string, kind: string, fields: Record<string, unknown>): void {
    const line: Record<string, unknown> = { t: Date.now() / 1000, kind, rank: this.rank, attempt: this.attempt };
    for (const [k, v] of Object.entries(fields)) if (!RESERVED.has(k)) line[k] = v;
    const data = Buffer.from(JSON.stringify(jsonSafe(line)) + "\n");
    if (this.fd === undefined || this.fdPath !== file) {
      this.close();
      fs.mkdirSync(path.dirname(file), { recursive: true });
      this.fd = fs.openSync(file, "a");
      this.fdPath = file;
    }
    let written = fs.writeSync(this.fd, data);
    while (written < data.length) written += fs.writeSync(this.fd, data, written);
  }
}

/** Rename tmp to final; an existing final (a re-run of the same step after a resume) is moved aside first. */
async function install(tmp: string, final: string): Promise<void> {
  const root = path.dirname(final);
  let aside: string | undefined;
  if (fs.existsSync(final)) {
    aside = path.join(root, `.old-${path.basename(final)}-${process.pid}`);
    await fsp.rm(aside, { recursive: true, force: true });
    await fsp.rename(final, aside);
  }
  await fsp.rename(tmp, final);
  fsyncDir(root);
  if (aside !== undefined) await fsp.rm(aside, { recursive: true, force: true });
}

/** The parsed manifest of a checkpoint directory; throws if it is missing or of an unknown format. */
export async function readManifest(dir: string): Promise<CheckpointManifest> {
  const file = path.join(dir, MANIFEST_NAME);
  const manifest = JSON.parse(await fsp.readFile(file, "utf8")) as CheckpointManifest;
  if (manifest.format !== MANIFEST_FORMAT) {
    throw new Error(
      `${file}: unknown checkpoint format ${JSON.stringify(manifest.format)} (expected ${MANIFEST_FORMAT})`,
    );
  }
  return manifest;
}

/** The step a checkpoint directory was taken at. */
export async function loadManifest(dir: string): Promise<number> {
  return (await readManifest(dir)).step;
}

let defaultRank: Rank | undefined;
const current = (): Rank => (defaultRank ??= new Rank());

/** Report a finished training step to the supervisor (no-op without SWITCHYARD_REPORT). */
export const step = (n: number, fields?: StepFields): void => current().step(n, fields);
/** Report that training finished at step `n`. */
export const done = (n: number, extra?: Record<string, unknown>): void => current().done(n, extra);
/** Write a checkpoint atomically; see Rank.checkpoint. */
export const checkpoint = (
  n: number,
  write: (dir: string) => Promise<void> | void,
  options?: CheckpointOptions,
): Promise<string> => current().checkpoint(n, write, options);
/** The verified checkpoint directory to resume from, null for a fresh start. */
export const resumePath = (): string | null => current().resumePath();
/** True on global rank 0. */
export const isMain = (): boolean => current().isMain();
