/**
 * Checkpoints a script writes itself (`checkpoint.watch`): the pure parts. The pattern's grammar and bounds, the
 * manifest switchyard keeps for the files it adopts, the settle rule (a file is adopted once its size and mtime have
 * not changed for `settleSeconds`), which generations retention keeps, and how a generation is said in events.
 * The files themselves are read, copied and restored by src/supervisor/adopt.ts.
 */

export const adoptedManifestFormat = "switchyard-adopted/1";

/** Bounds: a pattern costs a bounded walk, a manifest a bounded parse. */
export const adoptLimits = {
  patternLength: 512,
  /** Path components of a pattern (`ckpt/*.pt` has 2): the walk never goes deeper. */
  patternDepth: 8,
  /** Files one pattern may match; more is an error said once in the events, and only the first ones are watched. */
  maxMatches: 64,
  /** Folder entries read per folder while matching (a workdir full of data files costs no more than this). */
  maxEntriesPerDir: 10_000,
  /** Generations in a manifest: `keep` per file, and files up to maxMatches. */
  maxGenerations: 100_000,
  manifestBytes: 16 << 20,
} as const;

/** Names switchyard gives files it sets aside or writes next to the live one: never matched by a pattern. */
export const reservedInfix = ".switchyard-";

/**
 * Why a watch pattern is refused (with the fix after ` | fix: `), or null. A pattern is a path relative to the job's
 * workdir, `/`-separated; each component is literal or uses `*` (any run of characters but `/`) and `?` (one such
 * character). No `..`, no `.` or empty component, no `**` (the walk's depth is the pattern's), no NUL. An absolute
 * path is taken when it lies inside the workdir (compileJobSpec makes it relative).
 */
export function watchPatternProblem(pattern: string): string | null {
  const fix = "a path relative to the job's workdir, e.g. snapshot.pt or ckpt/*.pt";
  if (pattern.length === 0) return `is empty | fix: ${fix}`;
  if (pattern.length > adoptLimits.patternLength) {
    return `is longer than ${adoptLimits.patternLength} characters | fix: ${fix}`;
  }
  if (pattern.includes("\0")) return `contains a NUL byte | fix: ${fix}`;
  if (pattern.includes("\\")) return `contains a backslash (no escapes; components are separated by '/') | fix: ${fix}`;
  const parts = (pattern.startsWith("/") ? pattern.slice(1) : pattern).split("/");
  if (parts.includes("..")) return `leaves the workdir ('..') | fix: ${fix}`;
  if (parts.some((p) => p === "" || p === ".")) return `has an empty or '.' component | fix: ${fix}`;
  if (parts.some((p) => p.includes("**"))) {
    return `uses '**' (no recursive patterns: the walk is bounded by the pattern's depth) | fix: ${fix}`;
  }
  if (/[[\]{}]/.test(pattern)) return `uses '[', ']', '{' or '}' (only '*' and '?' are wildcards) | fix: ${fix}`;
  if (parts.length > adoptLimits.patternDepth) {
    return `has ${parts.length} components, more than ${adoptLimits.patternDepth} | fix: ${fix}`;
  }
  if (parts.some((p) => p.includes(reservedInfix))) {
    return `names switchyard's own files ('${reservedInfix}') | fix: ${fix}`;
  }
  return null;
}

/** A pattern, relative to the workdir, split into components, each a matcher. */
export interface CompiledPattern {
  source: string;
  components: Array<{ literal: string } | { regex: RegExp }>;
  /** No wildcard anywhere: the pattern names one file. */
  single: boolean;
}

export function compilePattern(pattern: string): CompiledPattern {
  const problem = watchPatternProblem(pattern);
  if (problem)
    throw new Error(`checkpoint.watch ${JSON.stringify(pattern)} ${problem.replace(" | fix: ", " (fix: ")})`);
  const components = pattern.split("/").map((part) => {
    if (!/[*?]/.test(part)) return { literal: part };
    // Linear: only [^/]* and [^/] with literal characters between them (no nested quantifiers).
    const source = part
      .split("")
      .map((ch) => (ch === "*" ? "[^/]*" : ch === "?" ? "[^/]" : ch.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
      .join("");
    return { regex: new RegExp(`^${source}$`, "s") };
  });
  return { source: pattern, components, single: components.every((c) => "literal" in c) };
}

/** Whether a folder entry's name matches a component. Hidden names match only a component that starts with '.'. */
export function componentMatches(component: CompiledPattern["components"][number], name: string): boolean {
  if (name.includes(reservedInfix)) return false;
  if ("literal" in component) return component.literal === name;
  return component.regex.test(name) && (!name.startsWith(".") || component.regex.source.startsWith("^\\."));
}

export interface AdoptedGeneration {
  generation: number;
  /** The live file, relative to the workdir. */
  path: string;
  /** The stored copy, relative to the adopted folder. */
  stored: string;
  size: number;
  sha256: string;
  /** The live file's mtime when adopted (ms since the epoch): unchanged size and mtime mean "this generation". */
  mtimeMs: number;
  /** When the write finished (the file's mtime) and when switchyard first saw it change. */
  savedAt: number;
  writeStartedAt: number;
  /** The step (or epoch) the job last reported when the file settled; null when it reports none. */
  step: number | null;
  attempt: number;
  /** Another run's generation this one was taken from (`run --resume-from`). */
  from?: { jobId: string; generation: number };
  /** The live file's inode when adopted (or restored): a new inode at the next save means the script replaces its file. */
  ino?: number;
  /** The stored copy is a hard link to the file the script wrote (see src/supervisor/adopt.ts). */
  linked?: boolean;
}

export interface AdoptedManifest {
  format: string;
  jobId: string;
  workdir: string;
  watch: string;
  /** The number the next generation gets. */
  next: number;
  generations: AdoptedGeneration[];
}

export function emptyManifest(jobId: string, workdir: string, watch: string): AdoptedManifest {
  return { format: adoptedManifestFormat, jobId, workdir, watch, next: 1, generations: [] };
}

const sha256Hex = /^[0-9a-f]{64}$/;
const storedName = /^gen-\d{6,}\.ckpt$/;

/** Checks a parsed manifest for shape and bounds; returns the reason it is refused otherwise. */
export function parseAdoptedManifest(raw: unknown): AdoptedManifest | string {
  if (typeof raw !== "object" || raw === null) return "the adopted manifest is not a JSON object";
  const m = raw as Record<string, unknown>;
  if (m.format !== adoptedManifestFormat) return `unknown adopted manifest format ${String(m.format).slice(0, 80)}`;
  if (typeof m.jobId !== "string" || typeof m.workdir !== "string" || typeof m.watch !== "string") {
    return "the adopted manifest lacks jobId, workdir or watch";
  }
  if (!Number.isSafeInteger(m.next) || (m.next as number) < 1) return "the adopted manifest's next is not a count";
  if (!Array.isArray(m.generations) || m.generations.length > adoptLimits.maxGenerations) {
    return "the adopted manifest's generations are not a bounded list";
  }
  const generations: AdoptedGeneration[] = [];
  for (const g of m.generations as unknown[]) {
    const gen = (typeof g === "object" && g !== null ? g : {}) as Record<string, unknown>;
    const num = (k: string) => typeof gen[k] === "number" && Number.isFinite(gen[k]);
    if (
      !Number.isSafeInteger(gen.generation) ||
      typeof gen.path !== "string" ||
      watchPatternProblem(gen.path) !== null ||
      /[*?]/.test(gen.path) ||
      typeof gen.stored !== "string" ||
      !storedName.test(gen.stored) ||
      !Number.isSafeInteger(gen.size) ||
      (gen.size as number) < 0 ||
      typeof gen.sha256 !== "string" ||
      !sha256Hex.test(gen.sha256) ||
      !num("mtimeMs") ||
      !num("savedAt") ||
      !num("writeStartedAt") ||
      !(gen.step === null || Number.isSafeInteger(gen.step)) ||
      !Number.isSafeInteger(gen.attempt) ||
      !(gen.ino === undefined || num("ino")) ||
      !(gen.linked === undefined || typeof gen.linked === "boolean")
    ) {
      return `the adopted manifest has a malformed generation entry (${JSON.stringify(g).slice(0, 200)})`;
    }
    generations.push(gen as unknown as AdoptedGeneration);
  }
  return {
    format: adoptedManifestFormat,
    jobId: m.jobId,
    workdir: m.workdir,
    watch: m.watch,
    next: m.next as number,
    generations,
  };
}

/** The newest generation of a live path, or undefined. */
export function newestOf(manifest: AdoptedManifest, livePath: string): AdoptedGeneration | undefined {
  let newest: AdoptedGeneration | undefined;
  for (const g of manifest.generations) {
    if (g.path === livePath && (!newest || g.generation > newest.generation)) newest = g;
  }
  return newest;
}

/** Generations of a path, newest first. */
export function generationsOf(manifest: AdoptedManifest, livePath: string): AdoptedGeneration[] {
  return manifest.generations.filter((g) => g.path === livePath).sort((a, b) => b.generation - a.generation);
}

/** Which generations retention drops: for each path, all but its newest `keep`. */
export function generationsToPrune(manifest: AdoptedManifest, keep: number): AdoptedGeneration[] {
  const byPath = new Map<string, AdoptedGeneration[]>();
  for (const g of manifest.generations) byPath.set(g.path, [...(byPath.get(g.path) ?? []), g]);
  const drop: AdoptedGeneration[] = [];
  for (const gens of byPath.values()) {
    gens.sort((a, b) => b.generation - a.generation);
    drop.push(...gens.slice(keep));
  }
  return drop;
}

/** What one look saw of a live file. */
export interface LiveStat {
  path: string;
  size: number;
  mtimeMs: number;
}

/** What the watcher remembers of a live file between looks (all of it can be lost: the manifest holds the truth). */
export interface SettleState {
  size: number;
  mtimeMs: number;
  /** When this size and mtime were first seen. */
  since: number;
  /**
   * When the write that made this version began, to a look's precision: the first change seen after the file had
   * held still for a while (a script that saves again before its last save settled starts a new write here).
   */
  changedAt: number;
}

/** A file that held still this long and then changed is being written anew (see SettleState.changedAt). */
const newWriteGapMs = 1000;

/** Two mtimes within a millisecond are the same (utimes and stat round differently on some filesystems). */
export function sameVersion(a: { size: number; mtimeMs: number }, b: { size: number; mtimeMs: number }): boolean {
  return a.size === b.size && Math.abs(a.mtimeMs - b.mtimeMs) < 1;
}

/**
 * One look at the live files: updates each file's settle state and returns the files ready to adopt, i.e. that differ
 * from their newest generation and whose size and mtime have not changed for `settleMs`. `busy` paths (an adoption in
 * flight) are left alone. Files no longer there are forgotten.
 */
export function settle(
  states: Map<string, SettleState>,
  live: readonly LiveStat[],
  manifest: AdoptedManifest,
  now: number,
  settleMs: number,
  busy: ReadonlySet<string> = new Set(),
): Array<LiveStat & { changedAt: number }> {
  const ready: Array<LiveStat & { changedAt: number }> = [];
  const seen = new Set<string>();
  for (const f of live) {
    seen.add(f.path);
    const newest = newestOf(manifest, f.path);
    if (newest && sameVersion(newest, f)) {
      states.delete(f.path);
      continue;
    }
    const s = states.get(f.path);
    if (!s) {
      states.set(f.path, { size: f.size, mtimeMs: f.mtimeMs, since: now, changedAt: now });
      if (settleMs <= 0 && !busy.has(f.path)) ready.push({ ...f, changedAt: now });
      continue;
    }
    if (!sameVersion(s, f)) {
      // Held still for a while, then changed: a new write (a write in progress changes at every look).
      if (now - s.since > Math.min(settleMs / 2, newWriteGapMs)) s.changedAt = now;
      s.size = f.size;
      s.mtimeMs = f.mtimeMs;
      s.since = now;
      if (settleMs > 0) continue;
    }
    if (now - s.since >= settleMs && !busy.has(f.path)) ready.push({ ...f, changedAt: s.changedAt });
  }
  for (const p of [...states.keys()]) if (!seen.has(p)) states.delete(p);
  return ready;
}

/** "generation 4 (step 10, saved 2026-11-27T04:40:12.000Z)" */
export function describeGeneration(g: AdoptedGeneration): string {
  // About: the last step the job reported before the file was written (reports and saves interleave).
  const step = g.step !== null ? `step/epoch ~${g.step}, ` : "";
  return `generation ${g.generation} (${step}saved ${new Date(g.savedAt).toISOString()})`;
}

/** Human byte counts for events: 1.2 MB, 512 B. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

/** The name a file set aside gets: next to it, with the run that set it aside. */
export function setAsideName(livePath: string, jobId: string, why: "prev" | "torn"): string {
  return `${livePath}${reservedInfix}${why}-${jobId}`;
}
