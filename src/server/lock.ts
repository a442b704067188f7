import { spawnSync } from "node:child_process";
import { closeSync, constants, fchmodSync, ftruncateSync, openSync, readFileSync, writeSync } from "node:fs";
import path from "node:path";

/**
 * One server per SWITCHYARD_HOME, enforced by the kernel: an exclusive flock(2) on `<home>/server.lock`, held for the
 * server's life. Node has no flock binding, so the lock is taken by util-linux's `flock(1)` on a file descriptor this
 * process opened and lends to it as fd 3: flock locks belong to the open file description, which the child shares with
 * us, so the lock stays held after `flock` exits, for as long as this process keeps the descriptor open. The kernel
 * drops it when the last descriptor closes: on close(), on exit, and on SIGKILL alike; there is never a stale lock to
 * clean up. Node opens files with O_CLOEXEC and spawns children with only their stdio, so training ranks started by
 * the server never inherit the descriptor (they outlive the server; the lock must not).
 */
export interface HomeLock {
  readonly file: string;
  release(): void;
}

/** Another live process holds the home's lock. */
export class HomeLockedError extends Error {
  constructor(
    readonly file: string,
    readonly holderPid: number | null,
  ) {
    super(
      `another switchyard server${holderPid !== null ? ` (pid ${holderPid})` : ""} already serves this home (lock ${file})`,
    );
    this.name = "HomeLockedError";
  }
}

const busyExit = 75;

export function lockFile(home: string): string {
  return path.join(home, "server.lock");
}

/** Takes the home's lock without waiting, or throws HomeLockedError naming the holder. */
export function acquireHomeLock(home: string): HomeLock {
  const file = lockFile(home);
  const fd = openSync(file, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  let held = false;
  try {
    fchmodSync(fd, 0o600);
    const res = spawnSync("flock", ["--nonblock", "--exclusive", "--conflict-exit-code", String(busyExit), "3"], {
      stdio: ["ignore", "ignore", "pipe", fd],
      timeout: 10_000,
    });
    if (res.error) {
      throw new Error(
        `cannot take the server lock ${file}: flock(1) failed to run: ${res.error.message} ` +
          "(fix: install util-linux, which provides flock)",
      );
    }
    if (res.status === busyExit) throw new HomeLockedError(file, lockHolder(home));
    if (res.status !== 0) {
      throw new Error(
        `cannot take the server lock ${file}: flock exited ${res.status}: ${res.stderr.toString().trim()}`,
      );
    }
    held = true;
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`, 0);
  } finally {
    if (!held) closeSync(fd);
  }
  let open = true;
  return {
    file,
    release() {
      if (!open) return;
      open = false;
      closeSync(fd);
    },
  };
}

/** The pid the current (or last) lock holder wrote into the lock file; null when none or unreadable. */
export function lockHolder(home: string): number | null {
  try {
    const pid = Number(readFileSync(lockFile(home), "utf8").trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}
