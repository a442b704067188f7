import { Command, CommanderError } from "commander";
import { registerPlanCommand } from "./commands/plan.js";
import { registerGatewayCommand } from "./commands/gateway.js";

export function buildProgram(): Command {
  const program = new Command("switchyard")
    .description("Keeps AI training and inference running on mixed, unreliable accelerator fleets")
    .version("0.1.0")
    .exitOverride();
  registerPlanCommand(program);
  registerGatewayCommand(program);
  return program;
}

/** Runs the CLI; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    throw err;
  }
}
