import { statfs } from "node:fs/promises";
import path from "node:path";

/** How long a launch's ENOSPC keeps launches paused when the free-space check itself sees enough room. */
export const enospcPauseMs = 10_000;

/**
 * The disk-full detector: why launches must wait for disk space, or null. A folder (the home's attempt folders, a
 * queued job's checkpoint folder) with less than its minimum free, or a launch that hit ENOSPC in the last 10 s.
 * Reads the filesystems' free space; writes nothing.
 */
export async function judgeDisk(
  folders: readonly string[],
  now: number,
  lastEnospcAt: number | null,
): Promise<string | null> {
  for (const folder of [...new Set(folders)]) {
    const free = await freeBytes(folder);
    if (free !== null && free.available < free.minFree) {
      return `disk full: ${folder} has ${formatBytes(free.available)} free (fix: free space there; launches resume by themselves)`;
    }
  }
  if (lastEnospcAt !== null && now - lastEnospcAt < enospcPauseMs) {
    return "disk full: a launch failed with ENOSPC (fix: free space; launches resume by themselves)";
  }
  return null;
}

/**
 * Free space for unprivileged writers on the filesystem of `folder` (or its nearest existing parent), and the least
 * that counts as not full: 64 MiB, or 2% of a smaller filesystem.
 */
async function freeBytes(folder: string): Promise<{ available: number; minFree: number } | null> {
  for (let dir = folder; ; dir = path.dirname(dir)) {
    try {
      const s = await statfs(dir);
      const size = s.blocks * s.bsize;
      return { available: s.bavail * s.bsize, minFree: Math.min(64 << 20, size * 0.02) };
    } catch {
      if (path.dirname(dir) === dir) return null;
    }
  }
}

function formatBytes(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${Math.round(n / 1024)} KiB`;
}
