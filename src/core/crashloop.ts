/**
 * A crash loop is a bug, not bad luck: the same normalized error signature at the same step on attempts placed on
 * different nodes cannot be a sick node. Stopping it saves the restart budget and the fleet.
 */

export interface CrashRecord {
  attempt: number;
  cause: string;
  signature: string;
  /** Last step reported before the crash. */
  step: number | null;
  nodes: readonly string[];
}

export interface CrashLoopVerdict {
  deterministic: boolean;
  evidence: CrashRecord[];
}

/**
 * True once `threshold` crashes share signature and step, on at least two different node sets. Crashes with an
 * infrastructure cause (device, network, oom, hang, killed) never count: those do follow the node.
 */
export function detectCrashLoop(history: readonly CrashRecord[], threshold: number): CrashLoopVerdict {
  const latest = history[history.length - 1];
  if (!latest || latest.cause !== "software" || latest.signature === "") return { deterministic: false, evidence: [] };
  const same = history.filter(
    (c) => c.cause === "software" && c.signature === latest.signature && c.step === latest.step,
  );
  const placements = new Set(same.map((c) => [...c.nodes].sort().join(",")));
  const deterministic = same.length >= threshold && placements.size >= 2;
  return { deterministic, evidence: deterministic ? same : [] };
}
