import type { SlowdownVerdict } from "../core/slowdown.js";
import type { RankRecord } from "../store/port.js";
import type { HangDump } from "./context.js";

/** What an incident is made of, whichever detector found it; incidents.ts turns it into a record and a decision. */
export interface IncidentFacts {
  cause: string;
  culpritRank: number | null;
  culpritNode: string | null;
  faultAt: number;
  detectedAt: number;
  summary: string;
  hard: boolean;
  signature: string;
  /** False when no restart can help (the script cannot start, a rank table is wrong): the job stops. */
  retryable?: boolean;
  lastStep: number | null;
  evidence: Record<string, unknown>;
  /** Runs once the gang is stopped: what could only be known then (victims whose last lines came late). */
  afterStop?: () => Promise<{ summary?: string; evidence: Record<string, unknown> }>;
}

/**
 * What one look at a job's attempt found (TorchElastic's RunResult): the loop in supervisor.ts switches on `kind` and
 * acts through the core policies. Detectors and the watch only say; they never act.
 */
export type Verdict =
  /** Running, nothing wrong (or nothing to judge yet); `pace`: the slowdown detector's look, when it looked. */
  | { kind: "healthy"; pace?: SlowdownVerdict }
  /** Running, but slowly: the recent pace is `factor` times the attempt's baseline (detectors/slowdown.ts). */
  | { kind: "slow"; pace: SlowdownVerdict }
  /** Hung ranks are writing their stacks: nothing is judged until the dump deadline. */
  | { kind: "waiting-for-stacks" }
  /** Every rank exited 0. */
  | { kind: "succeeded" }
  /** The gang is hung: ask the ranks for their stacks (send `signals`), record the incident at `dump.deadline`. */
  | { kind: "hung"; dump: HangDump; signals: Array<{ rank: RankRecord; signal: NodeJS.Signals }> }
  /** An incident: a crash, a NaN, a hang after its stack dump, a launch that failed. */
  | { kind: "failed"; facts: IncidentFacts }
  /** A launch hit ENOSPC: not the job's fault nor the node's; launches pause until there is space. */
  | { kind: "disk-full"; why: string; path: string | null }
  /** The control plane died while launching this attempt: the gang may be incomplete. */
  | { kind: "interrupted-launch" };
