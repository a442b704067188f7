import { readFileSync } from "node:fs";
import path from "node:path";
import { parseDocument, type YAMLSeq } from "yaml";
import { Command } from "commander";
import { terminalJobStates } from "../../core/states.js";
import { packageRoot } from "../../paths.js";
import { findPython } from "../../executors/python.js";
import type { EventRecord, NodeRecord } from "../../store/port.js";
import { readHomeConfig, readToken, writeHomeConfig } from "../../server/config.js";
import { CliError, connect, dashboardUrl, ExitCode, isHomeServer, serverInfo, type ApiClient } from "../client.js";
import { globals, selfCommand } from "../context.js";
import { duration, incidentNumbers, table } from "../format.js";
import { formatEvent, progressLine, type JobDetail } from "./jobs.js";
import { formatReport, withIncidentNumbers } from "./report.js";
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
    .option("--keep-server", "leave the demo's server running at the end (to browse the dashboard)")
    .action(async (opts: { steps: string; faults: boolean; keepServer?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const steps = Number(opts.steps);
      if (!Number.isInteger(steps) || steps < 10 || steps > 100_000)
        throw new CliError(
          `--steps ${opts.steps} is out of range`,
          ExitCode.Usage,
          "pass a whole number from 10 to 100000",
        );
      const python = findPython();
      if (!python?.hasTorch) {
        throw new CliError(
          `the demo trains a PyTorch model, but no Python here can import torch (tried ${python?.tried.join(", ") ?? "python3"})`,
          ExitCode.Usage,
          "`apt-get install python3-torch` (Debian), or set SWITCHYARD_PYTHON to an interpreter with torch",
        );
      }
      const home = path.join(g.home, "demo");
      const self = selfCommand({ home, homeFlag: true });
      const exampleDir = path.join(packageRoot, "examples", "chargpt");
      const clusterFile = path.join(exampleDir, "cluster.yaml");
      const running = serverInfo(home);
      const alreadyUp = running !== null && (await isHomeServer(home, running));
      if (alreadyUp && running.clusterFile !== clusterFile) await stopServer(home);
      const startedServer = !alreadyUp || running.clusterFile !== clusterFile;
      // Remembered in the demo's home, so that a later command that starts its server loads the same pools.
      writeHomeConfig(home, { ...readHomeConfig(home), clusterFile });
      const client = await connect(home, { clusterFile });
      const say = (line: string) => {
        if (!g.json) console.log(line);
      };
      const emit = (o: Record<string, unknown>) => {
        if (g.json) console.log(JSON.stringify(o));
      };
      for (const n of await client.get<NodeRecord[]>("/api/nodes")) {
        if (n.cordoned) await client.post(`/api/nodes/${n.name}/uncordon`, { reason: "demo starts clean" });
      }
      const jobFile = path.join(exampleDir, "job.yaml");
      const yaml = withSteps(readFileSync(jobFile, "utf8"), steps);
      const job = await client.post<{ id: string }>("/api/jobs", { yaml, file: jobFile });
      const info = serverInfo(home);
      const token = readToken(home);
      const dashboard = info && token ? dashboardUrl(info, token) : client.url;
      say(`switchyard demo: training ${job.id} (char-level GPT, 2 ranks, gloo on CPU) on pool local-ascend`);
      say(`state in ${home}; dashboard (while the demo runs): ${dashboard}\n`);
      emit({ type: "start", job: job.id, home, server: client.url, dashboard });

      // Ctrl-C: stop what the demo started (its job, and its server if it started one), then exit 4.
      let interrupted = false;
      const onSigint = () => {
        interrupted = true;
      };
      process.once("SIGINT", onSigint);
      let code: number;
      try {
        code = await watch(client, job.id, opts.faults ? schedule(steps) : [], g.json, () => interrupted);
      } finally {
        process.removeListener("SIGINT", onSigint);
      }
      if (interrupted) {
        await client.post(`/api/jobs/${job.id}/cancel`).catch(() => undefined);
        say(`\ninterrupted: cancelled ${job.id}`);
        emit({ type: "interrupted", job: job.id });
      } else if (g.json) {
        const report = await client.get<JobReport>(`/api/jobs/${job.id}/report`);
        emit({ type: "result", job: job.id, exitCode: code, report: withIncidentNumbers(report) });
      } else {
        await summary(client, job.id);
        console.log("\n" + formatReport(await client.get<JobReport>(`/api/jobs/${job.id}/report`)));
        console.log(`\nmore:  ${self} events ${job.id}`);
        console.log(`       ${self} report ${job.id}`);
        console.log(`       ${self} logs ${job.id} --rank 1`);
      }
      if (startedServer && !opts.keepServer) {
        await stopServer(home);
        say(`stopped the demo's server (these commands start it again; \`${self} down\` stops it)`);
        emit({ type: "server-stopped", home });
      } else {
        say(`the demo's server keeps running: stop it with \`${self} down\``);
        emit({ type: "server-running", home, stop: `${self} down` });
      }
      process.exitCode = interrupted ? ExitCode.Cancelled : code;
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

async function watch(
  client: ApiClient,
  id: string,
  faults: Fault[],
  json: boolean,
  interrupted: () => boolean,
): Promise<number> {
  const pending = [...faults];
  const tty = process.stdout.isTTY && !json;
  let lastEvent = 0;
  let lastLine = "";
  const out = (line: string, o: Record<string, unknown>) => {
    if (json) return console.log(JSON.stringify(o));
    if (tty) process.stdout.write("\r\x1b[2K");
    console.log(line);
  };
  for (;;) {
    if (interrupted()) {
      if (tty) process.stdout.write("\n");
      return ExitCode.Cancelled;
    }
    const [job, events] = await Promise.all([
      client.get<JobDetail>(`/api/jobs/${id}`),
      client.get<EventRecord[]>(`/api/jobs/${id}/events?after=${lastEvent}`),
    ]);
    for (const e of events) {
      lastEvent = e.id;
      out(formatEvent(e), { type: "event", ...e });
    }
    const line = progressLine(job);
    if (json) {
      if (line !== lastLine && (job.last?.step ?? 0) % 10 === 0)
        console.log(JSON.stringify({ type: "progress", state: job.state, last: job.last, restarts: job.restarts }));
    } else if (tty) process.stdout.write(`\r\x1b[2K${line}`);
    else if (line !== lastLine && (job.last?.step ?? 0) % 10 === 0) console.log(line);
    lastLine = line;
    if (terminalJobStates.has(job.state)) {
      if (tty) process.stdout.write("\n");
      return job.state === "SUCCEEDED" ? ExitCode.Ok : ExitCode.JobFailed;
    }
    while (job.state === "RUNNING" && pending[0] && (job.last?.step ?? 0) >= pending[0].atStep) {
      const fault = pending.shift()!;
      out(`>>> injecting ${fault.action}${fault.rank !== undefined ? ` on rank ${fault.rank}` : ""}: ${fault.why}`, {
        type: "fault",
        ...fault,
      });
      await client.post(`/api/jobs/${id}/chaos`, { action: fault.action, rank: fault.rank }).catch((err: Error) => {
        out(`>>> fault not injected: ${err.message}`, {
          type: "fault-failed",
          action: fault.action,
          error: err.message,
        });
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
    const numbers = incidentNumbers(job.incidents);
    console.log(
      "\n" +
        table(
          ["INCIDENT", "CAUSE", "RANK", "NODE", "WHAT HAPPENED"],
          job.incidents.map((i) => [`#${numbers.get(i.id)}`, i.cause, i.culpritRank, i.culpritNode, i.summary]),
        ),
    );
  }
  const nodes = await client.get<NodeRecord[]>("/api/nodes");
  const cordoned = nodes.filter((n) => n.cordoned);
  if (cordoned.length > 0)
    console.log(`\ncordoned: ${cordoned.map((n) => `${n.name} (${n.reason ?? ""})`).join("; ")}`);
}
