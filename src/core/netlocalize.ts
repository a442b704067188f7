/**
 * Network localization: from the probe's table (pair -> sustained Gbit/s, agent/netprobe.py) to a verdict. A pair is
 * slow when its sustained rate is under `slowShare` of the pool's expected link rate, when that is known; else the pairs
 * are compared with each other: sorted by rate, the widest gap between two neighbours splits them when it is at least
 * 1/slowShare (5x), and the pairs below it are slow. Healthy pairs scatter (2-3x on a loaded host), a collapsed link
 * is 10-100x below them, and however many pairs it slows, the gap stays. The host common to every slow pair is the culprit (a collapsed link is shared by all
 * the pairs through it); when every pair is slow against the expected rate, the pool is degraded, not a host. Pure.
 */

export interface PairRate {
  from: string;
  to: string;
  /** Sustained rate (Gbit/s); null when the pair could not be measured (it counts as slow). */
  gbitS: number | null;
  /** Average over the whole transfer, for the evidence. */
  avgGbitS?: number | null;
  error?: string;
}

export interface LocalizePolicy {
  /** Slow: under this share of the expected rate (default 0.2: a link 5x slower than it should be). */
  slowShare: number;
  /** The rate a healthy pair of this pool reaches (Gbit/s), when known; else the pairs are compared with each other. */
  expectedGbitS?: number | null;
}

export const defaultLocalizePolicy: LocalizePolicy = { slowShare: 0.2 };

export type NetworkVerdictKind = "healthy" | "host" | "pool" | "inconclusive";

export interface NetworkVerdict {
  kind: NetworkVerdictKind;
  /** The culprit host(s) ("host"); the suspects when it is inconclusive (the two ends of a lone slow pair). */
  culprits: string[];
  slowPairs: PairRate[];
  /** Every pair measured, slowest first. */
  table: PairRate[];
  /** Under this a pair is slow (Gbit/s). */
  thresholdGbitS: number | null;
  /** Evidence in words: the table and what was expected. */
  evidence: string;
}

/** The probe's JSON lines, as each host printed them (only the coordinator prints pairs), into one table. */
export function parseProbeOutput(outputs: readonly string[]): { pairs: PairRate[]; problems: string[] } {
  const pairs: PairRate[] = [];
  const problems: string[] = [];
  for (const out of outputs) {
    for (const line of out.split("\n")) {
      const text = line.trim();
      if (text === "") continue;
      let obj: unknown;
      try {
        obj = JSON.parse(text);
      } catch {
        problems.push(`not a probe line: ${text.slice(0, 120)}`);
        continue;
      }
      if (typeof obj !== "object" || obj === null) continue;
      const o = obj as Record<string, unknown>;
      if (typeof o.from !== "string" || typeof o.to !== "string") continue;
      if (o.kind === "pair" && typeof o.sustained_gbit_s === "number") {
        pairs.push({
          from: o.from,
          to: o.to,
          gbitS: o.sustained_gbit_s,
          avgGbitS: typeof o.gbit_s === "number" ? o.gbit_s : null,
        });
      } else if (o.kind === "error") {
        pairs.push({ from: o.from, to: o.to, gbitS: null, error: typeof o.error === "string" ? o.error : "failed" });
      }
    }
  }
  return { pairs, problems };
}

export function localizeNetwork(
  pairs: readonly PairRate[],
  policy: LocalizePolicy = defaultLocalizePolicy,
): NetworkVerdict {
  const table = [...pairs].sort((a, b) => (a.gbitS ?? -1) - (b.gbitS ?? -1));
  const rates = pairs
    .map((p) => p.gbitS)
    .filter((r): r is number => r !== null && Number.isFinite(r))
    .sort((a, b) => b - a);
  const expected = policy.expectedGbitS ?? (rates.length > 0 ? rates[0]! : null);
  const describe = (p: PairRate): string =>
    `${p.from}->${p.to} ${p.gbitS === null ? `failed (${p.error ?? "no data"})` : fmt(p.gbitS)}`;
  const tableText = table.map(describe).join(", ");
  if (expected === null || !(expected > 0)) {
    return {
      kind: "inconclusive",
      culprits: [],
      slowPairs: [...pairs],
      table,
      thresholdGbitS: null,
      evidence: `probe: ${tableText || "no pair measured"}; nothing to compare against`,
    };
  }
  let threshold: number;
  let expectation: string;
  if (policy.expectedGbitS != null) {
    threshold = expected * policy.slowShare;
    expectation = `expected ${fmt(expected)}, slow under ${fmt(threshold)}`;
  } else {
    // The widest gap between neighbours (rates sorted fastest first), if wide enough.
    let gap = 1;
    let at = -1;
    for (let i = 0; i + 1 < rates.length; i++) {
      const ratio = rates[i + 1]! > 0 ? rates[i]! / rates[i + 1]! : Number.POSITIVE_INFINITY;
      if (ratio > gap) {
        gap = ratio;
        at = i;
      }
    }
    const need = 1 / policy.slowShare;
    if (at >= 0 && gap >= need) {
      threshold = Math.sqrt(rates[at]! * Math.max(rates[at + 1]!, 1e-9));
      expectation =
        `slow: the pairs ${gap === Number.POSITIVE_INFINITY ? "at 0" : `${gap.toFixed(0)}x`} below ` +
        `the others (${fmt(rates[at + 1]!)} against ${fmt(rates[at]!)}; slow means ${need}x below the rest)`;
    } else {
      threshold = 0;
      expectation = `no pair ${need}x below the others (fastest ${fmt(expected)})`;
    }
  }
  const isSlow = (p: PairRate): boolean => p.gbitS === null || p.gbitS < threshold;
  const slowPairs = table.filter(isSlow);
  const base = { table, slowPairs, thresholdGbitS: threshold > 0 ? threshold : null };
  const head = `probe: ${tableText}; ${expectation}`;
  if (slowPairs.length === 0)
    return { ...base, kind: "healthy", culprits: [], evidence: `${head}: every pair is fast` };
  if (slowPairs.length === table.length) {
    return table.length === 1
      ? {
          ...base,
          kind: "inconclusive",
          culprits: [table[0]!.from, table[0]!.to],
          evidence: `${head}: the only pair is slow; either end may be the culprit`,
        }
      : {
          ...base,
          kind: "pool",
          culprits: [],
          evidence: `${head}: every pair is slow: the pool's network is degraded`,
        };
  }

  // Greedy cover: take the host in the most slow pairs (ties: the one with no fast pair, then by name) until every
  // slow pair has a culprit end. A culprit must have no fast pair of its own: a link either collapsed or it did not.
  const culprits: string[] = [];
  let left = slowPairs;
  while (left.length > 0) {
    const counts = new Map<string, number>();
    for (const p of left) for (const h of [p.from, p.to]) counts.set(h, (counts.get(h) ?? 0) + 1);
    const fastCount = (h: string): number => table.filter((p) => !isSlow(p) && (p.from === h || p.to === h)).length;
    const [best] = [...counts].sort(
      (a, b) => b[1] - a[1] || fastCount(a[0]) - fastCount(b[0]) || a[0].localeCompare(b[0]),
    );
    if (!best || fastCount(best[0]) > 0) break;
    culprits.push(best[0]);
    left = left.filter((p) => p.from !== best[0] && p.to !== best[0]);
  }
  if (left.length > 0 || culprits.length === 0) {
    const suspects = [...new Set(slowPairs.flatMap((p) => [p.from, p.to]))].sort();
    return {
      ...base,
      kind: "inconclusive",
      culprits: suspects,
      evidence: `${head}: the slow pairs have no host in common that explains them (suspects: ${suspects.join(", ")})`,
    };
  }
  return {
    ...base,
    kind: "host",
    culprits,
    evidence:
      `${head}: every slow pair has ${culprits.join(" or ")} at one end, and every pair of ` +
      `${culprits.join(" and of ")} is slow: host${culprits.length > 1 ? "s" : ""} ${culprits.join(", ")}`,
  };
}

function fmt(gbitS: number): string {
  return gbitS >= 1 ? `${gbitS.toFixed(2)} Gbit/s` : `${(gbitS * 1000).toFixed(0)} Mbit/s`;
}
