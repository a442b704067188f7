/** Builders shared by the planner's tests: plan files written as objects, validated like real files. */
import { stringify } from "yaml";
import { compilePlan, type CompiledPlan } from "./compile.js";
import { simulateScenario, type ScenarioRun } from "./engine.js";
import { parsePlan, type Plan } from "./plan-file.js";
import { summarize, type ScenarioSummary } from "./summary.js";

/** Goes through YAML text on purpose, so tests exercise the same path as plan files. */
export function planFrom(value: unknown): Plan {
  return parsePlan(stringify(value), "test-plan.yaml");
}

export function simulate(
  plan: Plan,
  options: { trials: number; seed: number; scenario?: string },
): { compiled: CompiledPlan; run: ScenarioRun; summary: ScenarioSummary } {
  const compiled = compilePlan(plan);
  const scenario = compiled.scenarios.find((s) => options.scenario === undefined || s.name === options.scenario);
  if (scenario === undefined) throw new Error(`no scenario ${options.scenario}`);
  const run = simulateScenario(compiled, scenario, { trials: options.trials, seed: options.seed });
  return { compiled, run, summary: summarize(compiled, run) };
}
