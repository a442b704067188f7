import { createHash, randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { link, lstat, mkdir, open, opendir, readdir, rename, rm, type FileHandle } from "node:fs/promises";
import path from "node:path";
import {
  adoptLimits,
  compilePattern,
  componentMatches,
  describeGeneration,
  emptyManifest,
  formatBytes,
  generationsOf,
  generationsToPrune,
  newestOf,
  parseAdoptedManifest,
  reservedInfix,
  sameVersion,
  setAsideName,
  settle,
  type AdoptedGeneration,
  type AdoptedManifest,
  type CompiledPattern,
  type LiveStat,
  type SettleState,
} from "../core/adopted.js";
import type { CompiledJobSpec } from "../core/spec.js";
import type { AttemptRecord, JobRecord } from "../store/port.js";
import type { SupervisorContext } from "./context.js";

/**
 * Checkpoints the script writes itself (`checkpoint.watch`, docs/checkpoints-adopted.md). While a run goes on, each
 * watched file is adopted once its size and mtime have not changed for `settleSeconds`: copied into the run's own
 * folder as a generation (hashed on the way: one streamed read, chunk by chunk, at most `hashSlots` files at a time
 * across all jobs, in the background, so neither the event loop nor the job's own supervision waits for a big file),
 * recorded in a manifest switchyard keeps (written atomically), the oldest beyond `keep` dropped. Before a restart the
 * live file is verified against its newest generation and, when it fails, replaced by the newest generation that
 * verifies. A new run sets aside what an earlier run left in the workdir.
 *
 * A generation is a hard link to the file the script wrote only when the script is seen to replace its file (a new
 * inode at each save: a temp file renamed over it, or deleted and created anew), and only on the same filesystem;
 * otherwise it is a copy. `torch.save(obj, path)` rewrites the file in place (same inode), which would rewrite a
 * hard-linked generation with it. Every stored generation is verified before it is restored either way.
 */

const manifestName = "manifest.json";
const chunkBytes = 1 << 20;
/** Files hashed at once, across all jobs. */
const hashSlots = 2;
const readFlags = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0);

/** The run's own folder for the generations it adopts: inside its checkpoint folder. */
export function adoptedDir(spec: CompiledJobSpec, jobId: string): string {
  return spec.checkpoint.perRun === false
    ? path.join(spec.checkpoint.dir, `adopted-${jobId}`)
    : path.join(spec.checkpoint.dir, "adopted");
}

/** A counting semaphore: at most `n` holders. */
class Slots {
  private free: number;
  private readonly waiting: Array<() => void> = [];
  constructor(n: number) {
    this.free = n;
  }
  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((r) => this.waiting.push(r));
    try {
      return await work();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    }
  }
}
const slots = new Slots(hashSlots);

class AdoptError extends Error {}

async function openRegular(file: string): Promise<{ handle: FileHandle; size: number; mtimeMs: number }> {
  const st = await lstat(file).catch(() => null);
  if (!st) throw new AdoptError(`${file} is missing`);
  if (!st.isFile()) throw new AdoptError(`${file} is not a regular file`);
  const handle = await open(file, readFlags);
  const fst = await handle.stat();
  if (!fst.isFile()) {
    await handle.close();
    throw new AdoptError(`${file} is not a regular file`);
  }
  return { handle, size: fst.size, mtimeMs: fst.mtimeMs };
}

async function fsyncDir(dir: string): Promise<void> {
  const h = await open(dir, constants.O_RDONLY).catch(() => null);
  if (!h) return;
  await h.sync().catch(() => undefined);
  await h.close();
}

/**
 * Streams `src` into a new file `dst` (0600, created exclusively), hashing on the way; reads exactly the size seen at
 * open (a file that shrinks fails). With `expectSha` a mismatch fails and `dst` is removed. `dst` null: hash only.
 */
async function copyHashed(
  src: string,
  dst: string | null,
  expectSha?: string,
): Promise<{ size: number; sha256: string; mtimeMs: number }> {
  const { handle, size, mtimeMs } = await openRegular(src);
  let out: FileHandle | null = null;
  try {
    if (dst) out = await open(dst, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    const hash = createHash("sha256");
    const buf = Buffer.allocUnsafe(Math.min(chunkBytes, Math.max(size, 1)));
    let position = 0;
    while (position < size) {
      const { bytesRead } = await handle.read(buf, 0, Math.min(buf.length, size - position), position);
      if (bytesRead === 0) throw new AdoptError(`${src} shrank while being read`);
      hash.update(buf.subarray(0, bytesRead));
      if (out) await out.write(buf, 0, bytesRead);
      position += bytesRead;
    }
    const sha256 = hash.digest("hex");
    if (expectSha !== undefined && sha256 !== expectSha) throw new AdoptError(`sha mismatch`);
    if (out) await out.sync();
    return { size, sha256, mtimeMs };
  } catch (err) {
    if (dst) await rm(dst, { force: true }).catch(() => undefined);
    throw err;
  } finally {
    await out?.close();
    await handle.close();
  }
}

/**
 * True only for a zip (torch.save's format since 1.6) that ends with its end-of-central-directory record: written to
 * the end. torch.save truncates the file first and writes that record last, so a save cut short never has it.
 */
async function completeZip(file: string): Promise<boolean> {
  const st = await lstat(file).catch(() => null);
  if (!st?.isFile() || st.size < 22) return false;
  const { handle } = await openRegular(file);
  try {
    const head = Buffer.alloc(4);
    await handle.read(head, 0, 4, 0);
    if (head.readUInt32LE(0) !== 0x04034b50) return false;
  } finally {
    await handle.close();
  }
  return !(await tornZip(file));
}

/** A zip file (torch.save's format since 1.6) must end with its end-of-central-directory record: else it is torn. */
async function tornZip(file: string): Promise<boolean> {
  const { handle, size } = await openRegular(file);
  try {
    const head = Buffer.alloc(4);
    await handle.read(head, 0, 4, 0);
    if (head.readUInt32LE(0) !== 0x04034b50) return false; // not a zip: nothing to say
    const tailLen = Math.min(size, 65_557);
    const tail = Buffer.alloc(tailLen);
    await handle.read(tail, 0, tailLen, size - tailLen);
    for (let i = tailLen - 22; i >= 0; i--) if (tail.readUInt32LE(i) === 0x06054b50) return false;
    return true;
  } finally {
    await handle.close();
  }
}

/**
 * Lists the live files a pattern matches under `workdir`: real folders and regular files only (no symlink is
 * followed), at most `maxEntriesPerDir` entries read per folder and `maxMatches` files.
 */
export async function listLive(
  workdir: string,
  pattern: CompiledPattern,
): Promise<{ files: LiveStat[]; truncated: boolean }> {
  let dirs = [""];
  let truncated = false;
  const components = pattern.components;
  for (let i = 0; i < components.length; i++) {
    const component = components[i]!;
    const last = i === components.length - 1;
    const next: string[] = [];
    for (const rel of dirs) {
      const names: string[] = [];
      if ("literal" in component) names.push(component.literal);
      else {
        const dir = await opendir(path.join(workdir, rel)).catch(() => null);
        if (!dir) continue;
        let read = 0;
        for await (const e of dir) {
          if (++read > adoptLimits.maxEntriesPerDir) {
            truncated = true;
            break;
          }
          if (componentMatches(component, e.name)) names.push(e.name);
        }
      }
      for (const name of names.sort()) {
        const relPath = rel === "" ? name : `${rel}/${name}`;
        const st = await lstat(path.join(workdir, relPath)).catch(() => null);
        if (!st || (last ? !st.isFile() : !st.isDirectory())) continue;
        next.push(relPath);
      }
    }
    dirs = next;
  }
  if (dirs.length > adoptLimits.maxMatches) truncated = true;
  const files: LiveStat[] = [];
  for (const rel of dirs.slice(0, adoptLimits.maxMatches)) {
    const st = await lstat(path.join(workdir, rel)).catch(() => null);
    if (st?.isFile()) files.push({ path: rel, size: st.size, mtimeMs: st.mtimeMs });
  }
  return { files, truncated };
}

/** Reads a run's adopted manifest; a missing one is empty, a broken one is refused with the reason. */
export async function readAdoptedManifest(dir: string): Promise<AdoptedManifest | null | string> {
  const file = path.join(dir, manifestName);
  let opened;
  try {
    opened = await openRegular(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (err instanceof AdoptError && / is missing$/.test(err.message)) return null;
    return `${file} cannot be read (${code ?? (err as Error).message})`;
  }
  try {
    if (opened.size > adoptLimits.manifestBytes) return `${file} is larger than ${adoptLimits.manifestBytes} bytes`;
    const buf = Buffer.alloc(opened.size);
    await opened.handle.read(buf, 0, opened.size, 0);
    let raw: unknown;
    try {
      raw = JSON.parse(buf.toString("utf8"));
    } catch {
      return `${file} is not valid JSON`;
    }
    return parseAdoptedManifest(raw);
  } finally {
    await opened.handle.close();
  }
}

/** Writes the manifest atomically: a temp file (0600) fsynced, renamed over the old one, the folder fsynced. */
async function writeManifest(dir: string, manifest: AdoptedManifest): Promise<void> {
  const tmp = path.join(dir, `.tmp-manifest-${process.pid}-${randomBytes(3).toString("hex")}`);
  const h = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    await h.writeFile(JSON.stringify(manifest, null, 1));
    await h.sync();
  } finally {
    await h.close();
  }
  await rename(tmp, path.join(dir, manifestName));
  await fsyncDir(dir);
}

function storedName(generation: number): string {
  return `gen-${String(generation).padStart(6, "0")}.ckpt`;
}

/** Per job: what the watcher remembers between looks (lost with the server; the manifest on disk holds the truth). */
interface JobWatch {
  dir: string;
  pattern: CompiledPattern;
  manifest: AdoptedManifest;
  states: Map<string, SettleState>;
  busy: Set<string>;
  /** Versions that were copied but refused (a torn zip): not tried again until they change. */
  refused: Map<string, { size: number; mtimeMs: number }>;
  /** The job's adoptions, one after another. */
  chain: Promise<void>;
  truncatedSaid: boolean;
  /** A pattern with wildcards reads folders: looked at no sooner than this (a literal one costs one lstat). */
  nextLookAt: number;
}

/** Reports this close before a file's last write count as after it (see stepBefore). */
const stepMarginMs = 20;

/** Looks at a wildcard pattern's folders at most this often (and at most twice per settle time). */
const globLookMs = 1000;

export interface AdoptedLaunch {
  /** What the script will load, for the attempt's event; null when nothing. */
  summary: string | null;
  /** The live file and the generation's step, recorded as the attempt's resume point when the SDK gives none. */
  resumeFrom: string | null;
  resumeStep: number | null;
}

/** Adopts, verifies and restores the checkpoints of every job with `checkpoint.watch`. */
export class Adopter {
  private readonly jobs = new Map<string, JobWatch>();

  constructor(private readonly ctx: SupervisorContext) {}

  private async watchOf(job: JobRecord): Promise<JobWatch | null> {
    const watch = job.spec.checkpoint.watch;
    if (!watch) return null;
    let w = this.jobs.get(job.id);
    if (w) return w;
    const dir = adoptedDir(job.spec, job.id);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const read = await readAdoptedManifest(dir);
    let manifest: AdoptedManifest;
    if (typeof read === "string") {
      await this.ctx.event(job.id, "checkpoint.invalid", `adopted checkpoints: ${read}; starting a new manifest`, {
        path: dir,
      });
      manifest = emptyManifest(job.id, job.spec.workdir, watch.pattern);
    } else manifest = read ?? emptyManifest(job.id, job.spec.workdir, watch.pattern);
    // A crash between a copy and the manifest's write leaves files no manifest names: they are removed.
    const named = new Set(manifest.generations.map((g) => g.stored));
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      if (name !== manifestName && !named.has(name)) await rm(path.join(dir, name), { force: true });
    }
    w = {
      dir,
      pattern: compilePattern(watch.pattern),
      manifest,
      states: new Map(),
      busy: new Set(),
      refused: new Map(),
      chain: Promise.resolve(),
      truncatedSaid: false,
      nextLookAt: 0,
    };
    this.jobs.set(job.id, w);
    return w;
  }

  /** The manifest of a job's adopted checkpoints as this server knows it (read from disk on first use). */
  async manifest(job: JobRecord): Promise<AdoptedManifest | null> {
    return (await this.watchOf(job))?.manifest ?? null;
  }

  /**
   * One look at a running attempt's watched files (stat calls only): files that settled are adopted in the
   * background. `settleMs` overrides the spec's (0 when the ranks exited cleanly: their files are final).
   */
  async look(job: JobRecord, attempt: AttemptRecord, settleMs?: number): Promise<void> {
    const w = await this.watchOf(job);
    if (!w) return;
    const settleFor = settleMs ?? (job.spec.checkpoint.watch?.settleSeconds ?? 2) * 1000;
    const now = this.ctx.now();
    if (settleMs === undefined && now < w.nextLookAt) return;
    if (!w.pattern.single) w.nextLookAt = now + Math.min(globLookMs, settleFor / 2);
    const { files, truncated } = await listLive(job.spec.workdir, w.pattern);
    if (truncated && !w.truncatedSaid) {
      w.truncatedSaid = true;
      await this.ctx.event(
        job.id,
        "checkpoint.watch-bounded",
        `checkpoint.watch ${w.pattern.source} matches more than ${adoptLimits.maxMatches} files (or a folder has more ` +
          `than ${adoptLimits.maxEntriesPerDir} entries): only the first are adopted (fix: a narrower pattern)`,
        { watch: w.pattern.source },
      );
    }
    const live = files.filter((f) => {
      const refused = w.refused.get(f.path);
      return !refused || !sameVersion(refused, f);
    });
    const ready = settle(w.states, live, w.manifest, now, settleFor, w.busy);
    for (const f of ready) {
      w.busy.add(f.path);
      w.chain = w.chain
        .then(() => slots.run(() => this.adopt(job, attempt, w, f)))
        .catch((err: unknown) => this.ctx.log(`${job.id}: adopting ${f.path}: ${(err as Error).message}`))
        .finally(() => w.busy.delete(f.path));
    }
  }

  /** Waits for the job's adoptions in flight. */
  async settled(jobId: string): Promise<void> {
    const w = this.jobs.get(jobId);
    if (w) await w.chain;
  }

  /** Jobs that are over lose their watch state (their manifests stay on disk); adoptions in flight finish. */
  retain(active: ReadonlySet<string>): void {
    for (const [id, w] of this.jobs) if (!active.has(id) && w.busy.size === 0) this.jobs.delete(id);
  }

  /**
   * The step (or epoch) a save holds: the last one rank 0 reported before the file's last write (a script reports the
   * next step only after its save returns); before any report of this attempt, the step it resumed from.
   */
  private async stepBefore(job: JobRecord, attempt: AttemptRecord, writtenAt: number): Promise<number | null> {
    const recent = await this.ctx.store.recentSteps(job.id, attempt.n, 0, 256);
    // A line printed right after the save returns can carry the save's own millisecond: a margin keeps it out.
    const before = recent.filter((s) => s.t <= writtenAt - stepMarginMs);
    return before.length > 0 ? Math.max(...before.map((s) => s.step)) : (attempt.resumeStep ?? null);
  }

  /** Copies a settled file in as a generation (or notes it is the same bytes as the newest one). */
  private async adopt(
    job: JobRecord,
    attempt: AttemptRecord,
    w: JobWatch,
    f: LiveStat & { changedAt: number },
  ): Promise<void> {
    const live = path.join(job.spec.workdir, f.path);
    const tmp = path.join(w.dir, `.tmp-gen-${process.pid}-${randomBytes(3).toString("hex")}`);
    const before = await lstat(live).catch(() => null);
    const previous = newestOf(w.manifest, f.path);
    // The script replaced its file since the last generation (a new inode): a hard link costs no copy.
    let linked = false;
    if (before?.isFile() && previous?.ino !== undefined && previous.ino !== before.ino) {
      linked = await link(live, tmp).then(
        () => true,
        () => false, // another filesystem (EXDEV), or the file just went: copy
      );
    }
    let copied;
    try {
      copied = linked ? await copyHashed(tmp, null) : await copyHashed(live, tmp);
    } catch (err) {
      await rm(tmp, { force: true });
      w.states.delete(f.path); // gone or changed: it settles again
      if (err instanceof AdoptError || (err as NodeJS.ErrnoException).code) return;
      throw err;
    }
    const after = await lstat(live).catch(() => null);
    if (
      !after ||
      !sameVersion({ size: after.size, mtimeMs: after.mtimeMs }, f) ||
      copied.size !== f.size ||
      after.ino !== before?.ino
    ) {
      await rm(tmp, { force: true });
      w.states.delete(f.path); // written again while being copied: it settles again
      return;
    }
    const newest = newestOf(w.manifest, f.path);
    if (newest && newest.sha256 === copied.sha256) {
      // The same bytes with a new mtime (a restore, a touch): the newest generation stands for this version too.
      await rm(tmp, { force: true });
      newest.mtimeMs = f.mtimeMs;
      newest.ino = after.ino;
      await writeManifest(w.dir, w.manifest);
      return;
    }
    if (await tornZip(tmp)) {
      await rm(tmp, { force: true });
      w.refused.set(f.path, { size: f.size, mtimeMs: f.mtimeMs });
      await this.ctx.event(
        job.id,
        "checkpoint.invalid",
        `${f.path} stopped changing but is a zip without its end record (a torch.save cut short?): not adopted`,
        { path: f.path, size: f.size },
      );
      return;
    }
    const generation = w.manifest.next;
    const stored = storedName(generation);
    await rename(tmp, path.join(w.dir, stored));
    await fsyncDir(w.dir);
    const step = await this.stepBefore(job, attempt, f.mtimeMs);
    const gen: AdoptedGeneration = {
      generation,
      path: f.path,
      stored,
      size: copied.size,
      sha256: copied.sha256,
      mtimeMs: f.mtimeMs,
      savedAt: f.mtimeMs,
      writeStartedAt: Math.min(f.changedAt, f.mtimeMs),
      step,
      attempt: attempt.n,
      ino: after.ino,
      ...(linked ? { linked: true } : {}),
    };
    w.manifest.next = generation + 1;
    w.manifest.generations.push(gen);
    const dropped = generationsToPrune(w.manifest, job.spec.checkpoint.keep);
    const drop = new Set(dropped.map((g) => g.generation));
    w.manifest.generations = w.manifest.generations.filter((g) => !drop.has(g.generation));
    await writeManifest(w.dir, w.manifest);
    for (const g of dropped) await rm(path.join(w.dir, g.stored), { force: true });
    const saveMs = Math.max(0, gen.savedAt - gen.writeStartedAt);
    await this.ctx.event(
      job.id,
      "checkpoint.saved",
      `${f.path} adopted as ${describeGeneration(gen)}: ${formatBytes(gen.size)}, sha256 ${gen.sha256.slice(0, 12)}…` +
        `, written in ${(saveMs / 1000).toFixed(1)}s` +
        (linked ? " (kept as a hard link: the script replaces its file at each save)" : "") +
        (dropped.length > 0 ? `; dropped generation ${dropped.map((g) => g.generation).join(", ")}` : ""),
      {
        adopted: true,
        path: f.path,
        generation,
        step: step ?? 0,
        attempt: attempt.n,
        t: gen.savedAt,
        saveMs,
        size: gen.size,
        sha256: gen.sha256,
      },
    );
  }

  /**
   * Before attempt `n` launches. A new run (n = 1) sets aside what an earlier run left (unless `run --resume-from`
   * names that run: then its newest verified generation is taken over). A restart verifies each live file against its
   * newest generation and restores the newest generation that verifies where it fails. Says what the script will load.
   */
  async prepareLaunch(job: JobRecord, n: number): Promise<AdoptedLaunch> {
    const none: AdoptedLaunch = { summary: null, resumeFrom: null, resumeStep: null };
    const w = await this.watchOf(job);
    if (!w) return none;
    await w.chain;
    w.states.clear();
    w.refused.clear();
    if (n > 1) await this.adoptCompleteSaves(job, w, n - 1);
    const { files } = await listLive(job.spec.workdir, w.pattern);
    if (n === 1 && w.manifest.generations.length === 0) return this.prepareNewRun(job, w, files);
    const loads: string[] = [];
    let resume: AdoptedGeneration | null = null;
    const paths = new Set([...files.map((f) => f.path), ...w.manifest.generations.map((g) => g.path)]);
    for (const p of [...paths].sort()) {
      const liveFile = files.find((f) => f.path === p);
      const gens = generationsOf(w.manifest, p);
      const newest = gens[0];
      if (!newest) {
        // Written after the last adoption and never settled, with no generation to fall back on: set aside.
        await this.setAside(job, p, "torn", "was written but never settled while the run went on (a save cut short?)");
        continue;
      }
      if (!liveFile && !w.pattern.single) continue; // the script rotated it away: not ours to bring back
      let problem: string | null = null;
      if (!liveFile) problem = "is missing";
      else {
        const hashed = await slots
          .run(() => copyHashed(path.join(job.spec.workdir, p), null))
          .catch((err: Error) => err);
        if (hashed instanceof Error) problem = `cannot be read (${hashed.message})`;
        else if (hashed.sha256 === newest.sha256) {
          if (!sameVersion(newest, liveFile)) {
            newest.mtimeMs = liveFile.mtimeMs; // the same bytes, touched
            await writeManifest(w.dir, w.manifest);
          }
        } else if (sameVersion(newest, liveFile)) problem = "failed verification (sha mismatch)";
        else {
          // Written after the last adoption, and the writer is gone: complete or torn, nothing can tell.
          const sizes =
            liveFile.size !== newest.size
              ? `${formatBytes(liveFile.size)}, generation ${newest.generation} has ${formatBytes(newest.size)}`
              : "same size, rewritten";
          problem =
            `failed verification (changed after generation ${newest.generation} was adopted and never settled: ` +
            `${sizes}; torn write?)`;
        }
      }
      if (problem === null) {
        loads.push(`${p} (${describeGeneration(newest)}, verified)`);
        if (!resume || newest.savedAt > resume.savedAt) resume = newest;
        continue;
      }
      const restored = await this.restoreNewest(job, w.dir, gens, p, problem);
      if (restored) {
        loads.push(`${p} (${describeGeneration(restored)}, restored)`);
        if (!resume || restored.savedAt > resume.savedAt) resume = restored;
      } else if (liveFile) {
        await this.setAside(job, p, "torn", `${problem} and no generation verifies`);
      }
    }
    if (loads.length === 0) return none;
    return {
      summary: `the script will load ${loads.join(", ")}`,
      resumeFrom: resume ? path.join(job.spec.workdir, resume.path) : null,
      resumeStep: resume?.step ?? null,
    };
  }

  /**
   * Before a restart, with the last gang stopped: a file written since its newest generation that had not settled yet
   * (a save that ended just before the crash) is adopted after all when it is a complete torch zip (its end record is
   * written last, so nothing torn has one). Without this, a kill within the settle time after a save rolled the run
   * back one save further than it needed (seen on the H100 check: a kill 0.5 s after a save restored the save before).
   * Any other format, or a zip without its end record, goes on to verification and restore as before.
   */
  private async adoptCompleteSaves(job: JobRecord, w: JobWatch, lastAttempt: number): Promise<void> {
    const attempt = (await this.ctx.store.listAttempts(job.id)).find((a) => a.n === lastAttempt);
    if (!attempt) return;
    const { files } = await listLive(job.spec.workdir, w.pattern);
    for (const f of files) {
      const newest = newestOf(w.manifest, f.path);
      if (newest && sameVersion(newest, f)) continue; // adopted already (or rotted in place: verification says so)
      if (!(await completeZip(path.join(job.spec.workdir, f.path)))) continue;
      const before = w.manifest.next;
      await slots.run(() => this.adopt(job, attempt, w, { ...f, changedAt: f.mtimeMs }));
      if (w.manifest.next > before) {
        await this.ctx.event(
          job.id,
          "checkpoint.adopted-late",
          `${f.path} was saved ${(Math.max(0, (attempt.endedAt ?? f.mtimeMs) - f.mtimeMs) / 1000).toFixed(1)}s ` +
            `before the attempt ended and had not settled yet; it is a complete torch zip (end record present), so it ` +
            `was adopted as generation ${before} rather than rolled back`,
          { path: f.path, generation: before },
        );
      }
    }
  }

  /** A new run: an earlier run's files are set aside, or taken over from the run `--resume-from` names. */
  private async prepareNewRun(job: JobRecord, w: JobWatch, files: LiveStat[]): Promise<AdoptedLaunch> {
    // Two live runs writing one file cannot both be right: said, not refused (the user may mean it for a while).
    for (const other of await this.ctx.store.listJobs({ activeOnly: true })) {
      const theirs = other.spec.checkpoint.watch;
      if (other.id === job.id || !theirs || other.spec.workdir !== job.spec.workdir) continue;
      if (theirs.pattern !== w.pattern.source) continue;
      await this.ctx.event(
        job.id,
        "checkpoint.shared-workdir",
        `run ${other.id} (${other.state}) also watches ${theirs.pattern} in ${job.spec.workdir}: both scripts write ` +
          "the same file and each run would adopt the other's saves (fix: give each run its own workdir, or cancel one)",
        { other: other.id, watch: theirs.pattern },
      );
    }
    const from = job.spec.checkpoint.resumeFrom ?? null;
    const otherDir = from ? path.join(from, "adopted") : null;
    const otherRead = otherDir ? await readAdoptedManifest(otherDir) : null;
    const other = typeof otherRead === "object" ? otherRead : null;
    const loads: string[] = [];
    let resume: AdoptedGeneration | null = null;
    const paths = new Set([...files.map((f) => f.path), ...(other?.generations.map((g) => g.path) ?? [])]);
    for (const p of [...paths].sort()) {
      const liveFile = files.find((f) => f.path === p);
      const gens = other ? generationsOf(other, p) : [];
      if (gens.length === 0 || !other || !otherDir) {
        if (liveFile) {
          await this.setAside(
            job,
            p,
            "prev",
            "was in the workdir when this new run started and is none of its checkpoints: the run starts fresh " +
              "(fix: to continue from an earlier run, run --resume-from <that run>)",
          );
        }
        continue;
      }
      // A missing file is brought back for a one-file pattern, or when it is the one the other run saved last.
      const lastSaved = [...other.generations].sort((a, b) => b.savedAt - a.savedAt)[0];
      if (!liveFile && !w.pattern.single && lastSaved?.path !== p) continue;
      // Take the other run's newest generation that verifies, copied into the workdir when the live file differs.
      const newest = gens[0]!;
      let taken: AdoptedGeneration | null = null;
      if (liveFile && liveFile.size === newest.size) {
        const hashed = await slots.run(() => copyHashed(path.join(job.spec.workdir, p), null)).catch(() => null);
        if (hashed?.sha256 === newest.sha256) taken = newest;
      }
      if (!taken && liveFile) {
        // Not the named run's file (another run's, or a save it never adopted): kept beside, not overwritten.
        await this.setAside(job, p, "prev", `is not run ${other.jobId}'s ${describeGeneration(newest)}`);
      }
      taken ??= await this.restoreNewest(
        job,
        otherDir,
        gens,
        p,
        liveFile ? "was set aside" : "is missing",
        `run ${other.jobId}'s (--resume-from) `,
      );
      if (!taken) continue; // none of its generations verifies: the run starts fresh, and the events said why
      // This run's own first generation of the file: a restart of this run can verify and restore it.
      const own = await this.importGeneration(job, w, p, { jobId: other.jobId, generation: taken.generation }, taken);
      loads.push(`${p} (run ${other.jobId}'s ${describeGeneration(taken)})`);
      if (own && (!resume || own.savedAt > resume.savedAt)) resume = own;
    }
    if (loads.length === 0) return { summary: null, resumeFrom: null, resumeStep: null };
    await this.ctx.event(
      job.id,
      "checkpoint.foreign",
      `continuing from ${loads.join(", ")}, asked for with --resume-from`,
      {
        from,
      },
    );
    return {
      summary: `the script will load ${loads.join(", ")}`,
      resumeFrom: resume ? path.join(job.spec.workdir, resume.path) : null,
      resumeStep: resume?.step ?? null,
    };
  }

  /** Copies the live file (just verified or restored) in as this run's generation, taken from another run's. */
  private async importGeneration(
    job: JobRecord,
    w: JobWatch,
    p: string,
    from: { jobId: string; generation: number },
    source: AdoptedGeneration,
  ): Promise<AdoptedGeneration | null> {
    const tmp = path.join(w.dir, `.tmp-gen-${process.pid}-${randomBytes(3).toString("hex")}`);
    const copied = await slots
      .run(() => copyHashed(path.join(job.spec.workdir, p), tmp, source.sha256))
      .catch(() => null);
    if (!copied) return null;
    const generation = w.manifest.next;
    const stored = storedName(generation);
    await rename(tmp, path.join(w.dir, stored));
    const { linked: _linked, ino: _ino, ...rest } = source;
    const st = await lstat(path.join(job.spec.workdir, p)).catch(() => null);
    const gen: AdoptedGeneration = {
      ...rest,
      generation,
      stored,
      mtimeMs: copied.mtimeMs,
      attempt: 0,
      from,
      ...(st ? { ino: st.ino } : {}),
    };
    w.manifest.next = generation + 1;
    w.manifest.generations.push(gen);
    await writeManifest(w.dir, w.manifest);
    return gen;
  }

  /**
   * Replaces the live file with the newest of `gens` (stored in `dir`) that verifies: copied next to it with its hash
   * checked on the way, fsynced, given the generation's mtime, renamed over it. Each generation that fails is said.
   */
  private async restoreNewest(
    job: JobRecord,
    dir: string,
    gens: AdoptedGeneration[],
    p: string,
    problem: string,
    whose = "",
  ): Promise<AdoptedGeneration | null> {
    const live = path.join(job.spec.workdir, p);
    const unsafe = await symlinkedParent(job.spec.workdir, p);
    if (unsafe) {
      await this.ctx.event(job.id, "checkpoint.skipped", `not restoring ${p}: ${unsafe}`, { path: p, reason: unsafe });
      return null;
    }
    await mkdir(path.dirname(live), { recursive: true, mode: 0o700 });
    for (const g of gens) {
      const tmp = `${live}${reservedInfix}restore-${randomBytes(3).toString("hex")}`;
      const copied = await slots
        .run(() => copyHashed(path.join(dir, g.stored), tmp, g.sha256))
        .catch((err: Error) => err);
      if (copied instanceof Error) {
        const reason = copied instanceof AdoptError ? copied.message : `cannot be read (${copied.message})`;
        await this.ctx.event(
          job.id,
          "checkpoint.skipped",
          `skipping ${p}'s ${describeGeneration(g)}: its stored copy ${reason}`,
          { path: p, generation: g.generation, reason },
        );
        continue;
      }
      const h = await open(tmp, constants.O_RDONLY);
      try {
        await h.utimes(new Date(g.mtimeMs), new Date(g.mtimeMs));
      } finally {
        await h.close();
      }
      await rename(tmp, live);
      await fsyncDir(path.dirname(live));
      const st = await lstat(live).catch(() => null);
      if (st && dir === adoptedDir(job.spec, job.id)) {
        g.mtimeMs = st.mtimeMs;
        g.ino = st.ino; // the restore's own inode: the script's next in-place save is not taken for a replacement
      }
      await this.ctx.event(
        job.id,
        "checkpoint.restored",
        `${p} ${problem}; restored ${whose}${describeGeneration(g)}`,
        {
          path: p,
          generation: g.generation,
          step: g.step,
          savedAt: g.savedAt,
          problem,
        },
      );
      const w = this.jobs.get(job.id);
      if (w && dir === w.dir) await writeManifest(w.dir, w.manifest);
      return g;
    }
    return null;
  }

  /** Renames a live file out of the pattern's way (`<file>.switchyard-<why>-<job id>`), said in an event. */
  private async setAside(job: JobRecord, p: string, why: "prev" | "torn", what: string): Promise<void> {
    const live = path.join(job.spec.workdir, p);
    let target = setAsideName(live, job.id, why);
    if (await lstat(target).catch(() => null)) target = `${target}-${randomBytes(2).toString("hex")}`;
    await rename(live, target);
    await fsyncDir(path.dirname(live));
    await this.ctx.event(
      job.id,
      "checkpoint.set-aside",
      `${p} ${what}; moved aside to ${path.relative(job.spec.workdir, target)}`,
      { path: p, to: target, why },
    );
  }
}

/** Why a live path's folders are unsafe to write through (one is a symlink or not a folder), or null. */
async function symlinkedParent(workdir: string, rel: string): Promise<string | null> {
  let current = workdir;
  for (const part of rel.split("/").slice(0, -1)) {
    current = path.join(current, part);
    const st = await lstat(current).catch(() => null);
    if (!st) return null; // created by the restore
    if (st.isSymbolicLink()) return `folder ${part} is a symlink (switchyard writes only under real folders)`;
    if (!st.isDirectory()) return `${part} is not a folder`;
  }
  return null;
}

/**
 * The live file `chaos corrupt-checkpoint` corrupts for a job with `checkpoint.watch`: the newest adopted
 * generation's file, when it is still there.
 */
export async function newestAdoptedFile(spec: CompiledJobSpec, jobId: string): Promise<string | null> {
  if (!spec.checkpoint.watch) return null;
  const read = await readAdoptedManifest(adoptedDir(spec, jobId));
  if (!read || typeof read === "string") return null;
  const newest = [...read.generations].sort((a, b) => b.generation - a.generation)[0];
  return newest ? path.join(spec.workdir, newest.path) : null;
}
