import { readFileSync } from "node:fs";
import path from "node:path";
import { parseDocument, type YAMLSeq } from "yaml";
import { Command } from "commander";
import { terminalJobStates } from "../../core/states.js";
import { packageRoot } from "../../paths.js";
import { findPython } from "../../executors/python.js";
import type { EventRecord, NodeRecord } from "../../store/port.js";
import { CliError, connect, ExitCode, serverInfo, type ApiClient } from "../client.js";
import { globals } from "../context.js";
import { duration, table } from "../format.js";
import { formatEvent, progressLine, type JobDetail } from "./jobs.js";
import { formatReport } from "./report.js";
import type { JobReport } from "../../supervisor/report.js";
import { stopServer } from "./server.js";

interface Fault {
  atStep: number;
  action: "kill-rank" | "hang-rank" | "nan" | "corrupt-checkpoint";
  rank?: number;
  why: string;
}

/** A few minutes of what an unstable pool does to a run, compressed: a chip dies, a link hangs, storage rots. */
function schedule(steps: number): Fault[] {
  const at = (fraction: number) => Math.max(2, Math.round(steps * fraction));
  return [
    { atStep: at(0.15), action: "kill-rank", rank: 1, why: "a chip fails and takes its rank down" },
    {
      atStep: at(0.35),
      action: "hang-rank",
      rank: 0,
      why: "a link dies mid-collective: the rank stops, its peer waits",
    },
    { atStep: at(0.55), action: "corrupt-checkpoint", why: "storage flips a byte in the newest checkpoint" },
    { atStep: at(0.55), action: "kill-rank", rank: 0, why: "and the node fails again before the next checkpoint" },
    { atStep: at(0.75), action: "nan", rank: 1, why: "the loss turns NaN (a flaky chip computes garbage)" },
  ];
}

export function registerDemoCommand(program: Command): void {
  program
    .command("demo")
    .description("train the example char-GPT on an unstable local pool with faults injected, and show the recovery")
    .option("--steps <n>", "training steps", "150")
    .option("--no-faults", "train without injected faults")
    .action(async (opts: { steps: string; faults: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const steps = Number(opts.steps);
      if (!Number.isInteger(steps) || steps < 10)
        throw new CliError("--steps must be an integer >= 10", ExitCode.Usage);
      const python = findPython();
      if (!python?.hasTorch) {
        throw new CliError(
          `the demo trains a PyTorch model, but no Python here can import torch (tried ${python?.tried.join(", ") ?? "python3"}). ` +
            "Fix: `apt-get install python3-torch` (Debian), or set SWITCHYARD_PYTHON to an interpreter with torch.",
          ExitCode.Usage,
        );
      }
      const home = path.join(g.home, "demo");
      const exampleDir = path.join(packageRoot, "examples", "chargpt");
      const clusterFile = path.join(exampleDir, "cluster.yaml");
      const running = serverInfo(home);
      if (running && running.clusterFile !== clusterFile) await stopServer(home);
      const client = await connect(home, { clusterFile });
      for (const n of await client.get<NodeRecord[]>("/api/nodes")) {
        if (n.cordoned) await client.post(`/api/nodes/${n.name}/uncordon`, { reason: "demo starts clean" });
      }
      const jobFile = path.join(exampleDir, "job.yaml");
      const yaml = withSteps(readFileSync(jobFile, "utf8"), steps);
      const job = await client.post<{ id: string }>("/api/jobs", { yaml, file: jobFile });
      console.log(`switchyard demo: training ${job.id} (char-level GPT, 2 ranks, gloo on CPU) on pool local-ascend`);
      console.log(`server ${client.url}, state in ${home}\n`);
      const faults = opts.faults ? schedule(steps) : [];
      const code = await watch(client, job.id, faults);
      await summary(client, job.id);
      console.log("\n" + formatReport(await client.get<JobReport>(`/api/jobs/${job.id}/report`)));
      console.log(`\nmore: switchyard --home ${home} events|report|logs ${job.id}`);
      process.exitCode = code;
    });
}

/** The example job with its step count changed in both places that name it (the script's flag and `steps`). */
function withSteps(yaml: string, steps: number): string {
  const doc = parseDocument(yaml);
  const command = doc.get("command") as YAMLSeq<unknown> | undefined;
  const items = command?.items ?? [];
  const at = items.findIndex((item) => String((item as { value?: unknown }).value ?? item) === "--steps");
  if (at < 0) throw new CliError("examples/chargpt/job.yaml: command has no --steps flag to set", ExitCode.Usage);
  command!.set(at + 1, String(steps));
  doc.set("steps", steps);
  return doc.toString();
}

async function watch(client: ApiClient, id: string, faults: Fault[]): Promise<number> {
  const pending = [...faults];
  const tty = process.stdout.isTTY;
  let lastEvent = 0;
  let lastLine = "";
  for (;;) {
    const [job, events] = await Promise.all([
      client.get<JobDetail>(`/api/jobs/${id}`),
      client.get<EventRecord[]>(`/api/jobs/${id}/events?after=${lastEvent}`),
    ]);
    for (const e of events) {
      lastEvent = e.id;
      if (tty) process.stdout.write("\r\x1b[2K");
      console.log(formatEvent(e));
    }
    const line = progressLine(job);
    if (tty) process.stdout.write(`\r\x1b[2K${line}`);
    else if (line !== lastLine && (job.last?.step ?? 0) % 10 === 0) console.log(line);
    lastLine = line;
    if (terminalJobStates.has(job.state)) {
      if (tty) process.stdout.write("\n");
      return job.state === "SUCCEEDED" ? ExitCode.Ok : ExitCode.JobFailed;
    }
    while (job.state === "RUNNING" && pending[0] && (job.last?.step ?? 0) >= pending[0].atStep) {
      const fault = pending.shift()!;
      if (tty) process.stdout.write("\r\x1b[2K");
      console.log(
        `>>> injecting ${fault.action}${fault.rank !== undefined ? ` on rank ${fault.rank}` : ""}: ${fault.why}`,
      );
      await client.post(`/api/jobs/${id}/chaos`, { action: fault.action, rank: fault.rank }).catch((err: Error) => {
        console.log(`>>> fault not injected: ${err.message}`);
      });
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}

async function summary(client: ApiClient, id: string): Promise<void> {
  const job = await client.get<
    JobDetail & {
      attempts: Array<{
        n: number;
        pool: string;
        nodes: string[];
        resumeStep: number | null;
        startedAt: number;
        endedAt: number | null;
      }>;
    }
  >(`/api/jobs/${id}`);
  console.log(
    `\n${job.id}: ${job.state} at step ${job.last?.step ?? "-"} after ${job.restarts} restart(s), ${duration((job.endedAt ?? Date.now()) - job.createdAt)}`,
  );
  console.log(
    "\n" +
      table(
        ["ATTEMPT", "POOL", "NODES", "RESUMED FROM", "RAN FOR"],
        job.attempts.map((a) => [
          a.n,
          a.pool,
          a.nodes.join(","),
          a.resumeStep === null ? "scratch" : `step ${a.resumeStep}`,
          duration((a.endedAt ?? Date.now()) - a.startedAt),
        ]),
      ),
  );
  if (job.incidents.length > 0) {
    console.log(
      "\n" +
        table(
          ["INCIDENT", "CAUSE", "RANK", "NODE", "WHAT HAPPENED"],
          job.incidents.map((i) => [`#${i.id}`, i.cause, i.culpritRank, i.culpritNode, i.summary]),
        ),
    );
  }
  const nodes = await client.get<NodeRecord[]>("/api/nodes");
  const cordoned = nodes.filter((n) => n.cordoned);
  if (cordoned.length > 0)
    console.log(`\ncordoned: ${cordoned.map((n) => `${n.name} (${n.reason ?? ""})`).join("; ")}`);
}
