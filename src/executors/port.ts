import path from "node:path";
import type { PoolSpec, Vendor } from "../core/spec.js";
import { packageRoot } from "../paths.js";

/** The Executor port: executors do what they are told and report what they see; the supervisor decides. */

export interface LaunchRequest {
  jobId: string;
  jobName: string;
  attempt: number;
  /** Per-attempt folder for logs, reports and exit records. */
  dir: string;
  pool: PoolSpec;
  nodes: string[];
  /** Device indices per node (same order as `nodes`), one per local rank; absent: 0..procsPerNode-1. */
  devices?: number[][];
  procsPerNode: number;
  command: string[];
  env: Record<string, string>;
  workdir: string;
  masterPort: number;
  checkpointDir: string;
  resumeFrom: string | null;
}

export interface LaunchedRank {
  rank: number;
  node: string;
  /** The process on this host that leads the rank's group, or null when the rank runs on a host the server cannot see. */
  pid: number | null;
  startTicks: number | null;
  logPath: string;
  reportPath: string;
}

export interface RankHandle {
  rank: number;
  pid: number | null;
  startTicks: number | null;
  logPath: string;
}

export type RankStatus =
  | { rank: number; state: "running" }
  | { rank: number; state: "exited"; code: number | null; signal: string | null; at: number }
  /** Gone without an exit record (e.g. killed together with its wrapper): treated as killed. */
  | {
      rank: number;
      state: "vanished";
      at: number;
      /** Set when the executor knows the whole host is gone (its agents fell silent): the host is the culprit. */
      hostLost?: string;
    }
  /**
   * Gone, and its wrapper tried to write the exit record but could not (a full disk): how it ended is unknown, which
   * says nothing against the node.
   */
  | { rank: number; state: "lost"; at: number; why: string };

export interface Executor {
  readonly kind: string;
  launch(req: LaunchRequest): Promise<LaunchedRank[]>;
  poll(attemptDir: string, ranks: readonly RankHandle[]): Promise<RankStatus[]>;
  /** SIGTERM the whole gang, wait up to graceMs, then SIGKILL what is left. */
  stop(ranks: readonly RankHandle[], graceMs: number): Promise<void>;
  /** Sends a signal to the rank's own process (not its wrapper): chaos and stack dumps. */
  signalRank(rank: RankHandle, signal: NodeJS.Signals): boolean;
  /** The job is over: give back what it holds beyond its attempts (a Slurm allocation). `jobDir` holds its attempts. */
  release?(jobDir: string): Promise<void>;
  /**
   * Starts writing the native stacks of the rank's process (every thread, gdb) to `outFile` on the rank's host, in the
   * background, given up after `timeoutMs`. False when it cannot (no gdb there, the rank gone).
   */
  nativeStacks?(rank: RankHandle, outFile: string, timeoutMs: number): boolean;
  /** The rank process's state letter (R, S, D, T, Z...), or null when it is gone or unknown. */
  processState(rank: RankHandle): string | null;
  /**
   * The nodes of a pool as the executor sees them, when it knows better than the cluster YAML (Slurm: sinfo). A node
   * that is not `usable` (down, drained, not responding) is never placed on.
   */
  inventory?(pool: PoolSpec): Promise<InventoryNode[]>;
  /**
   * Where a node of the pool is reached over the network from the server's host (Slurm: its NodeAddr), or null when
   * the executor cannot tell. Absent on local pools, whose nodes are this machine. A replica's URL uses it.
   */
  nodeAddress?(pool: PoolSpec, node: string): Promise<string | null>;
  /** Tells the workload manager about a cordon (Slurm: drain with the reason; uncordon resumes the node). */
  setCordon?(pool: PoolSpec, node: string, cordoned: boolean, reason: string): Promise<void>;
  /** The rank process's own pid (not its wrapper's), when this executor can tell it; null while unknown. */
  rankPid?(rank: RankHandle): number | null;
  /**
   * Runs a short command once on each of the given nodes of a pool, all at the same time, and collects each node's
   * output (a network probe, a health check). The command is an argument vector, never a shell string. Every node
   * sees `SWITCHYARD_NODE` (its name), `SWITCHYARD_NODES` (all of them, in the order given) and
   * `SWITCHYARD_NODE_ADDRS` (`name=address,...`: where each node is reached from the others). Resolves when every
   * node's command has ended or `timeoutMs` has passed (those still running are killed: code null, timedOut).
   */
  runOnNodes?(
    pool: PoolSpec,
    nodes: readonly string[],
    argv: readonly string[],
    opts: RunOnNodesOptions,
  ): Promise<NodeRunResult[]>;
}

export interface RunOnNodesOptions {
  timeoutMs: number;
  env?: Record<string, string>;
  /** The job's folder: on Slurm the command runs inside the job's allocation when it holds every node. */
  jobDir?: string;
  /** Each node's stdout and stderr are cut at this many bytes (default 1 MiB). */
  maxOutputBytes?: number;
}

export interface NodeRunResult {
  node: string;
  /** Exit code; null when it was killed by a signal, timed out, or never started on the node. */
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut?: boolean;
}

/** Limits on what `runOnNodes` accepts: a probe is short and small. */
export const runOnNodesLimits = { maxTimeoutMs: 10 * 60_000, maxNodes: 4096, maxOutputBytes: 16 << 20 } as const;

/** Checks `runOnNodes` arguments; throws an error naming the bad one and the fix. */
export function checkRunOnNodes(nodes: readonly string[], argv: readonly string[], opts: RunOnNodesOptions): void {
  if (nodes.length === 0) throw new Error("runOnNodes: no nodes given (fix: pass the attempt's nodes)");
  if (nodes.length > runOnNodesLimits.maxNodes)
    throw new Error(`runOnNodes: ${nodes.length} nodes, at most ${runOnNodesLimits.maxNodes}`);
  if (new Set(nodes).size !== nodes.length) throw new Error("runOnNodes: a node is named twice (fix: pass each once)");
  for (const n of nodes) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(n))
      throw new Error(`runOnNodes: ${JSON.stringify(n)} is not a node name`);
  }
  if (argv.length === 0 || argv[0] === "") throw new Error("runOnNodes: empty command (fix: pass an argument vector)");
  if (argv.some((a) => a.includes("\0"))) throw new Error("runOnNodes: an argument holds a NUL byte");
  if (!(opts.timeoutMs > 0 && opts.timeoutMs <= runOnNodesLimits.maxTimeoutMs)) {
    throw new Error(`runOnNodes: timeoutMs ${opts.timeoutMs} is not in (0, ${runOnNodesLimits.maxTimeoutMs}]`);
  }
}

/** The network probe (agent/netprobe.py, stdlib Python), to run with `runOnNodes` on the hosts it measures. */
export const netprobePath = path.join(packageRoot, "agent", "netprobe.py");

export interface NetworkProbeOptions {
  /** The Python on the hosts (Slurm: the pool's agentPython; local: python3). */
  python: string;
  /** full: sees a link that collapses under load (2 s per pair); preflight: cut short (0.25 s per pair). */
  mode: "full" | "preflight";
  /** Node i listens on portBase + i. */
  portBase: number;
  /** The probe gives up after this long (s); runOnNodes' timeout should leave it a few seconds more. */
  timeoutS: number;
  bytesPerPair?: number;
  secondsPerPair?: number;
  pattern?: "pairs" | "ring";
}

/** The probe's argument vector: every node reads the node list and addresses from SWITCHYARD_NODE_ADDRS. */
export function networkProbeArgv(o: NetworkProbeOptions): string[] {
  return [
    o.python,
    netprobePath,
    "--port-base",
    String(o.portBase),
    "--mode",
    o.mode,
    "--timeout",
    String(o.timeoutS),
    ...(o.bytesPerPair ? ["--bytes", String(o.bytesPerPair)] : []),
    ...(o.secondsPerPair ? ["--seconds", String(o.secondsPerPair)] : []),
    ...(o.pattern ? ["--pattern", o.pattern] : []),
  ];
}

export interface InventoryNode {
  name: string;
  devices: number;
  usable: boolean;
  /** Why it is not usable, in the workload manager's words (e.g. "drained: switchyard: incident #3"). */
  reason: string | null;
}

export function visibilityEnv(vendor: Vendor, devices: readonly number[]): Record<string, string> {
  const list = devices.join(",");
  switch (vendor) {
    case "nvidia":
      return { CUDA_VISIBLE_DEVICES: list };
    case "ascend":
      return { ASCEND_RT_VISIBLE_DEVICES: list };
    case "cpu":
      return {};
  }
}
