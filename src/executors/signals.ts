import { readFileSync } from "node:fs";
import { constants as osConstants } from "node:os";

/**
 * Signals that ask a rank for something (a stack dump on SIGUSR1) rather than end it. Such a signal is delivered only to
 * a process that catches it: the default action of SIGUSR1 terminates, so a script without a handler (no SDK, no
 * switchyard site hook: a rank started with `python -S`, a shell) would be killed by the very dump meant to explain it.
 */
export const requestSignals: ReadonlySet<NodeJS.Signals> = new Set(["SIGUSR1"]);

/**
 * The signals a process catches (the `SigCgt` mask of /proc/PID/status: bit N-1 set for signal N), or null when the
 * process is gone or the mask cannot be read.
 */
export function caughtSignalMask(pid: number): bigint | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return null;
  }
  return parseSigCgt(text);
}

/** The `SigCgt:` mask of a /proc/PID/status text (16 hex digits), or null when absent or malformed. */
export function parseSigCgt(status: string): bigint | null {
  const m = /^SigCgt:\s*([0-9a-fA-F]{1,16})\s*$/m.exec(status);
  return m ? BigInt(`0x${m[1]}`) : null;
}

/** True when the process catches `signal` (has a handler installed for it); false when not, or when it is gone. */
export function catchesSignal(pid: number, signal: NodeJS.Signals): boolean {
  const n = osConstants.signals[signal];
  const mask = caughtSignalMask(pid);
  if (mask === null || n === undefined) return false;
  return ((mask >> BigInt(n - 1)) & 1n) === 1n;
}
