import type { SlowdownPolicy } from "./spec.js";

/**
 * Slowdown ("gray failure") detection from progress alone: no change to the training script, only the step reports (SDK)
 * or log lines (regex) the hang detector reads too. Each attempt is its own reference: its baseline step time is a
 * fast pace it has shown and held after warm-up (the lower quartile of the medians of consecutive `windowSeconds`
 * blocks, slow blocks left out, never one lone fast block: see baselineStepMs), and the recent pace is the median step
 * time of the last `windowSeconds`. Medians, not means: one long eval step or a checkpoint save does not move them, and
 * the steps that touch a checkpoint (the step it follows and the one after it) are left out altogether. The gang is
 * slow when more than half of the recent window's steps took at least `factor` times the baseline, and has been so for
 * `sustainSeconds`.
 *
 * Pure: the supervisor passes the attempt's rank-0 progress (in a synchronous job every rank steps together) and the
 * steps its checkpoints were saved at; the verdict says when the slowdown began, so the ledger can charge it.
 */

export type { SlowdownPolicy } from "./spec.js";

/** Step times within this share below `factor` still count: a 2x slowdown measured as 1.96x from noise is caught. */
export const slowdownNoiseTolerance = 0.05;

/** A window (and a baseline block) holds at least this many step intervals, however long that takes. */
export const slowdownMinSamples = 5;

export interface ProgressSample {
  step: number;
  /** When the step was reported (ms). */
  t: number;
}

export interface SlowdownInput {
  /** One attempt's progress (rank 0, or any one rank): samples may be thinned (several steps between two). */
  samples: readonly ProgressSample[];
  /** Steps after which a checkpoint was saved in this attempt: the intervals touching them are left out. */
  checkpointSteps?: readonly number[];
  /** Now (ms). */
  now: number;
  policy: SlowdownPolicy;
}

export interface SlowdownVerdict {
  slow: boolean;
  /** Recent step time / baseline step time (null until both are known). */
  factor: number | null;
  /** When the slowdown began (ms): the start of the first slow step of the run of slow windows; null when not slow. */
  since: number | null;
  baselineStepS: number | null;
  recentStepS: number | null;
  /** A sentence for events and incidents: what was measured against what. */
  reason: string;
}

export interface StepInterval {
  /** First step after the interval's start sample. */
  fromStep: number;
  toStep: number;
  startT: number;
  endT: number;
  /** Time per step (ms). */
  perStepMs: number;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Per-step intervals between consecutive samples, after warm-up and away from checkpoints, oldest first. */
export function eligibleIntervals(
  samples: readonly ProgressSample[],
  checkpointSteps: readonly number[],
  warmupSteps: number,
): StepInterval[] {
  // One sample per step (the first report of a step wins), in step order, time never going backwards.
  const byStep = new Map<number, number>();
  for (const s of samples) {
    if (!Number.isFinite(s.step) || !Number.isFinite(s.t)) continue;
    const seen = byStep.get(s.step);
    if (seen === undefined || s.t < seen) byStep.set(s.step, s.t);
  }
  const ordered = [...byStep].sort((a, b) => a[0] - b[0]);
  const first = ordered[0];
  if (!first) return [];
  const warmEnd = first[0] + warmupSteps;
  const saves = [...new Set(checkpointSteps)].filter(Number.isFinite).sort((a, b) => a - b);
  const out: StepInterval[] = [];
  for (let i = 1; i < ordered.length; i++) {
    const [fromStep, startT] = ordered[i - 1]!;
    const [toStep, endT] = ordered[i]!;
    if (endT <= startT) continue;
    if (fromStep < warmEnd) continue;
    // The save runs after step c is reported (interval c -> c+1), and the step after it often pays for it too
    // (c+1 -> c+2): leave out every interval that overlaps steps (c, c+2].
    const c = saves[firstAbove(saves, fromStep - 2)];
    if (c !== undefined && c < toStep) continue;
    out.push({ fromStep, toStep, startT, endT, perStepMs: (endT - startT) / (toStep - fromStep) });
  }
  return out;
}

/** Index of the first element of an ascending array greater than x (its length when none is). */
function firstAbove(sorted: readonly number[], x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! > x) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * A block's median enters the baseline only when it is below this power of `factor` times the baseline so far: the
 * square root, halfway to slow on a log scale (1.41x for a 2x factor). A slowdown, and the block it begins in, never
 * lifts its own reference; ordinary variation enters. The same ratio sets a lone fast block apart (baselineOf).
 */
export const slowdownBaselineAdmitExponent = 0.5;

/** The baseline is at the lower quartile of the block medians that entered it (see baselineOf). */
export const slowdownBaselineQuantile = 0.25;

/**
 * The attempt's baseline step time (ms), from consecutive blocks of at least `windowMs` and `slowdownMinSamples`
 * intervals after warm-up, oldest first; null until one whole block has been seen.
 *
 * Not simply the fastest block: on a shared machine one quiet stretch runs unusually fast, and ordinary steps after it
 * would then look like a 1.3-2x slowdown. Instead:
 * - The first block is the baseline (a slowdown that begins right after it is measured against it). Progress alone
 *   cannot tell such a slowdown from a first block that was unusually fast: that one still sets the baseline.
 * - Each later block enters the baseline unless its median is slow against the baseline so far (at least
 *   `factor ** slowdownBaselineAdmitExponent` times it): a slowdown cannot lift its own baseline, however long it lasts.
 * - The baseline is then baselineOf the medians that entered: the lower quartile, lowered to the fastest median
 *   within the noise tolerance of it, with lone fast blocks left out. On an even pace that is the fastest block, as
 *   before; one outlier-fast block, or a fast stretch of up to a quarter of the blocks, does not set it.
 * Bounded: one median per block of the samples given (the supervisor passes at most `slowdownSampleLimit`).
 */
export function baselineStepMs(intervals: readonly StepInterval[], windowMs: number, factor: number): number | null {
  const admitBelow = Math.max(1, factor) ** slowdownBaselineAdmitExponent;
  /** Medians of the blocks that entered, ascending. */
  const entered: number[] = [];
  let baseline: number | null = null;
  let blockStart = 0;
  for (let i = 0; i < intervals.length; i++) {
    const start = intervals[blockStart]!;
    const cur = intervals[i]!;
    const count = i - blockStart + 1;
    if (cur.endT - start.startT >= windowMs && count >= slowdownMinSamples) {
      const m = median(intervals.slice(blockStart, i + 1).map((x) => x.perStepMs));
      blockStart = i + 1;
      if (baseline !== null && m >= admitBelow * baseline) continue;
      entered.splice(firstAbove(entered, m), 0, m);
      baseline = baselineOf(entered, admitBelow);
    }
  }
  return baseline;
}

/**
 * The baseline of block medians (ascending, at least one):
 * - Lone fast blocks are left out: from the fastest up, a median whose next slower one is at least `loneRatio` times
 *   it (no other block came near its pace; while more than one median is left).
 * - Of the rest, the lower quartile (`slowdownBaselineQuantile`; the fastest while fewer than five are left), then
 *   the fastest median not more than `slowdownNoiseTolerance` below it: block medians of an even pace differ by less
 *   than that, so an even run keeps its fastest block, while a fast stretch well below the quartile does not count.
 */
export function baselineOf(sortedMedians: readonly number[], loneRatio: number): number {
  let lo = 0;
  while (lo + 1 < sortedMedians.length && sortedMedians[lo + 1]! >= loneRatio * sortedMedians[lo]!) lo++;
  let k = lo + Math.floor(slowdownBaselineQuantile * (sortedMedians.length - 1 - lo));
  const floor = sortedMedians[k]! * (1 - slowdownNoiseTolerance);
  while (k > lo && sortedMedians[k - 1]! >= floor) k--;
  return sortedMedians[k]!;
}

export function judgeSlowdown(input: SlowdownInput): SlowdownVerdict {
  const { policy } = input;
  const windowMs = policy.windowSeconds * 1000;
  const intervals = eligibleIntervals(input.samples, input.checkpointSteps ?? [], policy.warmupSteps);
  const baseline = baselineStepMs(intervals, windowMs, policy.factor);
  const none = (reason: string, recent: number | null = null): SlowdownVerdict => ({
    slow: false,
    factor: baseline !== null && recent !== null ? recent / baseline : null,
    since: null,
    baselineStepS: baseline === null ? null : baseline / 1000,
    recentStepS: recent === null ? null : recent / 1000,
    reason,
  });
  if (baseline === null || baseline <= 0) {
    return none(
      `no baseline yet: needs ${policy.warmupSteps} warm-up steps, then ${policy.windowSeconds} s and ` +
        `${slowdownMinSamples} steps away from checkpoints`,
    );
  }
  const threshold = policy.factor * (1 - slowdownNoiseTolerance) * baseline;

  // For every interval: is the window that ends with it slow (a strict majority of its steps at least the threshold)?
  // Two pointers over the intervals: O(n).
  const windowSlow: boolean[] = [];
  const windowStart: number[] = [];
  let lo = 0;
  let slowCount = 0;
  const isSlow = (x: StepInterval): boolean => x.perStepMs >= threshold;
  for (let i = 0; i < intervals.length; i++) {
    if (isSlow(intervals[i]!)) slowCount++;
    while (
      lo < i &&
      intervals[i]!.endT - intervals[lo]!.endT >= windowMs &&
      i - lo + 1 > slowdownMinSamples // keep at least the minimum, however long ago
    ) {
      if (isSlow(intervals[lo]!)) slowCount--;
      lo++;
    }
    const count = i - lo + 1;
    windowStart.push(lo);
    windowSlow.push(count >= slowdownMinSamples && slowCount * 2 > count);
  }

  const last = intervals.length - 1;
  const recent = median(intervals.slice(windowStart[last] ?? 0).map((x) => x.perStepMs));
  const ratio = recent / baseline;
  const pace = `recent step ${fmtS(recent)} against a baseline of ${fmtS(baseline)} (${ratio.toFixed(2)}x; slow from ${policy.factor}x)`;
  if (!windowSlow[last]) return none(pace, recent);

  // The run of slow windows up to now; the slowdown began at the first slow step of the first slow window.
  let first = last;
  while (first > 0 && windowSlow[first - 1]) first--;
  const crossedAt = intervals[first]!.endT;
  let onset = crossedAt;
  for (let j = windowStart[first]!; j <= first; j++) {
    if (isSlow(intervals[j]!)) {
      onset = intervals[j]!.startT;
      break;
    }
  }
  const lastedMs = input.now - crossedAt;
  if (lastedMs < policy.sustainSeconds * 1000) {
    return none(`${pace} for ${fmtS(lastedMs)}, not yet ${policy.sustainSeconds} s`, recent);
  }
  return {
    slow: true,
    factor: ratio,
    since: onset,
    baselineStepS: baseline / 1000,
    recentStepS: recent / 1000,
    reason: `${pace}, sustained for ${fmtS(input.now - onset)}`,
  };
}

function fmtS(ms: number): string {
  return ms >= 10_000 ? `${(ms / 1000).toFixed(0)} s` : `${(ms / 1000).toFixed(2)} s`;
}
