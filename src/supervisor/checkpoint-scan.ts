import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { lstat, open, readdir, rm, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { maxManifestBytes, parseManifest, type CheckpointCandidate, type Verification } from "../core/checkpoints.js";

const stepDir = /^step-(\d+)$/;

/** Bytes read per chunk while hashing: every chunk is its own await, so hashing never holds the event loop. */
const chunkBytes = 1 << 20;

/**
 * Opens for reading without following a symlink (O_NOFOLLOW) and without blocking on a FIFO or device (O_NONBLOCK).
 * Not exported to `node:fs` on every platform: the flags are 0 where absent, which only weakens the defence, never
 * the checks after open (fstat must say regular file).
 */
const openFlags = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0);

/** Lists `step-NNNNNNNN` folders under the checkpoint root (real folders only: not symlinks, not `.tmp-*` folders). */
export async function listCheckpointDirs(root: string): Promise<Array<{ path: string; step: number }>> {
  let entries;
  try {
    entries = await readdir(root, { withFileTypes: true });
  } catch {
    return [];
  }
  const dirs: Array<{ path: string; step: number }> = [];
  for (const e of entries) {
    const m = stepDir.exec(e.name);
    if (m && e.isDirectory()) dirs.push({ path: path.join(root, e.name), step: Number(m[1]) });
  }
  return dirs;
}

class VerifyError extends Error {}

/**
 * Opens `file` only if it is a regular file reached without any symlink below `dir`: every folder on the way is
 * lstat'ed (a symlinked folder is refused), the file itself is opened with O_NOFOLLOW | O_NONBLOCK, and fstat after
 * open must say "regular file" (a FIFO or device swapped in between the checks is caught here).
 */
async function openRegular(
  dir: string,
  relative: string,
  label: string,
): Promise<{ handle: FileHandle; size: number }> {
  const parts = relative.split("/");
  let current = dir;
  for (const part of parts.slice(0, -1)) {
    current = path.join(current, part);
    const st = await lstat(current).catch(() => null);
    if (!st) throw new VerifyError(`${label} is missing`);
    if (st.isSymbolicLink()) throw new VerifyError(`${label}: folder ${part} is a symlink (only real files verify)`);
    if (!st.isDirectory()) throw new VerifyError(`${label}: ${part} is not a folder`);
  }
  const full = path.join(dir, relative);
  const st = await lstat(full).catch(() => null);
  if (!st) throw new VerifyError(`${label} is missing`);
  if (!st.isFile()) throw new VerifyError(`${label} is ${kindOf(st)}, not a regular file`);
  let handle: FileHandle;
  try {
    handle = await open(full, openFlags);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ELOOP") throw new VerifyError(`${label} is a symlink, not a regular file`);
    if (code === "ENOENT") throw new VerifyError(`${label} is missing`);
    throw new VerifyError(`${label} cannot be opened (${code ?? String(err)})`);
  }
  try {
    const fst = await handle.stat();
    if (!fst.isFile()) throw new VerifyError(`${label} is ${kindOf(fst)}, not a regular file`);
    return { handle, size: fst.size };
  } catch (err) {
    await handle.close();
    throw err;
  }
}

function kindOf(st: { isSymbolicLink(): boolean; isDirectory(): boolean; isFIFO(): boolean; isSocket(): boolean }) {
  if (st.isSymbolicLink()) return "a symlink";
  if (st.isDirectory()) return "a folder";
  if (st.isFIFO()) return "a FIFO";
  if (st.isSocket()) return "a socket";
  return "a device or special file";
}

/** Reads exactly `size` bytes in chunks, never more: a file that grows or shrinks under the hash fails. */
async function* readExactly(handle: FileHandle, size: number, label: string): AsyncGenerator<Buffer> {
  const buf = Buffer.allocUnsafe(Math.min(chunkBytes, Math.max(size, 1)));
  let position = 0;
  while (position < size) {
    const { bytesRead } = await handle.read(buf, 0, Math.min(buf.length, size - position), position);
    if (bytesRead === 0) throw new VerifyError(`${label} shrank while being verified`);
    position += bytesRead;
    yield buf.subarray(0, bytesRead);
  }
}

async function readManifest(dir: string): Promise<unknown> {
  let opened;
  try {
    opened = await openRegular(dir, "MANIFEST.json", "MANIFEST.json");
  } catch (err) {
    if (err instanceof VerifyError && err.message === "MANIFEST.json is missing") {
      throw new VerifyError("no MANIFEST.json (torn write?)");
    }
    throw err;
  }
  const { handle, size } = opened;
  try {
    if (size > maxManifestBytes) {
      throw new VerifyError(`MANIFEST.json has ${size} bytes, more than the ${maxManifestBytes} allowed`);
    }
    const chunks: Buffer[] = [];
    for await (const chunk of readExactly(handle, size, "MANIFEST.json")) chunks.push(Buffer.from(chunk));
    try {
      return JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown;
    } catch {
      throw new VerifyError("MANIFEST.json is not valid JSON");
    }
  } finally {
    await handle.close();
  }
}

async function verifyFile(dir: string, file: { path: string; size: number; sha256: string }): Promise<void> {
  const { handle, size } = await openRegular(dir, file.path, file.path);
  try {
    if (size !== file.size) throw new VerifyError(`${file.path} has ${size} bytes, manifest says ${file.size}`);
    const hash = createHash("sha256");
    for await (const chunk of readExactly(handle, size, file.path)) hash.update(chunk);
    if (hash.digest("hex") !== file.sha256.toLowerCase()) {
      throw new VerifyError(`${file.path} fails its SHA-256 check (corrupted)`);
    }
  } finally {
    await handle.close();
  }
}

/**
 * Verifies a checkpoint folder against its manifest: every file present, a regular file (no symlinks, FIFOs or
 * devices), of the listed size and SHA-256. Never throws and never blocks: any problem is a failed verification.
 */
export async function verifyCheckpoint(dir: string, expectedStep?: number): Promise<Verification> {
  try {
    const st = await lstat(dir).catch(() => null);
    if (!st) return { ok: false, reason: "the checkpoint folder is missing" };
    if (!st.isDirectory()) return { ok: false, reason: `the checkpoint folder is ${kindOf(st)}, not a folder` };
    const manifest = parseManifest(await readManifest(dir));
    if (typeof manifest === "string") return { ok: false, reason: manifest };
    if (expectedStep !== undefined && manifest.step !== expectedStep) {
      return { ok: false, reason: `manifest says step ${manifest.step}, folder says ${expectedStep}` };
    }
    for (const file of manifest.files) await verifyFile(dir, file);
    return { ok: true, manifest };
  } catch (err) {
    if (err instanceof VerifyError) return { ok: false, reason: err.message };
    const e = err as NodeJS.ErrnoException;
    return { ok: false, reason: `verification failed: ${e.code ?? e.message ?? String(err)}` };
  }
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
