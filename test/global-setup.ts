import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";

/**
 * One temporary folder per test run: every `os.tmpdir()` of the run (test files' mkdtemp, servers' homes, rank
 * processes, Python's `tempfile`, Slurm jobs on the testbed: its hosts share this filesystem) lands under it, and the
 * teardown removes it, so a run leaves nothing in /tmp however a test file cleans up after itself.
 *
 * The folder is made under the real tmpdir with a short prefix (unix socket paths are limited to 108 bytes), mode
 * 0700, and `TMPDIR` is set to it here, in vitest's main process, before the test workers start: they, and every
 * process they start, inherit it (test/global-setup.test.ts checks both). Projects inherit this file from the root
 * config, so the setup may run once per project in one process: the first one makes the folder and the others reuse
 * it. A run started inside another run (the variable set) reuses the outer one's folder, which that run removes.
 */

/** Set to the run's folder while a run is in progress. */
export const runTmpVar = "SWITCHYARD_TEST_TMPDIR";

export default function setup(): () => void {
  const existing = process.env[runTmpVar];
  if (existing && isDir(existing)) {
    process.env.TMPDIR = existing;
    return () => {};
  }
  const realTmp = os.tmpdir();
  const dir = mkdtempSync(path.join(realTmp, "syt-"));
  // mkdtemp makes it 0700 already; say so rather than rely on the umask.
  if ((statSync(dir).mode & 0o777) !== 0o700) throw new Error(`test tmpdir ${dir} is not mode 0700`);
  const before = { TMPDIR: process.env.TMPDIR, [runTmpVar]: process.env[runTmpVar] };
  process.env.TMPDIR = dir;
  process.env[runTmpVar] = dir;
  return () => {
    restore("TMPDIR", before.TMPDIR);
    restore(runTmpVar, before[runTmpVar]);
    // A process a test left running may still write into it: a few tries, then say what is left rather than fail
    // a run whose tests passed.
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
    } catch (e) {
      const left = isDir(dir) ? readdirSync(dir).slice(0, 10).join(", ") : "";
      console.warn(`test tmpdir ${dir} not fully removed (${(e as Error).message}); left: ${left}`);
    }
  };
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function restore(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}
