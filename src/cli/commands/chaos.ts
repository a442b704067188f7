import { Argument, Command, Option } from "commander";
import { chaosActions } from "../../supervisor/chaos.js";
import { connect } from "../client.js";
import { globals } from "../context.js";

export function registerChaosCommand(program: Command): void {
  program
    .command("chaos")
    .description("inject a fault into a running job's real processes or files, to rehearse recovery")
    .argument("<job>", "job id or name")
    .addArgument(new Argument("<action>", "fault to inject").choices(chaosActions))
    .addOption(new Option("-r, --rank <n>", "target rank (default: the highest running rank)").argParser(Number))
    .action(async (job: string, action: string, opts: { rank?: number }, cmd: Command) => {
      const g = globals(cmd);
      const client = await connect(g.home);
      const result = await client.post<{ message: string }>(`/api/jobs/${encodeURIComponent(job)}/chaos`, {
        action,
        rank: opts.rank,
      });
      console.log(g.json ? JSON.stringify(result) : result.message);
    });
}
