import { Argument, Command, InvalidArgumentError, Option } from "commander";
import { terminalJobStates, type JobState } from "../../core/states.js";
import { chaosActions } from "../../supervisor/chaos.js";
import { CliError, connect, ExitCode } from "../client.js";
import { globals, selfCommand } from "../context.js";

/** Actions on a running attempt's processes (the others act on files). */
const processActions: ReadonlySet<string> = new Set(["kill-rank", "hang-rank", "slow-rank", "nan", "resume-rank"]);

export function registerChaosCommand(program: Command): void {
  program
    .command("chaos")
    .description("inject a fault into a running job's real processes or files, to rehearse recovery")
    .argument("<job>", "job id or name")
    .addArgument(new Argument("<action>", "fault to inject").choices(chaosActions))
    .addOption(
      new Option("-r, --rank <n>", "target rank (default: the highest running rank)").argParser((v: string) => {
        if (!/^\d{1,6}$/.test(v)) throw new InvalidArgumentError(`takes a rank number, got "${v}"`);
        return Number(v);
      }),
    )
    .action(async (job: string, action: string, opts: { rank?: number }, cmd: Command) => {
      const g = globals(cmd);
      const client = await connect(g.home);
      const detail = await client.get<{ id: string; state: JobState }>(`/api/jobs/${encodeURIComponent(job)}`);
      if (processActions.has(action) && terminalJobStates.has(detail.state)) {
        throw new CliError(
          `job ${detail.id} is ${detail.state}: ${action} acts on a running job's ranks, and it has none`,
          ExitCode.Usage,
          `pick a running job (${selfCommand(g)} ps)`,
        );
      }
      const result = await client.post<{ message: string }>(`/api/jobs/${encodeURIComponent(detail.id)}/chaos`, {
        action,
        rank: opts.rank,
      });
      console.log(g.json ? JSON.stringify(result) : result.message);
    });
}
