import { readFileSync } from "node:fs";
import path from "node:path";
import { Command } from "commander";
import { terminalJobStates, type JobState } from "../../core/states.js";
import type { EventRecord, IncidentRecord, NodeRecord, StepSample } from "../../store/port.js";
import { CliError, connect, ExitCode, type ApiClient } from "../client.js";
import { globals } from "../context.js";
import { clock, duration, table } from "../format.js";

export interface JobSummary {
  id: string;
  name: string;
  state: JobState;
  reason: string | null;
  restarts: number;
  createdAt: number;
  endedAt: number | null;
  steps: number | null;
  last?: StepSample | null;
}

export interface JobDetail extends JobSummary {
  incidents: IncidentRecord[];
  last: StepSample | null;
}

export function registerJobCommands(program: Command): void {
  program
    .command("run")
    .description("submit a job spec (YAML) to the supervisor")
    .argument("<job.yaml>", "job spec")
    .option("-f, --follow", "stay attached: live progress, incidents, and the final state as exit code")
    .option("--cluster <file>", "cluster config for a server this command starts")
    .action(async (file: string, opts: { follow?: boolean; cluster?: string }, cmd: Command) => {
      const g = globals(cmd);
      let yaml: string;
      try {
        yaml = readFileSync(file, "utf8");
      } catch (err) {
        throw new CliError(`cannot read job spec ${file}: ${(err as Error).message}`, ExitCode.Usage);
      }
      const client = await connect(g.home, { clusterFile: opts.cluster });
      const job = await client.post<JobSummary>("/api/jobs", { yaml, file: path.resolve(file) });
      if (!opts.follow) {
        console.log(g.json ? JSON.stringify(job) : `submitted ${job.id}`);
        return;
      }
      if (!g.json) console.log(`submitted ${job.id}; following (Ctrl-C detaches, the job keeps running)`);
      process.exitCode = await follow(client, job.id, g.json);
    });

  program
    .command("ps")
    .description("list jobs")
    .option("-a, --all", "include finished jobs")
    .action(async (opts: { all?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const client = await connect(g.home);
      const jobs = (await client.get<JobSummary[]>("/api/jobs")).filter(
        (j) => opts.all || !terminalJobStates.has(j.state),
      );
      if (g.json) return console.log(JSON.stringify(jobs));
      if (jobs.length === 0) return console.log(opts.all ? "no jobs" : "no active jobs (-a shows finished ones)");
      console.log(
        table(
          ["JOB", "STATE", "STEP", "LOSS", "RESTARTS", "AGE", "REASON"],
          jobs.map((j) => [
            j.id,
            j.state,
            j.last ? `${j.last.step}${j.steps ? `/${j.steps}` : ""}` : "-",
            j.last?.loss?.toFixed(4),
            j.restarts,
            duration((j.endedAt ?? Date.now()) - j.createdAt),
            j.reason,
          ]),
        ),
      );
    });

  program
    .command("status")
    .description("one job in detail: state, progress, attempts, incidents")
    .argument("<job>", "job id or name")
    .action(async (job: string, _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const client = await connect(g.home);
      const detail = await client.get<JobDetail & { attempts: Array<Record<string, unknown>> }>(
        `/api/jobs/${enc(job)}`,
      );
      if (g.json) return console.log(JSON.stringify(detail));
      console.log(`${detail.id}  ${detail.state}${detail.reason ? ` (${detail.reason})` : ""}`);
      console.log(`progress  ${progressLine(detail)}`);
      console.log(`attempts  ${detail.attempts.length}, restarts ${detail.restarts}`);
      for (const i of detail.incidents) {
        console.log(
          `incident  #${i.id} attempt ${i.attempt} ${i.cause} rank ${i.culpritRank ?? "-"} on ${i.culpritNode ?? "-"}: ${i.summary}`,
        );
      }
    });

  program
    .command("logs")
    .description("a rank's log")
    .argument("<job>", "job id or name")
    .option("-r, --rank <n>", "rank", "0")
    .option("--attempt <n>", "attempt (default: the latest)")
    .option("-f, --follow", "keep printing as the log grows, across restarts, until the job ends")
    .action(async (job: string, opts: { rank: string; attempt?: string; follow?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const client = await connect(g.home);
      let attempt = opts.attempt;
      let offset = 0;
      for (;;) {
        const q = new URLSearchParams({ rank: opts.rank, offset: String(offset) });
        if (attempt) q.set("attempt", attempt);
        const chunk = await client.get<{ text: string; offset: number; attempt: number }>(
          `/api/jobs/${enc(job)}/logs?${q}`,
        );
        process.stdout.write(chunk.text);
        offset = chunk.offset;
        if (!opts.follow) return;
        const detail = await client.get<JobSummary & { attempts: Array<{ n: number }> }>(`/api/jobs/${enc(job)}`);
        const latest = detail.attempts[detail.attempts.length - 1]?.n;
        if (!opts.attempt && latest !== undefined && String(latest) !== String(chunk.attempt)) {
          attempt = String(latest);
          offset = 0;
          process.stdout.write(`--- attempt ${latest} ---\n`);
          continue;
        }
        if (terminalJobStates.has(detail.state) && chunk.text === "") return;
        await sleep(500);
      }
    });

  program
    .command("events")
    .description("what the supervisor saw and did for a job")
    .argument("<job>", "job id or name")
    .action(async (job: string, _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const client = await connect(g.home);
      const events = await client.get<EventRecord[]>(`/api/jobs/${enc(job)}/events`);
      if (g.json) return console.log(JSON.stringify(events));
      for (const e of events) console.log(formatEvent(e));
    });

  program
    .command("cancel")
    .description("stop a job's ranks and mark it cancelled")
    .argument("<job>", "job id or name")
    .action(async (job: string, _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const client = await connect(g.home);
      const result = await client.post<JobSummary>(`/api/jobs/${enc(job)}/cancel`);
      console.log(g.json ? JSON.stringify(result) : `${result.id} ${result.state}`);
    });

  const nodes = program.command("nodes").description("nodes of every pool, with strikes and cordons");
  nodes.action(async (_opts: unknown, cmd: Command) => {
    const g = globals(cmd);
    const client = await connect(g.home);
    const list = await client.get<NodeRecord[]>("/api/nodes");
    if (g.json) return console.log(JSON.stringify(list));
    console.log(
      table(
        ["NODE", "POOL", "DEVICES", "STATE", "STRIKES", "REASON"],
        list.map((n) => [n.name, n.pool, n.devices, n.cordoned ? "cordoned" : "ready", n.strikes, n.reason]),
      ),
    );
  });
  for (const action of ["cordon", "uncordon"] as const) {
    nodes
      .command(action)
      .description(action === "cordon" ? "keep new attempts off a node" : "let a node take work again (clears strikes)")
      .argument("<node>", "node name")
      .option("--reason <text>", "why", "by user")
      .action(async (node: string, opts: { reason: string }, cmd: Command) => {
        const g = globals(cmd);
        const client = await connect(g.home);
        const result = await client.post<NodeRecord>(`/api/nodes/${enc(node)}/${action}`, { reason: opts.reason });
        console.log(g.json ? JSON.stringify(result) : `${result.name} ${result.cordoned ? "cordoned" : "ready"}`);
      });
  }
}

function enc(s: string): string {
  return encodeURIComponent(s);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function formatEvent(e: EventRecord): string {
  return `${clock(e.t)}  ${e.kind.padEnd(18)} ${e.message}`;
}

export function progressLine(j: JobSummary): string {
  const last = j.last;
  const step = last ? `step ${last.step}${j.steps ? `/${j.steps}` : ""}` : "step -";
  const loss = last?.loss !== null && last?.loss !== undefined ? `loss ${last.loss.toFixed(4)}` : "loss -";
  return `${step}  ${loss}  restarts ${j.restarts}  ${j.state}`;
}

/** Streams progress and events of a job until it ends; resolves to the exit code its final state calls for. */
export async function follow(client: ApiClient, jobId: string, json: boolean): Promise<number> {
  let lastEvent = 0;
  const tty = process.stdout.isTTY && !json;
  let lastLine = "";
  for (;;) {
    const [job, events] = await Promise.all([
      client.get<JobDetail>(`/api/jobs/${enc(jobId)}`),
      client.get<EventRecord[]>(`/api/jobs/${enc(jobId)}/events?after=${lastEvent}`),
    ]);
    for (const e of events) {
      lastEvent = e.id;
      if (json) console.log(JSON.stringify({ type: "event", ...e }));
      else {
        if (tty) process.stdout.write("\r\x1b[2K");
        console.log(formatEvent(e));
      }
    }
    const line = progressLine(job);
    if (json) {
      if (line !== lastLine)
        console.log(JSON.stringify({ type: "progress", state: job.state, last: job.last, restarts: job.restarts }));
    } else if (tty) process.stdout.write(`\r\x1b[2K${line}`);
    else if (line !== lastLine) console.log(line);
    lastLine = line;
    if (terminalJobStates.has(job.state)) {
      if (tty) process.stdout.write("\n");
      if (!json) console.log(`${job.id} ${job.state}${job.reason ? `: ${job.reason}` : ""}`);
      return job.state === "SUCCEEDED"
        ? ExitCode.Ok
        : job.state === "CANCELLED"
          ? ExitCode.Cancelled
          : ExitCode.JobFailed;
    }
    await sleep(500);
  }
}
