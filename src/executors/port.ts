import type { PoolSpec, Vendor } from "../core/spec.js";

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
  /** The rank process's state letter (R, S, D, T, Z...), or null when it is gone or unknown. */
  processState(rank: RankHandle): string | null;
  /**
   * The nodes of a pool as the executor sees them, when it knows better than the cluster YAML (Slurm: sinfo). A node
   * that is not `usable` (down, drained, not responding) is never placed on.
   */
  inventory?(pool: PoolSpec): Promise<InventoryNode[]>;
  /** Tells the workload manager about a cordon (Slurm: drain with the reason; uncordon resumes the node). */
  setCordon?(pool: PoolSpec, node: string, cordoned: boolean, reason: string): Promise<void>;
  /** The rank process's own pid (not its wrapper's), when this executor can tell it; null while unknown. */
  rankPid?(rank: RankHandle): number | null;
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
