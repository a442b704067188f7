import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { parseDocument, type YAMLSeq } from "yaml";
import { Command } from "commander";
import { terminalJobStates } from "../../core/states.js";
import { packageRoot } from "../../paths.js";
import { findPython } from "../../executors/python.js";
import { listNodes, nodeUnusable, type SlurmNode } from "../../executors/slurm/slurm-cli.js";
import type { AttemptRecord, EventRecord, NodeRecord, RankRecord } from "../../store/port.js";
import { readHomeConfig, readToken, writeHomeConfig } from "../../server/config.js";
import { CliError, connect, dashboardUrl, ExitCode, isHomeServer, serverInfo, type ApiClient } from "../client.js";
import { globals, selfCommand, type Globals } from "../context.js";
import { duration, incidentNumbers, table } from "../format.js";
import { formatEvent, progressLine, type JobDetail } from "./jobs.js";
import { formatReport, withIncidentNumbers } from "./report.js";
import type { JobReport } from "../../supervisor/report.js";
import { stopServer } from "./server.js";

type FaultAction = "kill-rank" | "hang-rank" | "nan" | "corrupt-checkpoint" | "kill-node";

export interface Fault {
  atStep: number;
  action: FaultAction;
  rank?: number;
  why: string;
  /**
   * Slurm story: the fault waits for an attempt of its own on this pool, newer than the one the previous fault hit,
   * that has reported a step (so each fault is its own incident, whatever the machine's speed).
   */
  freshAttemptOn?: string;
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

/**
 * The same story across the hosts of the Slurm testbed: a rank dies on one host, a rank hangs, then a whole host
 * dies. Three infrastructure failures on `ascend` (the job's poolFailures default) move the job to `nvidia`.
 */
export function slurmSchedule(steps: number): Fault[] {
  const at = (fraction: number) => Math.max(2, Math.round(steps * fraction));
  return [
    {
      atStep: at(0.2),
      action: "kill-rank",
      rank: 1,
      why: "a chip fails on one host and takes its rank down",
      freshAttemptOn: "ascend",
    },
    {
      atStep: at(0.4),
      action: "hang-rank",
      rank: 0,
      why: "a link dies mid-collective: the rank stops, its peer on the other host waits",
      freshAttemptOn: "ascend",
    },
    {
      atStep: at(0.6),
      action: "kill-node",
      rank: 1,
      why: "rank 1's whole host dies: link down, every process on it killed (scripts/testbed.sh kill-node)",
      freshAttemptOn: "ascend",
    },
  ];
}

/** What an injection did, when the demo itself did it (a host killed), for the console and the JSON lines. */
interface Injected {
  message: string;
  host?: string;
}

/** What differs between the local story and the Slurm one; the flow around it is shared. */
interface Scenario {
  home: string;
  clusterFile: string;
  jobFile: string;
  faults: Fault[];
  /** The first line: what runs where. */
  intro: (id: string) => string;
  /** Whether a server of the demo's home that already runs may be kept (else it is restarted). */
  reuseServer: boolean;
  /** Extra step count edits of the job file (the Slurm story also sets the checkpoint interval). */
  ckptEvery?: number;
  /** Once the server answers and the demo's old cordons are lifted, before the job is submitted. */
  started?: (client: ApiClient) => Promise<void>;
  inject?: (client: ApiClient, id: string, fault: Fault) => Promise<Injected | null>;
  /** After the report (text) or into the result (JSON): what Slurm says. */
  after?: (client: ApiClient, id: string, json: boolean) => Promise<Record<string, unknown>>;
  /** Always runs at the end, also after Ctrl-C or an error, while the demo's server still answers. */
  cleanup?: (client: ApiClient | null, say: (line: string) => void) => Promise<Record<string, unknown>>;
  /** Runs after the server was stopped (or kept). */
  finish?: (keptServer: boolean, say: (line: string) => void) => Record<string, unknown> | null;
}

export function registerDemoCommand(program: Command): void {
  program
    .command("demo")
    .description("train the example char-GPT on an unstable local pool with faults injected, and show the recovery")
    .option("--steps <n>", "training steps (default 150; 60 with --slurm)")
    .option("--no-faults", "train without injected faults")
    .option("--keep-server", "leave the demo's server running at the end (to browse the dashboard)")
    .option(
      "--slurm",
      "tell the story across the hosts of the multi-host Slurm testbed (scripts/testbed.sh; as root): brought up " +
        "if down, and down again at the end if the demo brought it up",
    )
    .action(async (opts: { steps?: string; faults: boolean; keepServer?: boolean; slurm?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const steps = Number(opts.steps ?? (opts.slurm ? "60" : "150"));
      if (!Number.isInteger(steps) || steps < 10 || steps > 100_000)
        throw new CliError(
          `--steps ${opts.steps} is out of range`,
          ExitCode.Usage,
          "pass a whole number from 10 to 100000",
        );
      if (opts.slurm) checkSlurmHost();
      const python = findPython();
      if (!python?.hasTorch) {
        throw new CliError(
          `the demo trains a PyTorch model, but no Python here can import torch (tried ${python?.tried.join(", ") ?? "python3"})`,
          ExitCode.Usage,
          "`apt-get install python3-torch` (Debian), or set SWITCHYARD_PYTHON to an interpreter with torch",
        );
      }
      const scenario = opts.slurm ? await slurmScenario(g, steps, opts.faults) : localScenario(g, steps, opts.faults);
      await runDemo(g, scenario, steps, Boolean(opts.keepServer));
    });
}

function localScenario(g: Globals, steps: number, faults: boolean): Scenario {
  const exampleDir = path.join(packageRoot, "examples", "chargpt");
  return {
    home: path.join(g.home, "demo"),
    clusterFile: path.join(exampleDir, "cluster.yaml"),
    jobFile: path.join(exampleDir, "job.yaml"),
    faults: faults ? schedule(steps) : [],
    reuseServer: true,
    intro: (id) => `switchyard demo: training ${id} (char-level GPT, 2 ranks, gloo on CPU) on pool local-ascend`,
  };
}

async function runDemo(g: Globals, scenario: Scenario, steps: number, keepServer: boolean): Promise<void> {
  const { home, clusterFile } = scenario;
  const self = selfCommand({ home, homeFlag: true });
  const say = (line: string) => {
    if (!g.json) console.log(line);
  };
  const emit = (o: Record<string, unknown>) => {
    if (g.json) console.log(JSON.stringify(o));
  };
  let client: ApiClient | null = null;
  let startedServer = false;
  let code: number = ExitCode.Ok;
  let interrupted = false;
  try {
    const running = serverInfo(home);
    const alreadyUp = running !== null && (await isHomeServer(home, running));
    const reuse = alreadyUp && scenario.reuseServer && running.clusterFile === clusterFile;
    if (alreadyUp && !reuse) await stopServer(home);
    startedServer = !reuse;
    // Remembered in the demo's home, so that a later command that starts its server loads the same pools.
    writeHomeConfig(home, { ...readHomeConfig(home), clusterFile });
    client = await connect(home, { clusterFile });
    for (const n of await client.get<NodeRecord[]>("/api/nodes")) {
      // A node the workload manager took out (someone else's drain, a host that is down) is not the demo's to undo.
      if (n.cordoned && !n.reason?.startsWith("workload manager: "))
        await client.post(`/api/nodes/${n.name}/uncordon`, { reason: "demo starts clean" });
    }
    await scenario.started?.(client);
    const yaml = withSteps(readFileSync(scenario.jobFile, "utf8"), steps, scenario.ckptEvery);
    const job = await client.post<{ id: string }>("/api/jobs", { yaml, file: scenario.jobFile });
    const info = serverInfo(home);
    const token = readToken(home);
    const dashboard = info && token ? dashboardUrl(info, token) : client.url;
    say(scenario.intro(job.id));
    say(`state in ${home}; dashboard (while the demo runs): ${dashboard}\n`);
    emit({ type: "start", job: job.id, home, server: client.url, dashboard });

    // Ctrl-C: stop what the demo started (its job, and its server if it started one), then exit 4.
    const onSigint = () => {
      interrupted = true;
    };
    process.once("SIGINT", onSigint);
    try {
      code = await watch(client, job.id, scenario.faults, g.json, () => interrupted, scenario.inject);
    } finally {
      process.removeListener("SIGINT", onSigint);
    }
    if (interrupted) {
      await client.post(`/api/jobs/${job.id}/cancel`).catch(() => undefined);
      say(`\ninterrupted: cancelled ${job.id}`);
      emit({ type: "interrupted", job: job.id });
    } else if (g.json) {
      const report = await client.get<JobReport>(`/api/jobs/${job.id}/report`);
      const detail = await client.get<JobDetail & { attempts: AttemptRecord[] }>(`/api/jobs/${job.id}`);
      const extra = scenario.after ? await scenario.after(client, job.id, true) : {};
      emit({
        type: "result",
        job: job.id,
        exitCode: code,
        state: detail.state,
        attempts: detail.attempts,
        incidents: detail.incidents,
        report: withIncidentNumbers(report),
        ...extra,
      });
    } else {
      await summary(client, job.id);
      console.log("\n" + formatReport(await client.get<JobReport>(`/api/jobs/${job.id}/report`)));
      if (scenario.after) await scenario.after(client, job.id, false);
      console.log(`\nmore:  ${self} events ${job.id}`);
      console.log(`       ${self} report ${job.id}`);
      console.log(`       ${self} logs ${job.id} --rank 1`);
    }
  } finally {
    if (scenario.cleanup) emit({ type: "cleanup", ...(await scenario.cleanup(client, say)) });
    if (client && startedServer && !keepServer) {
      await stopServer(home);
      say(`stopped the demo's server (these commands start it again; \`${self} down\` stops it)`);
      emit({ type: "server-stopped", home });
    } else if (client) {
      say(`the demo's server keeps running: stop it with \`${self} down\``);
      emit({ type: "server-running", home, stop: `${self} down` });
    }
    const done = scenario.finish?.(Boolean(client) && !(startedServer && !keepServer), say);
    if (done) emit(done);
  }
  process.exitCode = interrupted ? ExitCode.Cancelled : code;
}

/** The example job with its step count changed in both places that name it (the script's flag and `steps`). */
function withSteps(yaml: string, steps: number, ckptEvery?: number): string {
  const doc = parseDocument(yaml);
  const command = doc.get("command") as YAMLSeq<unknown> | undefined;
  const items = command?.items ?? [];
  const flag = (name: string) =>
    items.findIndex((item) => String((item as { value?: unknown }).value ?? item) === name);
  const at = flag("--steps");
  if (at < 0) throw new CliError("the example job's command has no --steps flag to set", ExitCode.Usage);
  command!.set(at + 1, String(steps));
  doc.set("steps", steps);
  if (ckptEvery !== undefined) {
    const every = flag("--ckpt-every");
    if (every < 0) throw new CliError("the example job's command has no --ckpt-every flag to set", ExitCode.Usage);
    command!.set(every + 1, String(ckptEvery));
  }
  return doc.toString();
}

/**
 * Whether a fault is due: the job runs and has reached the fault's step; a Slurm-story fault also waits for an attempt
 * newer than `hitAttempt` (the one the previous fault hit), on its pool, still running and reporting steps itself.
 * Progress, never the clock, decides, so the story is the same on a slow machine.
 */
export function faultDue(job: JobDetail, fault: Fault, hitAttempt: number): boolean {
  if (job.state !== "RUNNING" || (job.last?.step ?? 0) < fault.atStep) return false;
  if (fault.freshAttemptOn === undefined) return true;
  const attempt = job.attempts?.[job.attempts.length - 1];
  return (
    attempt !== undefined &&
    attempt.n > hitAttempt &&
    attempt.pool === fault.freshAttemptOn &&
    attempt.endedAt === null &&
    job.last?.attempt === attempt.n
  );
}

async function chaos(client: ApiClient, id: string, fault: Fault): Promise<Injected | null> {
  await client.post(`/api/jobs/${id}/chaos`, { action: fault.action, rank: fault.rank });
  return null;
}

async function watch(
  client: ApiClient,
  id: string,
  faults: Fault[],
  json: boolean,
  interrupted: () => boolean,
  inject: (client: ApiClient, id: string, fault: Fault) => Promise<Injected | null> = chaos,
): Promise<number> {
  const pending = [...faults];
  const tty = process.stdout.isTTY && !json;
  let lastEvent = 0;
  let lastLine = "";
  /** The attempt the previous fault hit: a fault with freshAttemptOn waits for a newer one. */
  let hitAttempt = 0;
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
    // The job left the pool a fault was meant for (it failed over on its own): that fault has nothing to hit.
    while (pending[0]?.freshAttemptOn !== undefined) {
      const attempt = job.attempts?.[job.attempts.length - 1];
      if (!attempt || attempt.pool === pending[0].freshAttemptOn) break;
      const fault = pending.shift()!;
      out(`>>> not injecting ${fault.action}: the job already left pool ${fault.freshAttemptOn}`, {
        type: "fault-skipped",
        ...fault,
      });
    }
    while (pending[0] && faultDue(job, pending[0], hitAttempt)) {
      const fault = pending.shift()!;
      hitAttempt = job.last?.attempt ?? hitAttempt;
      out(`>>> injecting ${fault.action}${fault.rank !== undefined ? ` on rank ${fault.rank}` : ""}: ${fault.why}`, {
        type: "fault",
        attempt: hitAttempt,
        ...fault,
      });
      try {
        const done = await inject(client, id, fault);
        if (done) out(`>>> ${done.message}`, { type: "fault-done", action: fault.action, ...done });
      } catch (err) {
        out(`>>> fault not injected: ${(err as Error).message}`, {
          type: "fault-failed",
          action: fault.action,
          error: (err as Error).message,
        });
      }
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}

async function summary(client: ApiClient, id: string): Promise<void> {
  const job = await client.get<JobDetail & { attempts: AttemptRecord[] }>(`/api/jobs/${id}`);
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

// ---------------------------------------------------------------------------------------------------------------
// The Slurm story: the multi-host testbed (scripts/testbed.sh) as the fleet.

const testbedScript = path.join(packageRoot, "scripts", "testbed.sh");
const testbedDir = () => process.env.SWITCHYARD_TESTBED_DIR ?? "/run/switchyard-testbed";
/** Slurm's and munge's programs that the testbed and the Slurm executor run (Debian: slurm-wlm, munge). */
const slurmPrograms = ["srun", "sbatch", "sinfo", "squeue", "scontrol", "scancel", "slurmctld", "slurmd", "munged"];

function onPath(program: string): boolean {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (!dir) continue;
    try {
      if (statSync(path.join(dir, program)).isFile()) return true;
    } catch {
      // not in this folder
    }
  }
  return false;
}

/** The testbed builds namespaces, a bridge and Slurm's daemons: root and slurm-wlm + munge, checked before anything. */
function checkSlurmHost(): void {
  if (process.getuid?.() !== 0) {
    throw new CliError(
      "`demo --slurm` runs on the multi-host Slurm testbed, which needs root (network namespaces, a bridge, slurmctld and one slurmd per host)",
      ExitCode.Usage,
      "run it as root: `sudo node bin/switchyard.js demo --slurm` (or `sudo bash scripts/demo.sh --slurm`)",
    );
  }
  const missing = slurmPrograms.filter((p) => !onPath(p));
  if (missing.length > 0) {
    throw new CliError(
      `\`demo --slurm\` needs Slurm and munge, but ${missing.join(", ")} ${missing.length === 1 ? "is" : "are"} not on PATH`,
      ExitCode.Usage,
      "`apt-get install slurm-wlm munge` (Debian; scripts/bootstrap.sh installs them), and keep /usr/sbin on PATH",
    );
  }
}

function testbed(...args: string[]): { ok: boolean; out: string } {
  const r = spawnSync("bash", [testbedScript, ...args], { encoding: "utf8", timeout: 120_000 });
  return { ok: r.status === 0, out: `${r.stdout ?? ""}${r.stderr ?? ""}`.trim() };
}

async function slurmScenario(g: Globals, steps: number, faults: boolean): Promise<Scenario> {
  const conf = path.join(testbedDir(), "slurm.conf");
  const wasUp = existsSync(conf);
  const say = (line: string) => {
    if (!g.json) console.log(line);
  };
  if (!wasUp) {
    say("switchyard demo: bringing the Slurm testbed up (scripts/testbed.sh up)");
    const up = testbed("up");
    if (!up.ok) {
      testbed("down");
      throw new CliError(
        `scripts/testbed.sh up failed:\n${up.out.split("\n").slice(-8).join("\n")}`,
        ExitCode.Usage,
        `see the testbed's logs under ${testbedDir()}/log/, then \`bash scripts/testbed.sh down\` and try again`,
      );
    }
  }
  // The server this demo starts inherits it: every sinfo/sbatch/srun/scontrol it runs talks to the testbed.
  process.env.SLURM_CONF = conf;
  const slurmEnv = { env: { SLURM_CONF: conf } };
  const killed: string[] = [];
  /** Nodes out of service before the job (someone else's drains): not the demo's to resume. */
  let drainedAtStart = new Set<string>();
  const exampleDir = path.join(packageRoot, "examples", "testbed");
  const drainedNow = async (): Promise<SlurmNode[]> =>
    (await listNodes(slurmEnv)).filter((n) => nodeUnusable(n) || n.reason !== null);

  return {
    home: path.join(g.home, "demo-slurm"),
    clusterFile: path.join(exampleDir, "cluster.yaml"),
    jobFile: path.join(exampleDir, "job.yaml"),
    // A checkpoint before each fault, so every restart resumes (the example's interval is for 60 steps).
    ckptEvery: Math.max(2, Math.round(steps / 6)),
    faults: faults ? slurmSchedule(steps) : [],
    // A server started before (say, by a hint, without SLURM_CONF) is restarted with the testbed's Slurm config.
    reuseServer: false,
    started: async () => {
      drainedAtStart = new Set((await drainedNow()).map((n) => n.name));
    },
    intro: (id) =>
      `switchyard demo: training ${id} (char-level GPT, 2 ranks on 2 hosts, gloo over the hosts' network) on ` +
      `Slurm partition ascend of the testbed${wasUp ? "" : " (brought up by the demo)"}; SLURM_CONF=${conf}`,
    inject: async (client, id, fault) => {
      if (fault.action !== "kill-node") return chaos(client, id, fault);
      const { attempt, ranks } = await client.get<{ attempt: AttemptRecord | null; ranks: RankRecord[] }>(
        `/api/jobs/${id}/ranks`,
      );
      const host = ranks.find((r) => r.rank === (fault.rank ?? 0))?.node;
      if (!attempt || !host) throw new Error(`rank ${fault.rank ?? 0} has no host in the current attempt`);
      const r = testbed("kill-node", host);
      if (!r.ok) throw new Error(`scripts/testbed.sh kill-node ${host} failed: ${r.out}`);
      killed.push(host);
      return { host, message: `host ${host} killed (attempt ${attempt.n}): ${r.out.replace(/^testbed: /, "")}` };
    },
    after: async (client, id, json) => {
      const events = await client.get<EventRecord[]>(`/api/jobs/${id}/events?after=0`);
      const moved = events.filter((e) => e.kind === "job.moved").map((e) => e.message);
      const nodes = await drainedNow().catch(() => [] as SlurmNode[]);
      if (!json) {
        for (const m of moved) console.log(`\nmoved: ${m}`);
        console.log(
          nodes.length === 0
            ? "\nin Slurm: every node is in service"
            : "\nin Slurm (sinfo -N -o '%N %T %E'):\n" +
                table(
                  ["NODE", "STATE", "REASON"],
                  nodes.map((n) => [n.name, sinfoState(n.state), n.reason ?? "-"]),
                ),
        );
      }
      return { moved, slurm: nodes.map((n) => ({ name: n.name, state: n.state, reason: n.reason })) };
    },
    cleanup: async (client, sayLine) => {
      // Leave the testbed as the demo found it: the killed host back, the drains the demo caused resumed.
      const revived: string[] = [];
      for (const host of killed) {
        const r = testbed("revive", host);
        if (r.ok) revived.push(host);
        else sayLine(`could not revive ${host}: ${r.out} (fix: bash scripts/testbed.sh revive ${host})`);
      }
      const resumed: string[] = [];
      if (client) {
        for (const n of await client.get<NodeRecord[]>("/api/nodes").catch(() => [] as NodeRecord[])) {
          if (!n.cordoned || drainedAtStart.has(n.name) || n.reason?.startsWith("workload manager: ")) continue;
          await client
            .post(`/api/nodes/${n.name}/uncordon`, { reason: "the demo is over" })
            .then(() => resumed.push(n.name))
            .catch((err: Error) => sayLine(`could not resume ${n.name}: ${err.message}`));
        }
      }
      const back = await backInService([...revived, ...resumed], slurmEnv);
      if (revived.length > 0) sayLine(`\nrevived ${revived.join(", ")} (scripts/testbed.sh revive)`);
      if (resumed.length > 0) sayLine(`resumed ${resumed.join(", ")} in Slurm (the drains the demo caused)`);
      if (back.length > 0)
        sayLine(`not back in service yet: ${back.join(", ")} (see \`bash scripts/testbed.sh status\`)`);
      return { revived, resumed, notInService: back };
    },
    finish: (keptServer, sayLine) => {
      if (wasUp || keptServer) {
        if (!wasUp) sayLine("the testbed stays up for the server: `bash scripts/testbed.sh down` takes it down");
        return { type: "testbed", down: false };
      }
      const r = testbed("down");
      sayLine(r.ok ? "took the testbed down again (the demo brought it up)" : `testbed down failed: ${r.out}`);
      return { type: "testbed", down: r.ok };
    },
  };
}

/** Waits (up to 30 s) until Slurm runs jobs on these nodes again; answers those that are still out of service. */
async function backInService(names: string[], slurmEnv: { env: Record<string, string> }): Promise<string[]> {
  const wanted = new Set(names);
  if (wanted.size === 0) return [];
  const deadline = Date.now() + 30_000;
  for (;;) {
    const out = (await listNodes(slurmEnv).catch(() => [] as SlurmNode[]))
      .filter((n) => wanted.has(n.name) && nodeUnusable(n))
      .map((n) => n.name);
    if (out.length === 0 || Date.now() > deadline) return out;
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Slurm's state words as sinfo's %T prints them: "draining*" for draining and not responding. */
function sinfoState(words: string[]): string {
  const shown = words.filter((w) => w !== "not_responding").join("+");
  return words.includes("not_responding") ? `${shown}*` : shown;
}
