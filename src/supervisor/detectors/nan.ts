import type { RankRecord } from "../../store/port.js";
import type { IncidentFacts } from "../verdict.js";

/**
 * The NaN detector: a rank reported a non-finite loss (and the job treats that as a failure): an incident that rolls
 * the job back to its last verified checkpoint. Null when there is nothing to say.
 */
export function judgeNan(
  nan: { rank: number; step: number; t: number } | null,
  ranks: readonly RankRecord[],
  nanIsFailure: boolean,
  now: number,
): IncidentFacts | null {
  if (!nan || !nanIsFailure) return null;
  const rank = ranks.find((r) => r.rank === nan.rank)!;
  return {
    cause: "numerical",
    culpritRank: nan.rank,
    culpritNode: rank.node,
    faultAt: nan.t,
    detectedAt: now,
    summary: `rank ${nan.rank} reported a non-finite loss at step ${nan.step}; rolling back to the last checkpoint`,
    hard: false,
    signature: "",
    lastStep: nan.step,
    evidence: { step: nan.step },
  };
}
