/** What to do after an attempt failed: restart (where), or stop. Pure: the supervisor carries it out. */

export interface RecoveryPolicy {
  maxRestarts: number;
  backoffSeconds: number;
  maxBackoffSeconds: number;
  strikesBeforeCordon: number;
}

export interface FailureFacts {
  /** Restarts already spent by the job. */
  restarts: number;
  /** The culprit node's strikes before this failure. */
  culpritNodeStrikes: number;
  /** Hard evidence (a critical device error) cordons at once. */
  hardDeviceEvidence: boolean;
}

export type RecoveryDecision =
  | { action: "restart"; backoffMs: number; cordonCulpritNode: boolean }
  | { action: "fail"; reason: string; cordonCulpritNode: boolean };

export function decideRecovery(policy: RecoveryPolicy, facts: FailureFacts): RecoveryDecision {
  const cordonCulpritNode = facts.hardDeviceEvidence || facts.culpritNodeStrikes + 1 >= policy.strikesBeforeCordon;
  if (facts.restarts >= policy.maxRestarts) {
    return {
      action: "fail",
      reason: `gave up after ${facts.restarts} restart(s): recovery.maxRestarts is ${policy.maxRestarts}`,
      cordonCulpritNode,
    };
  }
  return { action: "restart", backoffMs: backoffMs(policy, facts.restarts), cordonCulpritNode };
}

/** Exponential backoff: backoffSeconds * 2^restarts, capped. */
export function backoffMs(policy: RecoveryPolicy, restarts: number): number {
  const seconds = Math.min(policy.maxBackoffSeconds, policy.backoffSeconds * 2 ** restarts);
  return Math.round(seconds * 1000);
}

export interface NodeView {
  name: string;
  pool: string;
  cordoned: boolean;
}

/** Chooses the pool and nodes for the next attempt: the first pool in preference order with enough healthy nodes. */
export function placeAttempt(
  preference: readonly string[],
  poolsInClusterOrder: readonly string[],
  nodes: readonly NodeView[],
  nodesNeeded: number,
  /** Nodes to use only when nothing else fits (the culprit of the last failure, not yet cordoned). */
  avoid: readonly string[] = [],
): { pool: string; nodes: string[] } | { pool: null; reason: string } {
  const order = preference.length > 0 ? preference : poolsInClusterOrder;
  const reasons: string[] = [];
  for (const pool of order) {
    const healthy = nodes.filter((n) => n.pool === pool && !n.cordoned).map((n) => n.name);
    const preferred = [...healthy.filter((n) => !avoid.includes(n)), ...healthy.filter((n) => avoid.includes(n))];
    if (healthy.length >= nodesNeeded) return { pool, nodes: preferred.slice(0, nodesNeeded) };
    reasons.push(`${pool}: ${healthy.length} healthy node(s), ${nodesNeeded} needed`);
  }
  return { pool: null, reason: `no pool can host the job (${reasons.join("; ")})` };
}
