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

/** Checks a parsed MANIFEST.json for shape; contents are checked against the files by the caller. */
export function parseManifest(raw: unknown): Manifest | string {
  if (typeof raw !== "object" || raw === null) return "MANIFEST.json is not a JSON object";
  const m = raw as Record<string, unknown>;
  if (m.format !== manifestFormat) return `unknown manifest format ${JSON.stringify(m.format)}`;
  if (!Number.isInteger(m.step) || (m.step as number) < 0) return "manifest step is not a non-negative integer";
  if (!Number.isInteger(m.shards) || (m.shards as number) < 1) return "manifest shards is not a positive integer";
  if (!Array.isArray(m.files) || m.files.length === 0) return "manifest lists no files";
  for (const f of m.files as unknown[]) {
    const file = f as Record<string, unknown>;
    if (typeof file.path !== "string" || typeof file.size !== "number" || typeof file.sha256 !== "string") {
      return "manifest file entry lacks path, size or sha256";
    }
    if (file.path.startsWith("/") || file.path.split("/").includes("..")) return `manifest path escapes: ${file.path}`;
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
