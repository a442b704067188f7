/**
 * Restart or ride it out: a degraded run pays its slowdown on every remaining step; evicting the culprit pays a restart
 * (stop, relaunch, the first step of the new attempt), the steps recomputed since the last checkpoint, and whatever
 * the next attempt runs slower (fewer hosts after a shrink). Pure arithmetic on measured figures, returned with the
 * sentence the event carries, so anyone can check the decision.
 */

export interface EvictInput {
  /** The measured slowdown: recent step time / baseline step time (>= 1). */
  factor: number;
  /** Steps left to the job's target; null when the job has none (runs until it stops: the slowdown never ends). */
  remainingSteps: number | null;
  /** The attempt's baseline step time (s). */
  baselineStepS: number;
  /** Measured time from stopping the gang to the next attempt's first step (s): the ledger's restart figures. */
  restartS: number;
  /** Time the next attempt spends before it is known good, beyond the restart (s): a pre-flight probe, a check. */
  detectionS?: number;
  /** Steps done since the newest verified checkpoint: recomputed after the restart. */
  stepsSinceCheckpoint: number;
  /** Step time after the eviction, relative to the baseline (1: a spare takes the host; 4/3: a shrink from 4 to 3). */
  paceAfterEviction?: number;
}

export interface EvictDecision {
  evict: boolean;
  /** Time lost by going on slowly to the end (s); Infinity without a step target. */
  continueCostS: number;
  /** Time lost by evicting (s). */
  evictCostS: number;
  /** The arithmetic, e.g. "continuing costs 12.0 min (40% slow for 30.0 min left); evicting costs 2.1 min: evict". */
  sentence: string;
}

export function decideEviction(input: EvictInput): EvictDecision {
  const factor = Math.max(1, input.factor);
  const step = Math.max(0, input.baselineStepS);
  const after = Math.max(1, input.paceAfterEviction ?? 1);
  const slowPct = `${Math.round((factor - 1) * 100)}% slow`;
  const recompute = Math.max(0, input.stepsSinceCheckpoint) * step;
  const restart = Math.max(0, input.restartS) + Math.max(0, input.detectionS ?? 0);
  const parts = [
    `restart ${fmt(restart)}`,
    `${Math.max(0, input.stepsSinceCheckpoint)} steps to recompute ${fmt(recompute)}`,
  ];

  if (input.remainingSteps === null) {
    const evictCostS = restart + recompute;
    return {
      evict: factor > 1,
      continueCostS: factor > 1 ? Number.POSITIVE_INFINITY : 0,
      evictCostS,
      sentence:
        `continuing costs ${slowPct} of every step from now on (the job has no step target); ` +
        `evicting costs ${fmt(evictCostS)} (${parts.join(", ")}): ${factor > 1 ? "evict" : "continue"}`,
    };
  }
  const left = Math.max(0, input.remainingSteps) * step;
  const continueCostS = left * (factor - 1);
  const slowerAfter = left * (after - 1);
  if (slowerAfter > 0) parts.push(`${Math.round((after - 1) * 100)}% slower after it ${fmt(slowerAfter)}`);
  const evictCostS = restart + recompute + slowerAfter;
  const evict = evictCostS < continueCostS;
  return {
    evict,
    continueCostS,
    evictCostS,
    sentence:
      `continuing costs ${fmt(continueCostS)} (${slowPct} for ${fmt(left)} left); ` +
      `evicting costs ${fmt(evictCostS)} (${parts.join(", ")}): ${evict ? "evict" : "continue"}`,
  };
}

function fmt(s: number): string {
  if (!Number.isFinite(s)) return "forever";
  if (s >= 3600) return `${(s / 3600).toFixed(1)} h`;
  if (s >= 60) return `${(s / 60).toFixed(1)} min`;
  return `${s.toFixed(1)} s`;
}
