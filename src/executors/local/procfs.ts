import { readdirSync, readFileSync } from "node:fs";

/** Process identity from /proc: a pid alone can be reused, a pid plus its start time cannot. */

export interface ProcStat {
  state: string;
  ppid: number;
  pgid: number;
  startTicks: number;
}

export function readProcStat(pid: number): ProcStat | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may contain spaces and parentheses: fields are counted after the last ')'.
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return {
      state: fields[0] ?? "?",
      ppid: Number(fields[1]),
      pgid: Number(fields[2]),
      startTicks: Number(fields[19]),
    };
  } catch {
    return null;
  }
}

/** True when the process with this pid is the one that was started at startTicks and has not exited (zombies count as gone). */
export function isSameProcessAlive(pid: number, startTicks: number | null): boolean {
  const stat = readProcStat(pid);
  if (!stat || stat.state === "Z" || stat.state === "X") return false;
  return startTicks === null || stat.startTicks === startTicks;
}

export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter((s) => s !== "")
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * True while any process of the group is alive. `kill(-pgid, 0)` also succeeds for a group of zombies waiting for a
 * slow init to reap them, so members are checked in /proc: a group of zombies is dead.
 */
export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch {
    return false;
  }
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return true;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readProcStat(Number(entry));
    if (stat && stat.pgid === pgid && stat.state !== "Z" && stat.state !== "X") return true;
  }
  return false;
}
