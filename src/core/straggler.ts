import { median } from "./slowdown.js";

/**
 * A slow chip: in a synchronous job every rank's step takes as long as the slowest rank's, so step times alone cannot
 * say which rank is slow. Compute time can: the slow rank computes for most of the step while its peers compute for a
 * short time and wait for it at the collective. The rank whose compute time per step is an outlier against its peers'
 * is the culprit, and its host with it.
 *
 * Compute time per step comes from the SDK (`compute_s` in step reports) or, when the script has no SDK, from CPU time:
 * the Slurm node agent's heartbeats carry the rank group's CPU ticks (`cpuTicks`), the local executor reads /proc; the
 * CPU-seconds a rank used between two step reports, divided by the steps, is its compute time per step (ranks wait
 * for a collective mostly asleep, so waiting costs little CPU). Pure: the supervisor passes the series.
 */

export interface RankCompute {
  rank: number;
  node: string;
  /** Compute time per step (s), recent steps (one value per step or per span of steps). */
  computeS: readonly number[];
}

export interface StragglerPolicy {
  /** A rank is slow when its median compute time is at least this many times its peers' (default 1.5). */
  factor: number;
  /** Samples per rank needed before anything is said (default 5). */
  minSamples: number;
}

export const defaultStragglerPolicy: StragglerPolicy = { factor: 1.5, minSamples: 5 };

/**
 * Compute time below this (s per step) is not measured, only noise: one tick of the 100 Hz CPU clock the heartbeats
 * count in. Ranks that wait asleep use (next to) none, so the expected time is at least this when a rank is judged:
 * a rank burning 0.7 s of CPU per step while its peers use 0.000 s is the outlier, not "nothing measurable".
 */
export const minMeasurableComputeS = 0.01;

export interface StragglerVerdict {
  /** The slow rank(s), slowest first; empty when no rank stands out (or every rank is slow alike). */
  slowRanks: number[];
  /** The culprit host: the one host every slow rank runs on; null when none stands out or they span several hosts. */
  culpritNode: string | null;
  /** Hosts of the slow ranks (several when the outliers span hosts: then no single culprit). */
  slowNodes: string[];
  /** The measured table: rank -> median compute time per step (s), slowest first. */
  table: Array<{ rank: number; node: string; computeS: number; samples: number }>;
  /** What a healthy rank takes: the median of the faster half of the ranks (s). */
  expectedS: number | null;
  /** The slowest rank's compute time / expected. */
  ratio: number | null;
  /** Evidence in words: the table and what was expected. */
  evidence: string;
}

export function findStraggler(
  ranks: readonly RankCompute[],
  policy: StragglerPolicy = defaultStragglerPolicy,
): StragglerVerdict {
  const table = ranks
    .map((r) => {
      const values = r.computeS.filter((v) => Number.isFinite(v) && v >= 0);
      return { rank: r.rank, node: r.node, computeS: median(values), samples: values.length };
    })
    .filter((r) => r.samples >= policy.minSamples)
    .sort((a, b) => b.computeS - a.computeS || a.rank - b.rank);
  const empty = (why: string, expectedS: number | null = null): StragglerVerdict => ({
    slowRanks: [],
    culpritNode: null,
    slowNodes: [],
    table,
    expectedS,
    ratio: expectedS && table[0] ? table[0].computeS / expectedS : null,
    evidence: why,
  });
  if (table.length < 2) {
    return empty(`needs the compute time of 2+ ranks with ${policy.minSamples}+ samples each; has ${table.length}`);
  }
  // The reference is the median of the faster half (rounded up): robust while at most half the ranks are slow, so the
  // slower of two ranks can be named against the other.
  const expectedS = median(table.slice(table.length - Math.ceil(table.length / 2)).map((r) => r.computeS));
  const rows = table.map((r) => `rank ${r.rank} on ${r.node} ${r.computeS.toFixed(3)} s`).join(", ");
  if (!(table[0]!.computeS > minMeasurableComputeS)) {
    return empty(`compute time per step: ${rows}; no rank computes measurably`, expectedS);
  }
  const reference = Math.max(expectedS, minMeasurableComputeS);
  const slow = table.filter((r) => r.computeS >= policy.factor * reference);
  if (slow.length === 0 || slow.length * 2 > table.length) {
    return empty(
      `compute time per step: ${rows}; expected ${expectedS.toFixed(3)} s` +
        (slow.length === 0
          ? `: no rank ${policy.factor}x slower than its peers`
          : ": most ranks are slow alike, no single culprit"),
      expectedS,
    );
  }
  const slowNodes = [...new Set(slow.map((r) => r.node))];
  const culpritNode = slowNodes.length === 1 ? slowNodes[0]! : null;
  const top = slow[0]!;
  return {
    slowRanks: slow.map((r) => r.rank),
    culpritNode,
    slowNodes,
    table,
    expectedS,
    ratio: top.computeS / reference,
    evidence:
      `compute time per step: ${rows}; expected ${expectedS.toFixed(3)} s (the faster half's median` +
      (reference > expectedS ? `; at least ${reference.toFixed(3)} s, what can be measured` : "") +
      `): rank${slow.length > 1 ? "s" : ""} ${slow.map((r) => r.rank).join(", ")} ` +
      `${(top.computeS / reference).toFixed(1)}x slower while the others wait` +
      (culpritNode ? `: host ${culpritNode}` : `: on several hosts (${slowNodes.join(", ")})`),
  };
}

export interface CpuSample {
  /** When (ms). */
  t: number;
  /** CPU ticks (user + system) of the rank's process group so far. */
  cpuTicks: number;
}

/**
 * Compute time per step from CPU time: for each pair of consecutive step reports, the CPU-seconds the rank used between
 * them (interpolated between the CPU samples around each report) divided by the steps. Steps with no CPU sample on
 * both sides are skipped.
 */
export function cpuSecondsPerStep(
  cpu: readonly CpuSample[],
  steps: ReadonlyArray<{ step: number; t: number }>,
  ticksPerSecond = 100,
): number[] {
  const samples = [...cpu].filter((s) => Number.isFinite(s.t) && Number.isFinite(s.cpuTicks)).sort((a, b) => a.t - b.t);
  const ordered = [...steps].sort((a, b) => a.t - b.t);
  const ticksAt = (t: number): number | null => {
    let lo = 0;
    let hi = samples.length - 1;
    if (hi < 0 || t < samples[0]!.t || t > samples[hi]!.t) return null;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (samples[mid]!.t <= t) lo = mid;
      else hi = mid;
    }
    const a = samples[lo]!;
    const b = samples[hi]!;
    return b.t === a.t ? a.cpuTicks : a.cpuTicks + ((b.cpuTicks - a.cpuTicks) * (t - a.t)) / (b.t - a.t);
  };
  const out: number[] = [];
  for (let i = 1; i < ordered.length; i++) {
    const from = ordered[i - 1]!;
    const to = ordered[i]!;
    const n = to.step - from.step;
    if (n <= 0) continue;
    const a = ticksAt(from.t);
    const b = ticksAt(to.t);
    if (a === null || b === null || b < a) continue;
    out.push((b - a) / ticksPerSecond / n);
  }
  return out;
}
