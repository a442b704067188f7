import { attributeFailure, culpritReason, type RankExit, victimsOf } from "../../core/culprit.js";
import { type CausePattern, type Classification, classifyFailure, hostLostSignal } from "../../core/classify.js";
import type { RankStatus } from "../../executors/port.js";
import type { RankRecord } from "../../store/port.js";
import type { IncidentFacts } from "../verdict.js";

/** What a rank's exit signal reads as when its exit record was lost (not the node's fault: no strike). */
export const lostSignal = "LOST";

/** A rank's exit as the store records it (signal LOST, VANISHED or HOSTLOST when there was no exit record). */
export function exitFields(s: Exclude<RankStatus, { state: "running" }>): {
  exitCode: number | null;
  exitSignal: string | null;
} {
  return {
    exitCode: s.state === "exited" ? s.code : null,
    exitSignal:
      s.state === "exited" ? s.signal : s.state === "lost" ? lostSignal : s.hostLost ? hostLostSignal : "VANISHED",
  };
}

/** The ranks that have ended, as culprit attribution reads them (first observed exit time kept). */
export function toRankExits(ranks: RankRecord[], statuses: RankStatus[]): RankExit[] {
  const exits: RankExit[] = [];
  for (const s of statuses) {
    if (s.state === "running") continue;
    const r = ranks.find((x) => x.rank === s.rank);
    if (!r) continue;
    // Keep the first observed exit time: a rank's exit is recorded once.
    const at = r.exitedAt ?? s.at;
    if (s.state === "vanished")
      exits.push({
        rank: r.rank,
        node: r.node,
        code: null,
        signal: s.hostLost ? hostLostSignal : "VANISHED",
        at,
        tail: s.hostLost ? [s.hostLost] : [],
      });
    else if (s.state === "lost")
      exits.push({ rank: r.rank, node: r.node, code: null, signal: lostSignal, at, tail: [], lost: s.why });
    else exits.push({ rank: r.rank, node: r.node, code: s.code, signal: s.signal, at, tail: [] });
  }
  return exits;
}

/** True when some rank ended other than with exit code 0: the attempt crashed. */
export function crashed(exits: readonly RankExit[]): boolean {
  return exits.some((e) => e.code !== 0);
}

/** A culprit whose exit record was lost (its wrapper could not write it: a full disk): cause unknown, no strike. */
function lostExitClassification(why: string): Classification {
  return {
    cause: "unknown",
    detail: `its exit status is unknown: ${why}`,
    evidence: "",
    hardDeviceEvidence: false,
    retryable: true,
    signature: "",
    patternId: null,
  };
}

export interface CrashInput {
  ranks: RankRecord[];
  statuses: RankStatus[];
  detectedAt: number;
  /** The culprit's newest reported step of this attempt (null: none; the attempt's resume step is used). */
  lastStepOf: (rank: number) => number | null;
  resumeStep: number | null;
  causePatterns: readonly CausePattern[];
  /** The last lines of a rank's log. */
  tail: (rank: RankRecord) => Promise<string[]>;
  /** The gang's statuses again, once it has been stopped (peers that went down with it). */
  repoll: () => Promise<RankStatus[]>;
}

/**
 * The crash detector: who failed first (the culprit; peers that failed after it are victims), and why (the cause
 * classified from its exit and its log's last lines). Reads logs; writes nothing.
 */
export async function judgeCrash(input: CrashInput): Promise<IncidentFacts> {
  const { ranks, statuses, detectedAt } = input;
  const logOf = (rank: number) => ranks.find((r) => r.rank === rank);
  const tailOf = async (rank: number) => {
    const r = logOf(rank);
    return r ? input.tail(r) : [];
  };
  const exits = await Promise.all(
    // What the executor itself knows (a lost host) stays first in the evidence, before the rank's own last lines.
    toRankExits(ranks, statuses).map(async (e) => ({ ...e, tail: [...e.tail, ...(await tailOf(e.rank))] })),
  );
  const attribution = attributeFailure(exits)!;
  const culprit = attribution.culprit;
  const classification = culprit.lost
    ? lostExitClassification(culprit.lost)
    : classifyFailure({ code: culprit.code, signal: culprit.signal, tail: culprit.tail }, input.causePatterns);
  const stillRunning = new Set(ranks.filter((r) => !exits.some((e) => e.rank === r.rank)).map((r) => r.rank));
  // A rank that crashed before its first report of this attempt stood at the resume point.
  const lastStep = input.lastStepOf(culprit.rank) ?? input.resumeStep;
  return {
    cause: classification.cause,
    culpritRank: culprit.rank,
    culpritNode: culprit.node,
    faultAt: Math.min(culprit.at, detectedAt),
    detectedAt,
    summary: `${attribution.reason}: ${classification.detail}`,
    hard: classification.hardDeviceEvidence,
    signature: classification.signature,
    retryable: classification.retryable,
    lastStep,
    evidence: {
      code: culprit.code,
      signal: culprit.signal,
      line: classification.evidence,
      pattern: classification.patternId,
      tail: culprit.tail.slice(-12),
      victims: attribution.victims.map((v) => v.rank),
    },
    // Peers still running when the failure was seen go down with the gang; what they logged meanwhile (gloo's
    // "Connection reset by peer") makes them victims too.
    afterStop: async () => {
      const after = await Promise.all(
        toRankExits(ranks, await input.repoll()).map(async (e) => ({ ...e, tail: await tailOf(e.rank) })),
      );
      const victims = victimsOf(culprit, after, stillRunning);
      return {
        summary: `${culpritReason(culprit, victims.length, attribution.earlierReportedPeerLoss)}: ${classification.detail}`,
        evidence: { victims: victims.map((v) => v.rank), victimDetail: victims },
      };
    },
  };
}
