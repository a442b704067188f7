import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { InvalidArgumentError, type Command } from "commander";
import { stringify } from "yaml";
import type { AttemptRecord, EventRecord, IncidentRecord } from "../../store/port.js";
import {
  calibrate,
  CalibrationError,
  jobLedger,
  planFromCalibration,
  type Calibration,
  type JobHistory,
} from "../../sim/calibrate.js";
import { formatDuration } from "../../sim/duration.js";
import { parsePlan, PlanFileError, type Plan } from "../../sim/plan-file.js";
import { DEFAULT_SEED, DEFAULT_TRIALS, loadPlanFile, runPlan, type PlanResult } from "../../sim/planner.js";
import { renderJson, renderTable } from "../../sim/report.js";
import { CliError, connect, ExitCode, type ApiClient } from "../client.js";
import { globals } from "../context.js";
import { completionCdfSvg, lostTimeSvg } from "../../sim/svg.js";

interface PlanCommandOptions {
  json?: boolean;
  trials: number;
  seed: number;
  svg?: string;
  scenario?: string[];
  fromJob?: string;
  asOf?: number;
  steps?: number;
  savePlan?: string;
}

/** Event pages fetched at most (1,000 events each) for --from-job: bounds the work on a very long job. */
const MAX_EVENT_PAGES = 200;

/** `switchyard plan <plan.yaml>`: predict time-to-train and goodput of a run on one or more fleets. */
export function registerPlanCommand(program: Command): void {
  program
    .command("plan")
    .description("Predict time-to-train, goodput and interruptions of a training run on each fleet of a plan file")
    .argument("[plan.yaml]", "plan file (see docs/planner.md); or --from-job")
    .option("--json", "print the results as JSON")
    .option("--trials <n>", "Monte Carlo trials per scenario", integerOption("--trials", 1), DEFAULT_TRIALS)
    .option("--seed <n>", "random seed; the same seed gives the same numbers", integerOption("--seed", 0), DEFAULT_SEED)
    .option("--svg <dir>", "write completion-time CDF and lost-time charts (SVG) into this directory")
    .option("--scenario <name>", "only this scenario (repeatable)", (value: string, previous: string[] | undefined) => [
      ...(previous ?? []),
      value,
    ])
    .option("--from-job <job>", "calibrate a plan from this job's ledger and predict the rest of its run")
    .option(
      "--as-of <seconds>",
      "with --from-job: use only the job's first SECONDS (since it was created), to compare the prediction with what followed",
      numberOption("--as-of"),
    )
    .option(
      "--steps <n>",
      "with --from-job: the run's total steps (default: the job spec's steps)",
      integerOption("--steps", 1),
    )
    .option("--save-plan <file>", "with --from-job: also write the calibrated plan file (YAML) there")
    .action(async (file: string | undefined, options: PlanCommandOptions, command: Command) => {
      // The root program also defines --json; whichever level parsed it, it means JSON here.
      const json = options.json === true || command.optsWithGlobals<{ json?: boolean }>().json === true;
      if (options.fromJob !== undefined) {
        if (file !== undefined) {
          throw new CliError(
            `both a plan file (${file}) and --from-job ${options.fromJob} given`,
            ExitCode.Usage,
            "give one of them",
          );
        }
        process.exitCode = await fromJobCommand(options.fromJob, { ...options, json }, globals(command).home);
        return;
      }
      if (file === undefined) {
        throw new CliError("no plan file given", ExitCode.Usage, "switchyard plan <plan.yaml>, or --from-job JOB");
      }
      for (const [flag, value] of [
        ["--as-of", options.asOf],
        ["--steps", options.steps],
        ["--save-plan", options.savePlan],
      ] as const) {
        if (value !== undefined)
          throw new CliError(`${flag} needs --from-job`, ExitCode.Usage, `drop ${flag}, or add --from-job JOB`);
      }
      process.exitCode = planCommand(file, { ...options, json });
    });
}

function planCommand(file: string, options: PlanCommandOptions): number {
  let plan;
  try {
    plan = loadPlanFile(file);
  } catch (err) {
    // One error path for the CLI: main() prints it (as JSON under --json) and exits 2.
    if (err instanceof PlanFileError) {
      // Every issue carries its own fix (docs/planner.md has the format); --json lists them as `issues`.
      throw new CliError(err.message, ExitCode.Usage, undefined, err.issues);
    }
    throw err;
  }
  const known = plan.scenarios.map((s) => s.name);
  const unknown = (options.scenario ?? []).filter((name) => !known.includes(name));
  if (unknown.length > 0) {
    throw new CliError(
      `${file}: no scenario named ${unknown.map((n) => `"${n}"`).join(", ")}`,
      ExitCode.Usage,
      `use one of: ${known.join(", ")}`,
    );
  }

  const result = runPlan(plan, { trials: options.trials, seed: options.seed, scenarios: options.scenario });
  writeCharts(result, options);
  console.log(options.json ? renderJson(result) : renderTable(result));
  return 0;
}

function writeCharts(result: PlanResult, options: PlanCommandOptions): void {
  if (options.svg !== undefined) {
    mkdirSync(options.svg, { recursive: true });
    const cdfPath = join(options.svg, "completion-cdf.svg");
    const lostPath = join(options.svg, "lost-time.svg");
    writeFileSync(cdfPath, completionCdfSvg(result.scenarios));
    writeFileSync(lostPath, lostTimeSvg(result.scenarios));
    if (!options.json) console.error(`charts: ${cdfPath}, ${lostPath}`);
  }
}

/** Everything the API holds about a job that its ledger needs. */
async function fetchHistory(client: ApiClient, job: string): Promise<JobHistory> {
  const id = encodeURIComponent(job);
  const detail = await client.get<JobHistory["job"] & { attempts: AttemptRecord[]; incidents: IncidentRecord[] }>(
    `/api/jobs/${id}`,
  );
  const events: EventRecord[] = [];
  for (let page = 0, after = 0; page < MAX_EVENT_PAGES; page++) {
    const batch = await client.get<EventRecord[]>(`/api/jobs/${id}/events?after=${after}`);
    events.push(...batch);
    const last = batch.at(-1);
    if (last === undefined || batch.length < 1000) break;
    after = last.id;
  }
  const steps = await client.get<Array<{ attempt: number; step: number; t: number }>>(`/api/jobs/${id}/steps?rank=0`);
  return {
    job: {
      id: detail.id,
      name: detail.name,
      state: detail.state,
      createdAt: detail.createdAt,
      endedAt: detail.endedAt,
      spec: detail.spec,
    },
    attempts: detail.attempts,
    incidents: detail.incidents,
    events,
    steps: steps.map((s) => ({ attempt: s.attempt, step: s.step, t: s.t })),
  };
}

/** `plan --from-job JOB`: measure the run so far, plan the rest of it, predict. */
async function fromJobCommand(job: string, options: PlanCommandOptions, home: string): Promise<number> {
  const client = await connect(home);
  const history = await fetchHistory(client, job);
  let calibration: Calibration;
  try {
    calibration = calibrate(history, { asOfS: options.asOf, totalSteps: options.steps, nowMs: Date.now() });
  } catch (err) {
    if (err instanceof CalibrationError) throw new CliError(err.message, ExitCode.Usage, err.fix);
    throw err;
  }
  const planObject = planFromCalibration(calibration);
  const yaml = stringify(planObject);
  // The calibrated plan goes through the same validation as a plan file.
  const plan: Plan = parsePlan(yaml, `plan calibrated from job ${calibration.jobId}`);
  if (options.savePlan !== undefined) writeFileSync(options.savePlan, yaml, { mode: 0o600 });
  const result = runPlan(plan, { trials: options.trials, seed: options.seed });
  writeCharts(result, options);
  const summary = result.scenarios[0];
  const rest = summary?.timeToTrain;
  const predicted =
    rest === undefined
      ? undefined
      : {
          restP10S: rest.p10S,
          restP50S: rest.p50S,
          restP90S: rest.p90S,
          totalP10S: calibration.elapsedS + rest.p10S,
          totalP50S: calibration.elapsedS + rest.p50S,
          totalP90S: calibration.elapsedS + rest.p90S,
          goodputRest: summary?.ettr.mean ?? 0,
        };
  // A job that has ended and was cut (--as-of): what really happened after the cut.
  let actual: { state: string; totalS: number; restS: number; goodput: number; restarts: number } | undefined;
  if (calibration.cut && history.job.endedAt !== null) {
    const { ledger } = jobLedger(history, history.job.endedAt);
    const cutMs = history.job.createdAt + calibration.elapsedS * 1000;
    actual = {
      state: history.job.state,
      totalS: (history.job.endedAt - history.job.createdAt) / 1000,
      restS: (history.job.endedAt - cutMs) / 1000,
      goodput: ledger.goodput,
      restarts: ledger.incidents.filter((i) => i.endedAttempt).length,
    };
  }
  if (options.json) {
    console.log(
      JSON.stringify(
        {
          job: calibration.jobId,
          calibration,
          plan: planObject,
          predicted,
          actual,
          result: JSON.parse(renderJson(result)) as unknown,
        },
        null,
        2,
      ),
    );
    return 0;
  }
  console.log(calibrationText(calibration, predicted, actual));
  console.log("");
  console.log(renderTable(result));
  if (options.savePlan !== undefined) console.error(`calibrated plan: ${options.savePlan}`);
  return 0;
}

function calibrationText(
  c: Calibration,
  predicted:
    { totalP10S: number; totalP50S: number; totalP90S: number; restP50S: number; goodputRest: number } | undefined,
  actual: { state: string; totalS: number; restS: number; goodput: number } | undefined,
): string {
  const lines = [
    `calibrated from job ${c.jobId}: ${c.cut ? "its first " : ""}${formatDuration(c.elapsedS)}, step ${c.stepNow} of ${c.totalSteps} (goodput so far ${(c.goodputSoFar * 100).toFixed(1)}%)`,
    `  step time ${c.stepTimeS.toFixed(3)} s; running ${formatDuration(c.runningS)} on ${c.nodes} node(s)`,
    ...(c.causes.length === 0
      ? ["  no failure yet: the rest is predicted without failures"]
      : c.causes.map(
          (m) =>
            `  ${m.cause}: ${m.count} failure(s), ${m.perNodeDay.toPrecision(3)} per node-day, detected in ${m.detectS.toFixed(1)} s`,
        )),
    ...(c.injectedLeftOut > 0
      ? [
          `  ${c.injectedLeftOut} injected fault(s) (switchyard chaos) not counted as failures; their detection and restart times are used`,
        ]
      : []),
    `  restart (detection -> first step) ${c.restartS.toFixed(1)} s${c.restartsMeasured === 0 ? " (none yet: the first start stands in)" : ` over ${c.restartsMeasured}`}; save ${c.saveS.toFixed(2)} s; interval ${c.intervalS === null ? "optimal (none measured)" : `${c.intervalS.toFixed(1)} s`}`,
  ];
  if (predicted !== undefined) {
    lines.push(
      `predicted: the rest takes ${formatDuration(predicted.restP50S)} (p50); whole run ${formatDuration(predicted.totalP10S)} / ${formatDuration(predicted.totalP50S)} / ${formatDuration(predicted.totalP90S)} (p10 / p50 / p90), goodput of the rest ${(predicted.goodputRest * 100).toFixed(1)}%`,
    );
  }
  if (actual !== undefined) {
    lines.push(
      `actual: ${actual.state} after ${formatDuration(actual.totalS)} (the rest took ${formatDuration(actual.restS)}), goodput ${(actual.goodput * 100).toFixed(1)}%`,
    );
  }
  return lines.join("\n");
}

function numberOption(flag: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isFinite(n) || n <= 0 || n > 1e9)
      throw new InvalidArgumentError(`${flag} takes seconds above 0, got "${value}".`);
    return n;
  };
}

function integerOption(flag: string, min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min)
      throw new InvalidArgumentError(`${flag} takes a whole number >= ${min}, got "${value}".`);
    return n;
  };
}
