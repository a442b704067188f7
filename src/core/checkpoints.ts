/** Checkpoint manifests and the choice of where to resume from. */

export const manifestFormat = "switchyard-checkpoint/1";

export interface ManifestFile {
  path: string;
  size: number;
  sha256: string;
}

export interface Manifest {
  format: string;
  step: number;
  shards: number;
  created: number;
  files: ManifestFile[];
}

export type Verification = { ok: true; manifest: Manifest } | { ok: false; reason: string };

export interface CheckpointCandidate {
  path: string;
  /** Step taken from the directory name; the manifest's step must agree. */
  step: number;
  verification: Verification;
}

/** Bounds on a manifest, so a hostile or broken one costs little to reject. */
export const maxManifestBytes = 16 << 20;
export const maxManifestFiles = 100_000;
const maxManifestPathLength = 1024;
const sha256Hex = /^[0-9a-fA-F]{64}$/;

/** Why a manifest path is refused, or null: relative, no empty, `.` or `..` component, no NUL. */
function badPath(p: string): string | null {
  if (p.length === 0) return "an empty path";
  if (p.length > maxManifestPathLength) return `a path longer than ${maxManifestPathLength} characters`;
  if (p.includes("\0")) return "a path with a NUL byte";
  if (p.startsWith("/") || p.split("/").includes("..")) return null; // reported as escaping below
  if (p.split("/").some((c) => c === "" || c === ".")) return `a path with an empty or "." component`;
  if (p === "MANIFEST.json") return "the manifest itself";
  return null;
}

/** Checks a parsed MANIFEST.json for shape; contents are checked against the files by the caller. */
export function parseManifest(raw: unknown): Manifest | string {
  if (typeof raw !== "object" || raw === null) return "MANIFEST.json is not a JSON object";
  const m = raw as Record<string, unknown>;
  if (m.format !== manifestFormat) return `unknown manifest format ${JSON.stringify(m.format)?.slice(0, 80)}`;
  if (!Number.isSafeInteger(m.step) || (m.step as number) < 0) return "manifest step is not a non-negative integer";
  if (!Number.isSafeInteger(m.shards) || (m.shards as number) < 1) return "manifest shards is not a positive integer";
  if (!Array.isArray(m.files) || m.files.length === 0) return "manifest lists no files";
  if (m.files.length > maxManifestFiles) return `manifest lists ${m.files.length} files, more than ${maxManifestFiles}`;
  const seen = new Set<string>();
  for (const f of m.files as unknown[]) {
    const file = (typeof f === "object" && f !== null ? f : {}) as Record<string, unknown>;
    if (typeof file.path !== "string" || typeof file.size !== "number" || typeof file.sha256 !== "string") {
      return "manifest file entry lacks path, size or sha256";
    }
    const shown = JSON.stringify(file.path.slice(0, 200));
    if (file.path.startsWith("/") || file.path.split("/").includes("..")) {
      return `manifest path escapes: ${file.path.slice(0, 200)}`;
    }
    const bad = badPath(file.path);
    if (bad) return `manifest lists ${bad}: ${shown}`;
    if (seen.has(file.path)) return `manifest lists ${shown} twice`;
    seen.add(file.path);
    if (!Number.isSafeInteger(file.size) || file.size < 0) return `manifest size of ${shown} is not a byte count`;
    if (!sha256Hex.test(file.sha256)) return `manifest sha256 of ${shown} is not 64 hex digits`;
  }
  return {
    format: m.format,
    step: m.step as number,
    shards: m.shards as number,
    created: typeof m.created === "number" ? m.created : 0,
    files: m.files as ManifestFile[],
  };
}

/** Newest first: the first candidate that verifies, and every newer one that did not (to be reported). */
export function selectResumePoint(candidates: readonly CheckpointCandidate[]): {
  chosen: CheckpointCandidate | null;
  skipped: CheckpointCandidate[];
} {
  const newestFirst = [...candidates].sort((a, b) => b.step - a.step);
  const skipped: CheckpointCandidate[] = [];
  for (const c of newestFirst) {
    if (c.verification.ok) return { chosen: c, skipped };
    skipped.push(c);
  }
  return { chosen: null, skipped };
}

/** Which verified checkpoints retention deletes: all but the newest `keep` verified ones (never the resume point). */
export function checkpointsToPrune(candidates: readonly CheckpointCandidate[], keep: number): CheckpointCandidate[] {
  const verified = candidates.filter((c) => c.verification.ok).sort((a, b) => b.step - a.step);
  return verified.slice(keep);
}
