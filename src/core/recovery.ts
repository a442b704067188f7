/** What to do after an attempt failed: restart (where), or stop. Pure: the supervisor carries it out. */

/**
 * Causes that point at the node or its links: only these strike the culprit's node (and count against its pool). A
 * bug, a NaN, running out of memory or an unknown end (an exit record lost on a full disk) say nothing about it.
 */
export const infrastructureCauses: ReadonlySet<string> = new Set([
  "device",
  "network",
  "hang",
  "killed",
  "host",
  "straggler",
]);

export function isInfrastructureCause(cause: string): boolean {
  return infrastructureCauses.has(cause);
}

/** How long a strike counts against a node unless the cluster config says otherwise: 24 hours. */
export const defaultStrikeWindowSeconds = 86_400;

/** The earliest strike time that still counts at `now`: older strikes have decayed. */
export function strikesSince(now: number, windowSeconds = defaultStrikeWindowSeconds): number {
  return now - windowSeconds * 1000;
}

export interface RecoveryPolicy {
  maxRestarts: number;
  /** Count only restarts within this many seconds against maxRestarts (a budget per window); null: the whole job. */
  restartWindowSeconds?: number | null;
  backoffSeconds: number;
  maxBackoffSeconds: number;
  strikesBeforeCordon: number;
}

export interface FailureFacts {
  /** Restarts already spent by the job (within the window, when the policy has one). */
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
      reason:
        `gave up after ${facts.restarts} restart(s)` +
        (policy.restartWindowSeconds ? ` within ${policy.restartWindowSeconds}s` : "") +
        `: recovery.maxRestarts is ${policy.maxRestarts}`,
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

export interface PlacementRequest {
  /** Pools in the job's order of preference; empty means cluster order. */
  preference: readonly string[];
  poolsInClusterOrder: readonly string[];
  nodes: readonly NodeView[];
  nodesNeeded: number;
  /** Shrink down to this many nodes rather than wait or leave the pool (default: no shrinking). */
  minNodes?: number;
  /** Nodes to use only when nothing else fits (the culprit of the last failure, not yet cordoned). */
  avoidNodes?: readonly string[];
  /** Pools that keep failing this job: tried only after every other pool. */
  avoidPools?: readonly string[];
}

export type Placement = { pool: string; nodes: string[]; shrunk: boolean } | { pool: null; reason: string };

/**
 * Chooses the pool and nodes for the next attempt: the first pool in preference order (pools that keep failing go
 * last) with enough healthy nodes at full size; failing that, the first that fits at a shrunk size the job allows.
 */
export function placeAttempt(req: PlacementRequest): Placement {
  const base = req.preference.length > 0 ? req.preference : req.poolsInClusterOrder;
  const avoidPools = req.avoidPools ?? [];
  const order = [...base.filter((p) => !avoidPools.includes(p)), ...base.filter((p) => avoidPools.includes(p))];
  const avoidNodes = req.avoidNodes ?? [];
  const healthyIn = (pool: string): string[] => {
    const healthy = req.nodes.filter((n) => n.pool === pool && !n.cordoned).map((n) => n.name);
    return [...healthy.filter((n) => !avoidNodes.includes(n)), ...healthy.filter((n) => avoidNodes.includes(n))];
  };
  for (const pool of order) {
    const healthy = healthyIn(pool);
    if (healthy.length >= req.nodesNeeded) return { pool, nodes: healthy.slice(0, req.nodesNeeded), shrunk: false };
  }
  const minNodes = Math.min(req.minNodes ?? req.nodesNeeded, req.nodesNeeded);
  for (const pool of order) {
    const healthy = healthyIn(pool);
    if (healthy.length >= minNodes && healthy.length > 0) return { pool, nodes: healthy, shrunk: true };
  }
  const cordonedIn = (pool: string): string[] =>
    req.nodes.filter((n) => n.pool === pool && n.cordoned).map((n) => n.name);
  const reasons = order.map((p) => {
    const cordoned = cordonedIn(p);
    const shown = cordoned.length > 4 ? [...cordoned.slice(0, 4), `${cordoned.length - 4} more`] : cordoned;
    return (
      `${p}: ${healthyIn(p).length} healthy node(s), ${minNodes < req.nodesNeeded ? `${minNodes}-` : ""}${req.nodesNeeded} needed` +
      (cordoned.length > 0 ? `, cordoned: ${shown.join(", ")}` : "")
    );
  });
  const firstCordoned = order.map(cordonedIn).find((c) => c.length > 0)?.[0];
  const fix = firstCordoned
    ? ` (fix: once a cordoned node is repaired, \`switchyard nodes uncordon ${firstCordoned}\`; the job then starts by itself)`
    : "";
  return { pool: null, reason: `no pool can host the job (${reasons.join("; ")})${fix}` };
}

export interface PoolFailurePolicy {
  /** Infrastructure incidents on one pool within the window that make the job leave it. */
  count: number;
  windowSeconds: number;
}

/** True when the job has had `count` infrastructure incidents on `pool` within the window ending now. */
export function poolKeepsFailing(
  incidents: ReadonlyArray<{ pool: string; at: number; infrastructure: boolean }>,
  pool: string,
  now: number,
  policy: PoolFailurePolicy,
): boolean {
  const since = now - policy.windowSeconds * 1000;
  return incidents.filter((i) => i.infrastructure && i.pool === pool && i.at >= since).length >= policy.count;
}
