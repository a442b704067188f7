import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { InvalidArgumentError, type Command } from "commander";
import { PlanFileError } from "../../sim/plan-file.js";
import { DEFAULT_SEED, DEFAULT_TRIALS, loadPlanFile, runPlan } from "../../sim/planner.js";
import { renderJson, renderTable } from "../../sim/report.js";
import { CliError, ExitCode } from "../client.js";
import { completionCdfSvg, lostTimeSvg } from "../../sim/svg.js";

interface PlanCommandOptions {
  json?: boolean;
  trials: number;
  seed: number;
  svg?: string;
  scenario?: string[];
}

/** `switchyard plan <plan.yaml>`: predict time-to-train and goodput of a run on one or more fleets. */
export function registerPlanCommand(program: Command): void {
  program
    .command("plan")
    .description("Predict time-to-train, goodput and interruptions of a training run on each fleet of a plan file")
    .argument("<plan.yaml>", "plan file (see docs/planner.md)")
    .option("--json", "print the results as JSON")
    .option("--trials <n>", "Monte Carlo trials per scenario", integerOption("--trials", 1), DEFAULT_TRIALS)
    .option("--seed <n>", "random seed; the same seed gives the same numbers", integerOption("--seed", 0), DEFAULT_SEED)
    .option("--svg <dir>", "write completion-time CDF and lost-time charts (SVG) into this directory")
    .option("--scenario <name>", "only this scenario (repeatable)", (value: string, previous: string[] | undefined) => [
      ...(previous ?? []),
      value,
    ])
    .action((file: string, options: PlanCommandOptions, command: Command) => {
      // The root program also defines --json; whichever level parsed it, it means JSON here.
      const json = options.json === true || command.optsWithGlobals<{ json?: boolean }>().json === true;
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
      throw new CliError(`invalid plan file\n${err.message}`, ExitCode.Usage, "see docs/planner.md for the format");
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
  if (options.svg !== undefined) {
    mkdirSync(options.svg, { recursive: true });
    const cdfPath = join(options.svg, "completion-cdf.svg");
    const lostPath = join(options.svg, "lost-time.svg");
    writeFileSync(cdfPath, completionCdfSvg(result.scenarios));
    writeFileSync(lostPath, lostTimeSvg(result.scenarios));
    if (!options.json) console.error(`charts: ${cdfPath}, ${lostPath}`);
  }
  console.log(options.json ? renderJson(result) : renderTable(result));
  return 0;
}

function integerOption(flag: string, min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min)
      throw new InvalidArgumentError(`${flag} takes a whole number >= ${min}, got "${value}".`);
    return n;
  };
}
