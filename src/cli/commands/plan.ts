import type { Command } from "commander";

/** `switchyard plan`: placeholder until the planner lands. */
export function registerPlanCommand(_program: Command): void {}
