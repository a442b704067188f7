/** Who caused a gang failure: the first rank to fail in time; peers that fail afterwards are victims. */

import { hostLostSignal } from "./classify.js";

export interface RankExit {
  rank: number;
  node: string;
  /** Exit code, or null when the process ended by a signal or vanished. */
  code: number | null;
  signal: string | null;
  /** When the exit was observed to happen (ms since epoch). */
  at: number;
  /** The last lines of the rank's log, newest last. */
  tail: readonly string[];
  /** Set when how the rank ended is unknown (its exit record was lost, e.g. on a full disk): why. */
  lost?: string;
}

/** A peer the culprit took down, and how it went. */
export interface Victim {
  rank: number;
  node: string;
  how: string;
}

export interface Attribution {
  culprit: RankExit;
  victims: RankExit[];
  /** Why this rank was chosen, for the incident's evidence. */
  reason: string;
  /** Ranks that failed before the culprit reported a lost peer, so a later rank was named. */
  earlierReportedPeerLoss: boolean;
}

/** Wording with which a survivor reports that a peer went away (gloo, NCCL, HCCL): marks a victim, not a culprit. */
const peerLostPatterns: readonly RegExp[] = [
  /Connection closed by peer/i,
  /Connection reset by peer/i,
  /Broken pipe/i,
  /gloo.*(timed out|timeout)/i,
  /NCCL.*(remote process exited|Connection closed|unhandled system error)/i,
  /Watchdog caught collective operation timeout/i,
  /EI0002|EI0006/,
  /SUSPECT REMOTE ERROR/,
];

export function failed(exit: RankExit): boolean {
  return exit.code !== 0;
}

export function looksLikePeerLoss(tail: readonly string[]): boolean {
  return tail.some((line) => peerLostPatterns.some((p) => p.test(line)));
}

/**
 * Picks the culprit among failed ranks. Exit times observed by polling can tie or arrive out of order by a few
 * milliseconds, so within `simultaneityMs` a rank that does not report a lost peer beats one that does.
 */
export function attributeFailure(exits: readonly RankExit[], simultaneityMs = 250): Attribution | null {
  const failures = exits.filter(failed).sort((a, b) => a.at - b.at || a.rank - b.rank);
  const first = failures[0];
  if (!first) return null;
  const window = failures.filter((e) => e.at - first.at <= simultaneityMs);
  const direct = window.find((e) => !looksLikePeerLoss(e.tail));
  const culprit = direct ?? first;
  const victims = failures.filter((e) => e !== culprit);
  const earlierReportedPeerLoss = direct !== undefined && direct !== first;
  return {
    culprit,
    victims,
    reason: culpritReason(culprit, victims.length, earlierReportedPeerLoss),
    earlierReportedPeerLoss,
  };
}

function exitText(e: RankExit): string {
  if (e.lost) return `ended without an exit status (${e.lost})`;
  if (e.signal === hostLostSignal) return `was lost with its host ${e.node} (its node agent fell silent)`;
  return e.signal ? `killed by ${e.signal}` : `exited with code ${String(e.code)}`;
}

/** Why `culprit` is the culprit, for the incident's summary. */
export function culpritReason(culprit: RankExit, victims: number, earlierReportedPeerLoss = false): string {
  const how = exitText(culprit);
  return victims === 0
    ? `rank ${culprit.rank} ${how}; it was the only rank to fail`
    : `rank ${culprit.rank} ${how} first; ${victims} peer(s) failed after it` +
        (earlierReportedPeerLoss ? " (the earlier ones reported a lost peer)" : "");
}

/**
 * The culprit's victims once the gang is down: every other rank that did not finish cleanly. `peers` are the other
 * ranks' exits as seen after the gang was stopped (tails read then, so a line such as gloo's "Connection reset by
 * peer" written after the failure was first seen counts); `stopped` are the ranks that were still running when it
 * was seen, which the supervisor then stopped.
 */
export function victimsOf(culprit: RankExit, peers: readonly RankExit[], stopped: ReadonlySet<number>): Victim[] {
  const victims: Victim[] = [];
  for (const p of [...peers].sort((a, b) => a.rank - b.rank)) {
    if (p.rank === culprit.rank || p.code === 0) continue;
    const lostPeer = looksLikePeerLoss(p.tail);
    const how = stopped.has(p.rank)
      ? lostPeer
        ? "reported a lost peer, then was stopped with the gang"
        : "was stopped with the gang"
      : `${lostPeer ? "reported a lost peer and " : ""}${exitText(p)} after the culprit`;
    victims.push({ rank: p.rank, node: p.node, how });
  }
  return victims;
}
