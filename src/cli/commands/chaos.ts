import { Argument, Command, InvalidArgumentError, Option } from "commander";
import { terminalJobStates, type JobState } from "../../core/states.js";
import { chaosActions, normalizeRate } from "../../supervisor/chaos.js";
import { CliError, connect, ExitCode } from "../client.js";
import { globals, selfCommand } from "../context.js";

/** Actions on a running attempt's processes (the others act on files). */
const processActions: ReadonlySet<string> = new Set([
  "kill-rank",
  "hang-rank",
  "slow-rank",
  "nan",
  "resume-rank",
  "degrade-link",
]);

/** Actions on a host's link (the Slurm testbed). */
const linkActions: ReadonlySet<string> = new Set(["degrade-link", "heal-link"]);

interface ChaosOptions {
  rank?: number;
  node?: string;
  rate?: string;
  burst?: string;
}

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
    .addOption(
      new Option(
        "--node <host>",
        "degrade-link, heal-link: the host whose link (default: the highest rank's host)",
      ).argParser((v: string) => {
        if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(v)) throw new InvalidArgumentError(`"${v}" is not a host name`);
        return v;
      }),
    )
    .addOption(
      new Option("--rate <rate>", "degrade-link: the link's rate both ways, e.g. 5mbit, 100mbit, 1gbit").argParser(
        (v: string) => {
          const rate = normalizeRate(v);
          if (rate === null) throw new InvalidArgumentError(`"${v}" is not a rate like 5mbit or 100mbit`);
          return rate;
        },
      ),
    )
    .addOption(
      new Option("--burst <size>", "degrade-link: bytes let through at full speed first, e.g. 40mb").argParser(
        (v: string) => {
          if (!/^[0-9]{1,9}(b|kb|mb)$/.test(v))
            throw new InvalidArgumentError(`"${v}" is not a size like 64kb or 40mb`);
          return v;
        },
      ),
    )
    .action(async (job: string, action: string, opts: ChaosOptions, cmd: Command) => {
      const g = globals(cmd);
      if (action === "degrade-link" && opts.rate === undefined) {
        throw new CliError("degrade-link needs the link's rate", ExitCode.Usage, `add --rate 5mbit`);
      }
      if (action !== "degrade-link" && (opts.rate !== undefined || opts.burst !== undefined)) {
        throw new CliError(`--rate and --burst go with degrade-link, not ${action}`, ExitCode.Usage, "leave them out");
      }
      if (opts.node !== undefined && !linkActions.has(action)) {
        throw new CliError(`--node goes with degrade-link and heal-link, not ${action}`, ExitCode.Usage, "use --rank");
      }
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
        node: opts.node,
        rate: opts.rate,
        burst: opts.burst,
      });
      console.log(g.json ? JSON.stringify(result) : result.message);
    });
}
