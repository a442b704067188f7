/** Who caused a gang failure: the first rank to fail in time; peers that fail afterwards are victims. */

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
}

export interface Attribution {
  culprit: RankExit;
  victims: RankExit[];
  /** Why this rank was chosen, for the incident's evidence. */
  reason: string;
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
  const how = culprit.signal ? `killed by ${culprit.signal}` : `exited with code ${String(culprit.code)}`;
  const reason =
    failures.length === 1
      ? `rank ${culprit.rank} ${how}; it was the only rank to fail`
      : `rank ${culprit.rank} ${how} first; ${victims.length} peer(s) failed after it` +
        (direct && direct !== first ? " (the earlier ones reported a lost peer)" : "");
  return { culprit, victims, reason };
}
