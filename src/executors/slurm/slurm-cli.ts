import { execFile } from "node:child_process";

/**
 * Slurm's command-line tools, called with argument vectors (never a shell string) and a timeout, and their output
 * parsed. Everything the Slurm executor knows about the cluster comes through here.
 */

export interface SlurmEnv {
  /** Extra environment for every Slurm command (e.g. SLURM_CONF of a test cluster). */
  env?: Record<string, string>;
  timeoutMs?: number;
}

export class SlurmCommandError extends Error {
  constructor(
    readonly command: string,
    readonly code: number | string | null,
    readonly stderr: string,
  ) {
    super(`${command} failed (${code ?? "?"}): ${stderr.trim().split("\n").slice(-3).join(" / ") || "no output"}`);
    this.name = "SlurmCommandError";
  }
}

export function slurm(cmd: string, args: readonly string[], opts: SlurmEnv = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      [...args],
      { env: { ...process.env, ...opts.env }, timeout: opts.timeoutMs ?? 30_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          const code = (err as NodeJS.ErrnoException & { code?: number | string }).code ?? null;
          reject(new SlurmCommandError(`${cmd} ${args.join(" ")}`, code, String(stderr || err.message)));
        } else resolve(String(stdout));
      },
    );
  });
}

export interface SlurmNode {
  name: string;
  /** Slurm's state words, lower case, e.g. ["idle"], ["mixed"], ["drained"], ["down", "not_responding"]. */
  state: string[];
  partitions: string[];
  features: string[];
  cpus: number;
  address: string;
  reason: string | null;
}

/** A node no job should be placed on: down, drained or draining, failing, not responding, powered off... */
export function nodeUnusable(n: SlurmNode): boolean {
  return n.state.some((s) =>
    ["down", "drain", "drained", "draining", "fail", "failing", "not_responding", "powered_down", "future"].includes(s),
  );
}

const sep = "\u001f";

/** `sinfo -N` once per node and partition, merged per node. */
export function parseSinfo(out: string): SlurmNode[] {
  const byName = new Map<string, SlurmNode>();
  for (const line of out.split("\n")) {
    if (line.trim() === "") continue;
    const [name = "", partition = "", state = "", features = "", cpus = "0", address = "", reason = ""] =
      line.split(sep);
    if (name === "") continue;
    const existing = byName.get(name);
    const part = partition.replace(/\*$/, "");
    if (existing) {
      if (part && !existing.partitions.includes(part)) existing.partitions.push(part);
      continue;
    }
    byName.set(name, {
      name,
      // %T prints e.g. "idle", "drained", "mixed", "down*" (* = not responding), "idle+drain" in newer versions.
      state: parseState(state),
      partitions: part ? [part] : [],
      features: features === "(null)" || features === "" ? [] : features.split(","),
      cpus: Number(cpus) || 0,
      address,
      reason: reason === "none" || reason === "" ? null : reason,
    });
  }
  return [...byName.values()];
}

export function parseState(raw: string): string[] {
  const words = raw
    .toLowerCase()
    .replace(/\*$/, "+not_responding")
    .split(/[+]/)
    .map((w) => w.replace(/[~#!%$@^-]+$/, ""))
    .filter((w) => w !== "");
  return [...new Set(words)];
}

export async function listNodes(opts: SlurmEnv & { partition?: string } = {}): Promise<SlurmNode[]> {
  const args = ["-h", "-N", "-o", ["%N", "%P", "%T", "%f", "%c", "%o", "%E"].join(sep)];
  if (opts.partition) args.push("-p", opts.partition);
  return parseSinfo(await slurm("sinfo", args, opts));
}

export async function drainNode(node: string, reason: string, opts: SlurmEnv = {}): Promise<void> {
  // Slurm keeps the reason as given; keep it one line and bounded.
  const clean = reason.replace(/[\r\n]+/g, " ").slice(0, 200);
  await slurm("scontrol", ["update", `NodeName=${node}`, "State=DRAIN", `Reason=${clean}`], opts);
}

export async function resumeNode(node: string, opts: SlurmEnv = {}): Promise<void> {
  await slurm("scontrol", ["update", `NodeName=${node}`, "State=RESUME"], opts);
}

export type SlurmJobState = "PENDING" | "RUNNING" | "COMPLETING" | "GONE" | string;

/** The state of a Slurm job (allocation); GONE when squeue no longer knows it. */
export async function jobState(jobId: string, opts: SlurmEnv = {}): Promise<{ state: SlurmJobState; nodes: string }> {
  let out: string;
  try {
    out = await slurm("squeue", ["-h", "-j", jobId, "-o", `%T${sep}%N`], opts);
  } catch (err) {
    // squeue exits non-zero for a job id it has forgotten.
    if (err instanceof SlurmCommandError && /Invalid job id/i.test(err.stderr)) return { state: "GONE", nodes: "" };
    throw err;
  }
  const line = out.split("\n").find((l) => l.trim() !== "");
  if (!line) return { state: "GONE", nodes: "" };
  const [state = "GONE", nodes = ""] = line.split(sep);
  return { state, nodes };
}

/** Expands Slurm host lists: "a[1-3,5],n1" -> a1 a2 a3 a5 n1. */
export async function expandHostlist(list: string, opts: SlurmEnv = {}): Promise<string[]> {
  if (list.trim() === "") return [];
  const out = await slurm("scontrol", ["show", "hostnames", list], opts);
  return out.split("\n").filter((l) => l.trim() !== "");
}
