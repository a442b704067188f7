/**
 * A plan calibrated from a real run: `switchyard plan --from-job JOB` reads the job's records through the server's API,
 * builds its goodput ledger with the supervisor's own code (core/goodput.ts, through supervisor/report.ts), measures
 * from it the step time, the failure rate by cause, detection, restart and checkpoint save times, and writes a plan
 * for the rest of the run. Pure: the CLI fetches, this turns records into a plan.
 *
 * `asOfS` cuts the history at that many seconds after the job was created, as if the job were still there: the
 * prediction can then be set against what the job really did afterwards.
 */
import { adviseInterval, buildLedger, type IntervalAdvice, type Ledger } from "../core/goodput.js";
import type { AttemptRecord, EventRecord, IncidentRecord } from "../store/port.js";
import { ledgerInputFromRecords } from "../supervisor/report.js";

/** Fewer steps than this say too little about the pace of a run. */
export const MIN_STEPS = 10;
const SECONDS_PER_DAY = 86_400;
/** Spreads are measured from this many samples up; below, times are taken as constants. */
const MIN_SAMPLES_FOR_SPREAD = 3;

export interface JobHistory {
  job: {
    id: string;
    name: string;
    state: string;
    createdAt: number;
    endedAt: number | null;
    spec: { nodes: number; procsPerNode: number; steps?: number | undefined };
  };
  attempts: AttemptRecord[];
  incidents: IncidentRecord[];
  events: EventRecord[];
  /** Rank 0's step reports. */
  steps: Array<{ attempt: number; step: number; t: number }>;
}

export interface MeasuredCause {
  cause: string;
  count: number;
  perNodeDay: number;
  detectS: number;
  detectCv: number;
}

export interface Calibration {
  jobId: string;
  /** Seconds of history used (since the job was created). */
  elapsedS: number;
  /** True when the history was cut before the job's end (or now). */
  cut: boolean;
  stepNow: number;
  totalSteps: number;
  remainingSteps: number;
  stepTimeS: number;
  /** Running time (productive, degraded, lost, checkpoint): what failure rates are measured against, as the advisor. */
  runningS: number;
  nodes: number;
  devicesPerNode: number;
  causes: MeasuredCause[];
  /**
   * Failures that chaos injected (drills): left out of the rates, as the advisor leaves them out of its MTBF; their
   * detection and restart times still count (a drill measures the detector and the restart as well as a real fault).
   */
  injectedLeftOut: number;
  /** Detection -> first step of the next attempt, mean and coefficient of variation, and how many were measured. */
  restartS: number;
  restartCv: number;
  restartsMeasured: number;
  saveS: number;
  /** Compute time between checkpoints in use, null when fewer than two saves were seen in an attempt. */
  intervalS: number | null;
  goodputSoFar: number;
  advice: IntervalAdvice;
}

export class CalibrationError extends Error {
  constructor(
    message: string,
    readonly fix: string,
  ) {
    super(message);
    this.name = "CalibrationError";
  }
}

/** The records as they stood `cutMs` (absolute time): later ones dropped, attempts still running then left open. */
export function historyAsOf(history: JobHistory, cutMs: number): JobHistory {
  const endedBefore = history.job.endedAt !== null && history.job.endedAt <= cutMs;
  return {
    job: {
      ...history.job,
      endedAt: endedBefore ? history.job.endedAt : null,
      state: endedBefore ? history.job.state : "RUNNING",
    },
    attempts: history.attempts
      .filter((a) => a.startedAt <= cutMs)
      .map((a) => (a.endedAt !== null && a.endedAt > cutMs ? { ...a, endedAt: null } : a)),
    incidents: history.incidents.filter((i) => i.detectedAt <= cutMs),
    events: history.events.filter((e) => e.t <= cutMs),
    steps: history.steps.filter((s) => s.t <= cutMs),
  };
}

export function jobLedger(history: JobHistory, now: number): { ledger: Ledger; advice: IntervalAdvice } {
  const { input, checkpoints } = ledgerInputFromRecords(
    history.job,
    history.attempts,
    history.incidents,
    history.events,
    history.steps,
    now,
  );
  const ledger = buildLedger(input);
  return { ledger, advice: adviseInterval(ledger, checkpoints) };
}

function meanAndCv(values: number[]): { mean: number; cv: number } {
  const n = values.length;
  if (n === 0) return { mean: 0, cv: 0 };
  const mean = values.reduce((a, b) => a + b, 0) / n;
  if (n < MIN_SAMPLES_FOR_SPREAD || mean <= 0) return { mean, cv: 0 };
  const sd = Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1));
  return { mean, cv: Math.min(10, sd / mean) };
}

/**
 * Measures the run so far. `nowMs` is the time of the look (the cut, or the present for a running job); `totalSteps`
 * overrides the job spec's `steps`.
 */
export function calibrate(
  full: JobHistory,
  options: { asOfS?: number | undefined; totalSteps?: number | undefined; nowMs: number },
): Calibration {
  const { job } = full;
  const endMs = job.endedAt ?? options.nowMs;
  const cutMs = options.asOfS !== undefined ? job.createdAt + options.asOfS * 1000 : endMs;
  if (options.asOfS !== undefined && cutMs >= endMs) {
    throw new CalibrationError(
      `--as-of ${options.asOfS}s is at or past the ${job.endedAt !== null ? "end" : "present"} of job ${job.id} (${((endMs - job.createdAt) / 1000).toFixed(1)} s after it was created)`,
      "give a time inside the run, or leave --as-of out",
    );
  }
  const history = historyAsOf(full, cutMs);
  const totalSteps = options.totalSteps ?? job.spec.steps;
  if (totalSteps === undefined) {
    throw new CalibrationError(
      `job ${job.id} does not say how many steps it runs (no steps in its spec)`,
      "pass --steps N (the run's total steps), or give the job spec a steps: N",
    );
  }
  if (history.job.endedAt !== null) {
    throw new CalibrationError(
      `job ${job.id} ended (${job.state}) after ${((history.job.endedAt - job.createdAt) / 1000).toFixed(1)} s: nothing left to predict`,
      "pass --as-of SECONDS to predict its end from its first part and compare",
    );
  }

  const steps = [...history.steps].sort((a, b) => a.t - b.t || a.step - b.step);
  const stepNow = steps.reduce((m, s) => Math.max(m, s.step), -Infinity);
  const firstStep = steps.reduce((m, s) => Math.min(m, s.step), Infinity);
  const progressed = steps.length > 0 ? stepNow - firstStep : 0;
  if (progressed < MIN_STEPS) {
    throw new CalibrationError(
      `job ${job.id} has too little history to calibrate a plan: ${Math.max(0, progressed)} step(s) of progress reported${options.asOfS !== undefined ? ` by ${options.asOfS} s` : ""}, at least ${MIN_STEPS} needed to measure the step time`,
      options.asOfS !== undefined
        ? "give a later --as-of"
        : "wait until the job has reported more steps, then run this again",
    );
  }
  if (stepNow >= totalSteps) {
    throw new CalibrationError(
      `job ${job.id} is at step ${stepNow} of ${totalSteps}: nothing left to predict`,
      "pass --steps N with the run's real total, or --as-of an earlier time",
    );
  }

  const { ledger, advice } = jobLedger(history, cutMs);
  const saves = history.events.filter((e) => e.kind === "checkpoint.saved" && typeof e.data.t === "number");
  const saveTimes = saves.map((e) => e.data.t as number);
  // The pace: new steps over the time between two reports of one attempt, leaving out spans with a save in them.
  let paceS = 0;
  let paceSteps = 0;
  for (let i = 1; i < steps.length; i++) {
    const a = steps[i - 1];
    const b = steps[i];
    if (a === undefined || b === undefined || a.attempt !== b.attempt || b.step <= a.step) continue;
    if (saveTimes.some((t) => t > a.t && t <= b.t)) continue;
    paceS += (b.t - a.t) / 1000;
    paceSteps += b.step - a.step;
  }
  if (paceSteps === 0) {
    throw new CalibrationError(
      `job ${job.id} has too little history to calibrate a plan: no two consecutive step reports without a checkpoint save between them`,
      "wait until the job has reported more steps, then run this again",
    );
  }
  const stepTimeS = paceS / paceSteps;

  const t = ledger.totals;
  const runningS = (t.productive + t.degraded + t.lost + t.checkpoint) / 1000;
  const nodes = job.spec.nodes;
  const failures = ledger.incidents.filter((i) => i.endedAttempt);
  // Rates from real failures only: a drill says nothing about how often the fleet fails.
  const real = new Map<string, number>();
  for (const f of failures) if (f.injected === null) real.set(f.cause, (real.get(f.cause) ?? 0) + 1);
  const byCause = new Map<string, number[]>();
  for (const f of failures) byCause.set(f.cause, [...(byCause.get(f.cause) ?? []), f.detectionMs / 1000]);
  const causes: MeasuredCause[] = [...byCause.entries()]
    .filter(([cause]) => real.has(cause))
    .map(([cause, detections]) => {
      const detect = meanAndCv(detections);
      const count = real.get(cause) ?? 0;
      return {
        cause,
        count,
        perNodeDay: runningS > 0 ? count / (runningS / SECONDS_PER_DAY) / nodes : 0,
        detectS: detect.mean,
        detectCv: detect.cv,
      };
    });
  // Restart: detection -> the next attempt's first step, as the ledger measures it (stop, backoff, launch, load).
  // With none measured yet, the first attempt's start -> first step stands in for it.
  const restarts = failures.flatMap((f) => (f.timeToFirstStepMs === null ? [] : [f.timeToFirstStepMs / 1000]));
  const firstAttempt = history.attempts.find((a) => a.n === 1);
  const firstReport = steps.find((s) => s.attempt === 1);
  const startup = firstAttempt && firstReport ? Math.max(0, (firstReport.t - firstAttempt.startedAt) / 1000) : 0;
  const restart = restarts.length > 0 ? meanAndCv(restarts) : { mean: startup, cv: 0 };
  const saveS = advice.saveMs !== null ? advice.saveMs / 1000 : 0;
  // The interval in use: the job's checkpoint spacing in steps (across attempts: a restart may leave one save per
  // attempt) at the measured pace; else the advisor's mean time between saves within an attempt.
  const savedSteps = [...new Set(saves.map((e) => e.data.step).filter((x): x is number => typeof x === "number"))].sort(
    (a, b) => a - b,
  );
  const gaps = savedSteps.slice(1).map((step, i) => step - (savedSteps[i] ?? step));
  const medianGap = gaps.length > 0 ? [...gaps].sort((a, b) => a - b)[Math.floor(gaps.length / 2)] : undefined;
  const intervalS =
    medianGap !== undefined && medianGap > 0
      ? medianGap * stepTimeS
      : advice.intervalInUseMs !== null
        ? Math.max(stepTimeS, (advice.intervalInUseMs - (advice.saveMs ?? 0)) / 1000)
        : null;

  return {
    jobId: job.id,
    elapsedS: (cutMs - job.createdAt) / 1000,
    cut: options.asOfS !== undefined,
    stepNow,
    totalSteps,
    remainingSteps: totalSteps - stepNow,
    stepTimeS,
    runningS,
    nodes,
    devicesPerNode: job.spec.procsPerNode,
    causes,
    injectedLeftOut: failures.filter((f) => f.injected !== null).length,
    restartS: restart.mean,
    restartCv: restart.cv,
    restartsMeasured: restarts.length,
    saveS,
    intervalS,
    goodputSoFar: ledger.goodput,
    advice,
  };
}

const round = (x: number, digits = 4): number => Number(x.toPrecision(digits));
const spread = (mean: number, cv: number): number | { mean: number; cv: number } =>
  cv > 0 ? { mean: round(mean), cv: round(cv, 3) } : round(mean);

/** The plan (as plan-file YAML would hold it) for the rest of the run, on the job's own nodes. */
export function planFromCalibration(c: Calibration): Record<string, unknown> {
  return {
    scenarios: [
      {
        name: "rest-of-run",
        description: `job ${c.jobId} from step ${c.stepNow} to ${c.totalSteps}, calibrated from its first ${c.elapsedS.toFixed(0)} s`,
        fleet: {
          device: "measured",
          devices: c.nodes * c.devicesPerNode,
          devices_per_node: c.devicesPerNode,
          // The measured restart already includes any move to other nodes, so no node is modelled as lost.
          failures: c.causes.map((m) => ({
            cause: m.cause,
            per_node_day: round(m.perNodeDay, 6),
            detect: spread(m.detectS, m.detectCv),
            replaces_node: false,
          })),
        },
        workload: { steps: c.remainingSteps, step_time: round(c.stepTimeS) },
        checkpoint: {
          interval: c.intervalS === null ? "optimal" : round(c.intervalS),
          save: round(c.saveS),
          load: 0,
        },
        recovery: { restart: spread(c.restartS, c.restartCv) },
      },
    ],
  };
}
