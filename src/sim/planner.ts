/** The planner's entry point: plan file -> simulated scenarios -> summaries. */
import { readFileSync } from "node:fs";
import { compilePlan, type CompiledPlan } from "./compile.js";
import { simulateScenario, type ScenarioRun } from "./engine.js";
import { parsePlan, PlanFileError, type Plan } from "./plan-file.js";
import { scenarioSeed } from "./rng.js";
import { summarize, type ScenarioSummary } from "./summary.js";

export const DEFAULT_TRIALS = 1000;
export const DEFAULT_SEED = 1;

export interface PlanOptions {
  trials?: number;
  seed?: number;
  /** Only these scenarios (by name); every scenario when absent. */
  scenarios?: string[];
}

export interface PlanResult {
  trials: number;
  seed: number;
  causes: string[];
  scenarios: ScenarioSummary[];
}

/** Reads and validates a plan file; throws PlanFileError naming the file, YAML path, line and fix. */
export function loadPlanFile(path: string): Plan {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason =
      code === "ENOENT" ? "the plan file does not exist" : `the plan file cannot be read (${code ?? String(err)})`;
    throw new PlanFileError([{ file: path, path: "", line: 0, column: 0, message: reason, fix: "check the path" }]);
  }
  return parsePlan(text, path);
}

export function runPlan(plan: Plan, options: PlanOptions = {}): PlanResult {
  const trials = options.trials ?? DEFAULT_TRIALS;
  const seed = options.seed ?? DEFAULT_SEED;
  const compiled: CompiledPlan = compilePlan(plan);
  const wanted = options.scenarios;
  const scenarios = compiled.scenarios.filter((s) => wanted === undefined || wanted.includes(s.name));
  const summaries = scenarios.map((scenario) => {
    // Each scenario draws from its own stream, so filtering scenarios does not change any scenario's numbers.
    const run: ScenarioRun = simulateScenario(compiled, scenario, { trials, seed: scenarioSeed(seed, scenario.name) });
    return summarize(compiled, run);
  });
  return { trials, seed, causes: compiled.causes, scenarios: summaries };
}
