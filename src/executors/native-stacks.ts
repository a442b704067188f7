import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, statSync } from "node:fs";
import path from "node:path";

/**
 * Native (C/C++) stacks of a hung rank: where a Python stack ends in a gloo/NCCL/HCCL wait, gdb shows the threads
 * below it. Used when `detection.nativeStacks` is on and gdb is installed on the rank's host (Debian: `apt-get install
 * gdb`; attaching needs ptrace rights over the rank: the same user, and kernel.yama.ptrace_scope 0 unless root). gdb
 * attaches, prints every thread's backtrace and detaches: the rank goes on. With PyTorch loaded it takes about 10 s
 * on 2 cores, so give `detection.stackDumpSeconds` that long.
 */

/** gdb on PATH (an absolute path), or null. */
export function findGdb(env: NodeJS.ProcessEnv = process.env): string | null {
  for (const dir of (env.PATH ?? "/usr/bin:/bin").split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, "gdb");
    try {
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/** gdb's arguments: batch mode, no init files, every thread's backtrace, then detach (the process goes on). */
export function gdbArgv(pid: number): string[] {
  return ["--batch", "--nx", "-p", String(pid), "-ex", "set pagination off", "-ex", "thread apply all bt"];
}

/**
 * Starts gdb on `pid` in the background, its output to `outFile` (0600), killed after `timeoutMs`. Returns false when
 * there is no gdb. Never waits: the caller reads the file when the dump window is over.
 */
export function startNativeStacks(pid: number, outFile: string, timeoutMs: number, gdb = findGdb()): boolean {
  if (!gdb) return false;
  const out = openSync(outFile, "w", 0o600);
  try {
    const child = spawn(gdb, gdbArgv(pid), { stdio: ["ignore", out, out], detached: true });
    child.on("error", () => undefined);
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, "SIGKILL"); // a killed tracer detaches: the rank goes on
      } catch {
        // ended already
      }
    }, timeoutMs);
    timer.unref();
    child.once("exit", () => clearTimeout(timer));
    child.unref();
  } finally {
    closeSync(out);
  }
  return true;
}

/** Where a rank's native stacks go: `rank-N.native.txt` beside its log. */
export function nativeStacksPath(logPath: string, rank: number): string {
  return path.join(path.dirname(logPath), `rank-${rank}.native.txt`);
}

/**
 * The backtraces in gdb's output (thread headers and `#N` frames, at most `maxLines`), with a last line saying when gdb
 * had not finished (killed at the end of the dump window). Empty when there is no output.
 */
export function nativeStacksExcerpt(file: string, maxLines = 80): string[] {
  if (!existsSync(file)) return [];
  let text: string;
  try {
    text = readFileSync(file, "utf8").slice(0, 256 * 1024);
  } catch {
    return [];
  }
  const lines = text.split("\n").filter((l) => /^(Thread \d+ |#\d+ )/.test(l));
  const out = lines.slice(0, maxLines);
  if (lines.length > maxLines) out.push(`... ${lines.length - maxLines} more line(s) in ${file}`);
  const finished = /\[Inferior \d+ \(process \d+\) detached\]/.test(text);
  if (!finished && out.length > 0) out.push(`(gdb had not finished at the end of the dump window: see ${file})`);
  if (!finished && out.length === 0 && text.trim() !== "") {
    out.push(`(no backtrace: ${text.trim().split("\n").slice(-1)[0]!.slice(0, 200)})`);
  }
  return out;
}
