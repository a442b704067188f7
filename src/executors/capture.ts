import { spawn } from "node:child_process";

/**
 * Runs one short command (an argument vector, no shell) in its own process group and captures its output, bounded:
 * what `runOnNodes` does on each node. At the timeout the group gets SIGTERM, then SIGKILL after `killGraceMs`.
 */

export interface CaptureOptions {
  env: NodeJS.ProcessEnv;
  timeoutMs: number;
  maxOutputBytes: number;
  cwd?: string;
  killGraceMs?: number;
  /** Called at the timeout before the group is signalled (e.g. to cancel what the command started elsewhere). */
  onTimeout?: () => void;
}

export interface CaptureResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** Set when the command could not be started at all. */
  spawnError?: string;
}

export function capture(argv: readonly string[], opts: CaptureOptions): Promise<CaptureResult> {
  return new Promise((resolve) => {
    const [cmd, ...args] = argv;
    const child = spawn(cmd!, args, {
      env: opts.env,
      cwd: opts.cwd,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const out = bounded(opts.maxOutputBytes);
    const err = bounded(opts.maxOutputBytes);
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const signalGroup = (sig: NodeJS.Signals): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, sig);
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      opts.onTimeout?.();
      signalGroup("SIGTERM");
      killTimer = setTimeout(() => signalGroup("SIGKILL"), opts.killGraceMs ?? 3000);
    }, opts.timeoutMs);
    let spawnError: string | undefined;
    child.once("error", (e) => {
      spawnError = e.message;
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      if (killTimer) clearTimeout(killTimer);
      // Whatever the command left in its group (a child that outlived it) goes with it.
      signalGroup("SIGKILL");
      resolve({
        code: spawnError ? null : code,
        signal,
        stdout: out.text(),
        stderr: spawnError ? `cannot start ${cmd}: ${spawnError}` : err.text(),
        timedOut,
        ...(spawnError ? { spawnError } : {}),
      });
    });
  });
}

function bounded(max: number): { push(b: Buffer): void; text(): string } {
  const parts: Buffer[] = [];
  let size = 0;
  let cut = false;
  return {
    push(b) {
      if (size >= max) {
        cut = true;
        return;
      }
      const take = b.subarray(0, max - size);
      if (take.length < b.length) cut = true;
      parts.push(take);
      size += take.length;
    },
    text() {
      return Buffer.concat(parts).toString("utf8") + (cut ? `\n[output cut at ${max} bytes]\n` : "");
    },
  };
}
