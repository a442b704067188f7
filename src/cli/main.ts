import { Command, CommanderError } from "commander";
import { SpecError } from "../core/spec-errors.js";
import { CliError, ExitCode } from "./client.js";
import { version } from "./context.js";
import { registerChaosCommand } from "./commands/chaos.js";
import { registerDemoCommand } from "./commands/demo.js";
import { registerGatewayCommand } from "./commands/gateway.js";
import { registerJobCommands } from "./commands/jobs.js";
import { registerPlanCommand } from "./commands/plan.js";
import { registerReportCommand } from "./commands/report.js";
import { registerServeCommand } from "./commands/serve.js";
import { registerServerCommands } from "./commands/server.js";
import { registerServicesCommands } from "./commands/services.js";

export function buildProgram(opts: { json?: boolean } = {}): Command {
  const program = new Command("switchyard")
    .description("Keeps AI training and inference running on mixed, unreliable accelerator fleets")
    .version(version)
    .option("--home <dir>", "state folder (default: $SWITCHYARD_HOME or ~/.switchyard)")
    .option("--json", 'machine-readable output (errors too: {"error", "fix", "exitCode"})')
    .exitOverride()
    // Commander's own usage errors (unknown option, missing argument) go through the same printer as ours.
    .configureOutput({
      outputError: (text, write) => {
        const message = text.trim().replace(/^error: /, "");
        if (opts.json) write(JSON.stringify({ error: message, fix: "see --help", exitCode: ExitCode.Usage }) + "\n");
        else write(`switchyard: ${message} (fix: see --help)\n`);
      },
    });
  registerServerCommands(program);
  registerJobCommands(program);
  registerReportCommand(program);
  registerChaosCommand(program);
  registerDemoCommand(program);
  registerPlanCommand(program);
  registerGatewayCommand(program);
  registerServeCommand(program);
  registerServicesCommands(program);
  return program;
}

/** Runs the CLI; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const json = wantsJson(argv);
  const program = buildProgram({ json });
  // Ctrl-C anywhere is exit 4 with a word, not a silent 130; commands that detach cleanly (follow) add their own.
  const onSigint = () => {
    if (process.listenerCount("SIGINT") > 1) return;
    printError(new CliError("interrupted", ExitCode.Cancelled), json);
    process.exit(ExitCode.Cancelled);
  };
  process.on("SIGINT", onSigint);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : ExitCode.Usage;
    if (err instanceof CliError) {
      printError(err, json);
      return err.exitCode;
    }
    // A user's file that failed validation (spec, cluster, services, plan, keys): bad input, every issue listed.
    if (err instanceof SpecError) {
      printError(new CliError(err.message, ExitCode.Usage, undefined, err.issues), json);
      return ExitCode.Usage;
    }
    // A bug or an unforeseen failure: still one line in the one format, with the stack only when asked for.
    const message = err instanceof Error ? err.message : String(err);
    printError(
      new CliError(`unexpected error: ${message}`, ExitCode.JobFailed, "rerun with SWITCHYARD_DEBUG=1 for the stack"),
      json,
    );
    if (process.env.SWITCHYARD_DEBUG && err instanceof Error) console.error(err.stack);
    return ExitCode.JobFailed;
  } finally {
    process.removeListener("SIGINT", onSigint);
  }
}

/** --json anywhere before a `--` means every line this process prints is JSON, errors included. */
export function wantsJson(argv: string[]): boolean {
  const end = argv.indexOf("--");
  return (end === -1 ? argv : argv.slice(0, end)).includes("--json");
}

export function printError(err: CliError, json: boolean): void {
  if (json) {
    // A file's issues each carry their fix (printed on their own lines); JSON still has one top-level fix.
    const issues = err.issues?.length ? err.issues : undefined;
    const fix =
      err.fix ??
      (issues === undefined ? undefined : issues.length === 1 ? issues[0]!.fix : "correct each of the issues listed");
    console.error(
      JSON.stringify({
        error: err.message,
        ...(fix ? { fix } : {}),
        exitCode: err.exitCode,
        ...(issues && { issues }),
      }),
    );
  } else {
    console.error(`switchyard: ${err.message}${err.fix ? ` (fix: ${err.fix})` : ""}`);
  }
}
