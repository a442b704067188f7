import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readdir, readFile, rm, stat } from "node:fs/promises";
import path from "node:path";
import { parseManifest, type CheckpointCandidate, type Verification } from "../core/checkpoints.js";

const stepDir = /^step-(\d+)$/;

/** Lists `step-NNNNNNNN` folders under the checkpoint root (temp `.tmp-*` folders never count). */
export async function listCheckpointDirs(root: string): Promise<Array<{ path: string; step: number }>> {
  let entries: string[];
  try {
    entries = await readdir(root);
  } catch {
    return [];
  }
  return entries
    .map((name) => ({ name, m: stepDir.exec(name) }))
    .filter((e): e is { name: string; m: RegExpExecArray } => e.m !== null)
    .map((e) => ({ path: path.join(root, e.name), step: Number(e.m[1]) }));
}

async function sha256(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** Verifies a checkpoint folder against its manifest: every file present, of the listed size and SHA-256. */
export async function verifyCheckpoint(dir: string, expectedStep?: number): Promise<Verification> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path.join(dir, "MANIFEST.json"), "utf8"));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return {
      ok: false,
      reason: code === "ENOENT" ? "no MANIFEST.json (torn write?)" : "MANIFEST.json is not valid JSON",
    };
  }
  const manifest = parseManifest(raw);
  if (typeof manifest === "string") return { ok: false, reason: manifest };
  if (expectedStep !== undefined && manifest.step !== expectedStep) {
    return { ok: false, reason: `manifest says step ${manifest.step}, folder says ${expectedStep}` };
  }
  for (const file of manifest.files) {
    const full = path.join(dir, file.path);
    let size: number;
    try {
      size = (await stat(full)).size;
    } catch {
      return { ok: false, reason: `${file.path} is missing` };
    }
    if (size !== file.size) return { ok: false, reason: `${file.path} has ${size} bytes, manifest says ${file.size}` };
    const digest = await sha256(full);
    if (digest !== file.sha256) return { ok: false, reason: `${file.path} fails its SHA-256 check (corrupted)` };
  }
  return { ok: true, manifest };
}

/**
 * Finds the newest checkpoint that verifies, checking newest first and stopping at the first good one, so a resume
 * hashes only what it must. Returns every newer candidate that failed, to be reported.
 */
export async function findResumePoint(
  root: string,
): Promise<{ chosen: CheckpointCandidate | null; skipped: CheckpointCandidate[] }> {
  const dirs = (await listCheckpointDirs(root)).sort((a, b) => b.step - a.step);
  const skipped: CheckpointCandidate[] = [];
  for (const d of dirs) {
    const verification = await verifyCheckpoint(d.path, d.step);
    const candidate = { ...d, verification };
    if (verification.ok) return { chosen: candidate, skipped };
    skipped.push(candidate);
  }
  return { chosen: null, skipped };
}

/** Deletes the oldest verified checkpoints beyond `keep`, never touching `protect` (the resume point in use). */
export async function pruneCheckpoints(root: string, keep: number, protect: string | null): Promise<string[]> {
  const dirs = (await listCheckpointDirs(root)).sort((a, b) => b.step - a.step);
  const removed: string[] = [];
  let kept = 0;
  for (const d of dirs) {
    if (kept < keep || d.path === protect) {
      kept++;
      continue;
    }
    await rm(d.path, { recursive: true, force: true });
    removed.push(d.path);
  }
  return removed;
}
