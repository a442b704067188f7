/** Turns raw Monte Carlo trials into the numbers a planner reports, each estimate with its 95% confidence interval. */
import { dalyInterval, expectedGoodput, youngInterval } from "../core/checkpoint-interval.js";
import { fleetMtbfS, meanRecoveryS, type CompiledPlan } from "./compile.js";
import { TIME_CATEGORIES, type ScenarioRun, type TimeCategory } from "./engine.js";

const Z95 = 1.959964;

export interface Estimate {
  mean: number;
  /** 95% confidence interval of the mean. */
  ci95: [number, number];
}

export interface CheckpointAdvice {
  /** Interval the scenario runs with (Daly's when the plan says "optimal"). */
  intervalS: number;
  intervalIsOptimal: boolean;
  saveS: number;
  /** Mean time from a failure until compute resumes: detection + restart + load. */
  recoveryS: number;
  /** Mean time between failures of the whole fleet. */
  mtbfS: number;
  /** Young's and Daly's optimum, each bounded below by minIntervalS (one step; a 0 s save gives that floor). */
  youngS: number;
  dalyS: number;
  minIntervalS: number;
  /** Daly's analytic goodput at the configured interval and at Daly's interval (spares and stragglers aside). */
  goodputAtInterval: number;
  goodputAtDaly: number;
}

export interface ScenarioSummary {
  name: string;
  description: string | undefined;
  device: string;
  devices: number;
  nodes: number;
  spareNodes: number;
  mode: "completion" | "window";
  workUnit: "steps" | "tokens";
  trials: number;
  seed: number;
  /** Failure-free time to train, or the simulated window. */
  nominalS: number;
  /** Time to train; Infinity where more than the share `finishedShare` of trials never finished. */
  timeToTrain: { p10S: number; p50S: number; p90S: number; mean: Estimate } | undefined;
  finishedShare: number;
  /** Time to train at each percent 0..100 (completion mode), for CDF charts. */
  completionQuantilesS: number[];
  ettr: Estimate;
  /** p99: a job spec's recovery.maxRestarts below this would give up on about 1 run in 100 or more. */
  interruptions: Estimate & { p99: number; byCause: Record<string, number>; stragglerRemovals: number };
  fellBackShare: number;
  /** Mean seconds per trial in each category; they add up to the mean wall time. */
  timeS: Record<TimeCategory, number>;
  /** null when the fleet never fails (no interval to advise). */
  checkpoint: CheckpointAdvice | null;
  deadline: { deadlineS: number; probability: number; ci95: [number, number] } | undefined;
}

export function summarize(plan: CompiledPlan, run: ScenarioRun): ScenarioSummary {
  const { scenario, trials } = run;
  const fleet = plan.fleets[scenario.fleetIndex];
  if (fleet === undefined) throw new Error(`internal: scenario ${scenario.name} has no fleet`);
  const windowMode = scenario.windowS !== undefined;

  const sortedWall = Float64Array.from(run.wallS, (w, i) => (run.finished[i] === 1 ? w : Infinity)).sort();
  const finishedCount = run.finished.reduce((a, b) => a + b, 0);
  const ettr = estimate(Float64Array.from(run.productiveS, (p, i) => p / (run.wallS[i] || 1)));

  const byCause: Record<string, number> = {};
  plan.causes.forEach((cause, i) => {
    const count = run.interruptionsByCause[i] ?? 0;
    if (count > 0 || fleet.causeIds.includes(i)) byCause[cause] = count / trials;
  });
  const timeS = Object.fromEntries(TIME_CATEGORIES.map((c, i) => [c, (run.timeS[i] ?? 0) / trials])) as Record<
    TimeCategory,
    number
  >;

  let deadline: ScenarioSummary["deadline"];
  if (scenario.deadlineS !== undefined) {
    const limit = scenario.deadlineS;
    const met = run.wallS.reduce((n, w, i) => n + (run.finished[i] === 1 && w <= limit ? 1 : 0), 0);
    deadline = { deadlineS: limit, probability: met / trials, ci95: wilson(met, trials) };
  }

  return {
    name: scenario.name,
    description: scenario.description,
    device: fleet.device,
    devices: fleet.devices,
    nodes: fleet.nodes,
    spareNodes: fleet.spareNodes,
    mode: windowMode ? "window" : "completion",
    workUnit: scenario.workUnit,
    trials,
    seed: run.seed,
    nominalS: run.nominalS,
    timeToTrain: windowMode
      ? undefined
      : {
          p10S: quantile(sortedWall, 0.1),
          p50S: quantile(sortedWall, 0.5),
          p90S: quantile(sortedWall, 0.9),
          mean: finishedCount === trials ? estimate(run.wallS) : { mean: Infinity, ci95: [Infinity, Infinity] },
        },
    finishedShare: windowMode ? 1 : finishedCount / trials,
    completionQuantilesS: windowMode ? [] : Array.from({ length: 101 }, (_, p) => quantile(sortedWall, p / 100)),
    ettr,
    interruptions: {
      ...estimate(run.interruptions),
      p99: quantile(Float64Array.from(run.interruptions).sort(), 0.99),
      byCause,
      stragglerRemovals: run.stragglerRemovals / trials,
    },
    fellBackShare: run.fellBack / trials,
    timeS,
    checkpoint: checkpointAdvice(plan, scenario.fleetIndex),
    deadline,
  };
}

/** What core's checkpoint math says about one fleet; null when the fleet never fails. */
export function checkpointAdvice(plan: CompiledPlan, fleetIndex: number): CheckpointAdvice | null {
  const fleet = plan.fleets[fleetIndex];
  if (fleet === undefined) return null;
  const mtbfS = fleetMtbfS(fleet);
  if (!Number.isFinite(mtbfS)) return null;
  const recoveryS = meanRecoveryS(fleet);
  const floor = fleet.minIntervalS;
  // A save of 0 s: both optima tend to 0, so the floor (one step) is the optimum.
  const youngS = fleet.saveS > 0 ? Math.max(youngInterval(fleet.saveS, mtbfS), floor) : floor;
  const dalyS = fleet.saveS > 0 ? Math.max(dalyInterval(fleet.saveS, mtbfS), floor) : floor;
  const goodputAt = (intervalS: number): number =>
    expectedGoodput({ intervalS, saveS: fleet.saveS, restartS: recoveryS, mtbfS });
  return {
    intervalS: fleet.intervalS,
    intervalIsOptimal: fleet.intervalIsOptimal,
    saveS: fleet.saveS,
    recoveryS,
    mtbfS,
    youngS,
    dalyS,
    minIntervalS: floor,
    goodputAtInterval: goodputAt(fleet.intervalS),
    goodputAtDaly: goodputAt(dalyS),
  };
}

/** Sample mean with a normal-approximation 95% interval. */
export function estimate(values: ArrayLike<number>): Estimate {
  const n = values.length;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += values[i] ?? 0;
  const mean = sum / n;
  let squares = 0;
  for (let i = 0; i < n; i++) squares += ((values[i] ?? 0) - mean) ** 2;
  const halfWidth = n > 1 ? Z95 * Math.sqrt(squares / (n - 1) / n) : Infinity;
  return { mean, ci95: [mean - halfWidth, mean + halfWidth] };
}

/** Wilson score interval for a share of successes; honest near 0 and 1, unlike the normal approximation. */
export function wilson(successes: number, n: number): [number, number] {
  if (n === 0) return [0, 1];
  const p = successes / n;
  const z2 = Z95 * Z95;
  const centre = (p + z2 / (2 * n)) / (1 + z2 / n);
  const half = (Z95 * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / (1 + z2 / n);
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}

/** Linear-interpolation quantile of sorted values; Infinity where it falls among never-finished trials. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  const position = q * (sorted.length - 1);
  const below = Math.floor(position);
  const low = sorted[below] ?? Infinity;
  const high = sorted[Math.min(below + 1, sorted.length - 1)] ?? Infinity;
  if (position === below) return low;
  if (!Number.isFinite(low) || !Number.isFinite(high)) return Infinity;
  return low + (high - low) * (position - below);
}
