import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import path from "node:path";
import { Command } from "commander";
import { terminalJobStates, type JobState } from "../../core/states.js";
import type { AttemptRecord, EventRecord, IncidentRecord, NodeRecord, StepSample } from "../../store/port.js";
import { CliError, connect, ExitCode, type ApiClient } from "../client.js";
import { globals, selfCommand } from "../context.js";
import type { NodeView } from "../../supervisor/supervisor.js";
import type { NodeHealthSummary, ProbeResult } from "../../supervisor/health.js";
import type { NodeHealthRecord } from "../../store/port.js";
import { clock, duration, incidentNumbers, table } from "../format.js";
import { pythonPlaceholder } from "../../executors/python.js";
import { jobNameFor, jobSpecYaml, parseTorchrunArgs, torchrunInvocation } from "../torchrun.js";

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
  /** Place in the queue and why it waits (server side: Supervisor.queueInfo); null when not waiting to launch. */
  queuePosition?: number | null;
  waitingFor?: string | null;
}

export interface JobDetail extends JobSummary {
  incidents: IncidentRecord[];
  last: StepSample | null;
  attempts?: AttemptRecord[];
  spec?: { checkpoint: { dir: string; perRun?: boolean; resumeFrom?: string | null } };
}

export function registerJobCommands(program: Command): void {
  program
    .command("run")
    .description(
      "submit a job: a job spec (YAML), a training script (short form), or a torchrun command after --; every " +
        "submission is a new run with its own checkpoints",
    )
    .argument("[target]", "a job spec (YAML), a training script, or -- and a torchrun command line")
    .argument("[args...]", "the script's own arguments (short form and torchrun)")
    .option("-f, --follow", "stay attached: live progress, incidents, and the final state as exit code")
    .option(
      "--resume-from <job|path>",
      "start from another run's newest verified checkpoint: a job id or name (its checkpoint folder), " +
        "a folder of step-* checkpoints, or one step-* checkpoint",
    )
    .option("--cluster <file>", "cluster config for a server this command starts")
    .option("--nproc-per-node <n>", "short form: ranks per node (as torchrun's)")
    .option("--nnodes <n|min:max>", "short form: nodes (as torchrun's; min:max may shrink to min)")
    .option("--pool <names>", "short form: pools in order of preference, comma-separated (default: any)")
    .option("--name <name>", "short form: the job's name (default: from the script)")
    .option("--print-spec", "short form: print the job spec it stands for and submit nothing")
    .allowUnknownOption()
    .addHelpText(
      "after",
      [
        "",
        "Short form and torchrun (docs/torchrun.md): `switchyard run --nproc-per-node 2 train.py --epochs 3` and",
        "`switchyard run -- torchrun --nproc_per_node=2 train.py --epochs 3` (or `python -m torch.distributed.run`)",
        "run train.py under switchyard's launcher with the environment torchrun gives (RANK, LOCAL_RANK, WORLD_SIZE,",
        "TORCHELASTIC_RESTART_COUNT, ...), from this folder. The script's own options go after it; one that run",
        "itself takes (--name, --pool, -f ...) goes after `--`: `switchyard run --nproc-per-node 2 -- train.py --name x`.",
        "",
        "Checkpoints: with no checkpoint.dir in the spec, each run writes to $SWITCHYARD_HOME/checkpoints/<name>/<job id>",
        "(checkpoints/<name>/latest points at the run that verified a checkpoint last) and starts from scratch: a new",
        "submission never resumes another run unless asked, with --resume-from or with a checkpoint.dir that the",
        "specs share on purpose. Either way the console and the events say which checkpoint a run resumes from.",
      ].join("\n"),
    )
    .action(async (target: string | undefined, args: string[], opts: RunOptions, cmd: Command) => {
      const g = globals(cmd);
      const submission = runSubmission(target, args, opts);
      if (submission.kind === "print") {
        console.log(g.json ? JSON.stringify({ spec: submission.yaml, ignored: submission.ignored }) : submission.yaml);
        return;
      }
      let yaml: string;
      if (submission.kind === "generated") {
        yaml = submission.yaml;
      } else {
        try {
          yaml = readFileSync(submission.file, "utf8");
        } catch (err) {
          throw new CliError(
            `cannot read job spec ${submission.file}: ${(err as Error).message}`,
            ExitCode.Usage,
            "pass the path of a job spec (YAML), e.g. examples/chargpt/job.yaml",
          );
        }
      }
      const client = await connect(g.home, { clusterFile: opts.cluster });
      const resume = opts.resumeFrom !== undefined ? await resolveResumeFrom(client, opts.resumeFrom) : null;
      const job = await client.post<JobSummary>("/api/jobs", {
        yaml,
        file: path.resolve(submission.file),
        ...(resume ? { resumeFrom: resume.path } : {}),
      });
      const detail = await client.get<JobDetail>(`/api/jobs/${enc(job.id)}`);
      const ckpt = checkpointNote(detail, resume);
      const again = `${selfCommand(g)} status ${job.id} --follow`;
      const ignored = submission.kind === "generated" ? submission.ignored : [];
      if (g.json) {
        console.log(
          JSON.stringify({
            ...job,
            checkpointDir: detail.spec?.checkpoint.dir ?? null,
            resume,
            follow: again,
            ...(submission.kind === "generated" ? { ignored } : {}),
          }),
        );
      } else {
        console.log(`submitted ${job.id}`);
        for (const n of ignored) console.log(`ignored torchrun option ${n}`);
        for (const line of ckpt) console.log(line);
      }
      if (!opts.follow) return;
      if (!g.json) console.log(`following ${job.id} (Ctrl-C detaches; the job keeps running)`);
      process.exitCode = await follow({ client, jobId: job.id, json: g.json, home: g.home, again });
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
      // A finished run that reported no step was resumed at its final step: its step is its checkpoint's.
      const resumedAt = new Map<string, number>();
      for (const j of jobs.filter((j) => !j.last && terminalJobStates.has(j.state))) {
        const detail = await client.get<JobDetail>(`/api/jobs/${enc(j.id)}`);
        const step = detail.attempts?.[detail.attempts.length - 1]?.resumeStep;
        if (step !== null && step !== undefined) resumedAt.set(j.id, step);
      }
      console.log(
        table(
          ["JOB", "STATE", "STEP", "LOSS", "RESTARTS", "AGE", "REASON"],
          jobs.map((j) => [
            j.id,
            j.state,
            j.last
              ? `${j.last.step}${j.steps ? `/${j.steps}` : ""}`
              : resumedAt.has(j.id)
                ? `${resumedAt.get(j.id)}${j.steps ? `/${j.steps}` : ""} (checkpoint)`
                : "-",
            j.last?.loss?.toFixed(4),
            j.restarts,
            duration((j.endedAt ?? Date.now()) - j.createdAt),
            j.waitingFor ? `queued #${j.queuePosition ?? "?"}: ${j.waitingFor}` : j.reason,
          ]),
        ),
      );
    });

  program
    .command("status")
    .alias("describe")
    .description("one job in detail: state, progress, attempts, incidents")
    .argument("<job>", "job id or name")
    .option("-f, --follow", "stay attached: live progress and incidents until the job ends; exit code = final state")
    .action(async (job: string, opts: { follow?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const client = await connect(g.home);
      const detail = await client.get<JobDetail & { attempts: AttemptRecord[] }>(`/api/jobs/${enc(job)}`);
      if (opts.follow) {
        const again = `${selfCommand(g)} status ${detail.id} --follow`;
        process.exitCode = await follow({ client, jobId: detail.id, json: g.json, home: g.home, again });
        return;
      }
      const numbers = incidentNumbers(detail.incidents);
      if (g.json) {
        const incidents = detail.incidents.map((i) => ({ ...i, number: numbers.get(i.id) }));
        return console.log(JSON.stringify({ ...detail, incidents }));
      }
      console.log(`${detail.id}  ${detail.state}${detail.reason ? ` (${detail.reason})` : ""}`);
      console.log(`progress  ${progressLine(detail)}`);
      const fallback = await progressFallbackNote(client, detail);
      if (fallback) console.log(`progress  ${fallback}`);
      if (detail.waitingFor) console.log(`waiting   ${detail.waitingFor}`);
      console.log(`attempts  ${detail.attempts.length}, restarts ${detail.restarts}`);
      if (detail.spec) console.log(`checkpoints  ${detail.spec.checkpoint.dir}`);
      for (const i of detail.incidents) {
        console.log(
          `incident  #${numbers.get(i.id)} attempt ${i.attempt} ${i.cause} rank ${i.culpritRank ?? "-"} on ${i.culpritNode ?? "-"}: ${i.summary}`,
        );
      }
    });

  program
    .command("logs")
    .description("a rank's log (under --json: one JSON object per line)")
    .argument("<job>", "job id or name")
    .option("-r, --rank <n>", "rank", "0")
    .option("--attempt <n>", "attempt (default: the latest)")
    .option("-f, --follow", "keep printing as the log grows, across restarts, until the job ends")
    .action(async (job: string, opts: { rank: string; attempt?: string; follow?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      for (const [flag, value] of [
        ["--rank", opts.rank],
        ["--attempt", opts.attempt],
      ] as const) {
        if (value !== undefined && !/^\d{1,6}$/.test(value)) {
          throw new CliError(`${flag} takes a whole number, got "${value}"`, ExitCode.Usage, `e.g. ${flag} 1`);
        }
      }
      const client = await connect(g.home);
      const out = logPrinter(g.json, Number(opts.rank));
      let attempt = opts.attempt;
      let offset = 0;
      for (;;) {
        const q = new URLSearchParams({ rank: opts.rank, offset: String(offset) });
        if (attempt) q.set("attempt", attempt);
        const chunk = await client.get<{ text: string; offset: number; attempt: number }>(
          `/api/jobs/${enc(job)}/logs?${q}`,
        );
        out.write(chunk.attempt, chunk.text);
        offset = chunk.offset;
        if (!opts.follow) return out.end();
        const detail = await client.get<JobSummary & { attempts: Array<{ n: number }> }>(`/api/jobs/${enc(job)}`);
        const latest = detail.attempts[detail.attempts.length - 1]?.n;
        if (!opts.attempt && latest !== undefined && String(latest) !== String(chunk.attempt)) {
          out.end();
          attempt = String(latest);
          offset = 0;
          if (!g.json) process.stdout.write(`--- attempt ${latest} ---\n`);
          continue;
        }
        if (terminalJobStates.has(detail.state) && chunk.text === "") return out.end();
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
    const list = await client.get<Array<NodeView & { health?: NodeHealthSummary | null }>>("/api/nodes");
    if (g.json) return console.log(JSON.stringify(list));
    // Which incidents made the strikes that count now (they decay after the cluster's strikeWindowSeconds).
    const struck = (n: NodeView) =>
      (n.strikeLog ?? []).map((s) => `${s.jobId ?? "?"} #${s.incident ?? "?"} ${s.cause} ${clock(s.t)}`).join("; ");
    console.log(
      table(
        ["NODE", "POOL", "DEVICES", "STATE", "HEALTH", "STRIKES", "STRUCK BY", "REASON"],
        list.map((n) => [
          n.name,
          n.pool,
          n.devices,
          n.cordoned ? "cordoned" : "ready",
          healthCell(n.health ?? null),
          n.strikes,
          struck(n) || "-",
          n.reason,
        ]),
      ),
    );
  });
  nodes
    .command("describe")
    .description("one node: state, strikes, its last health probe's findings and the tools' raw output")
    .argument("<node>", "node name")
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const client = await connect(g.home);
      const node = await knownNode(client, name, () =>
        client.get<NodeView & { health: NodeHealthRecord | null }>(`/api/nodes/${enc(name)}`),
      );
      if (g.json) return console.log(JSON.stringify(node));
      console.log(describeNode(node, Date.now()));
    });
  nodes
    .command("probe")
    .description("run the health probe on a node now (recorded and acted on: a fatal finding cordons it)")
    .argument("<node>", "node name")
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const client = await connect(g.home);
      const r = await knownNode(client, name, () => client.post<ProbeResult>(`/api/nodes/${enc(name)}/probe`, {}));
      if (g.json) return console.log(JSON.stringify(r));
      console.log(`${r.node}: ${r.status}`);
      for (const f of r.findings)
        console.log(`  ${f.grade.padEnd(9)} ${f.cause.padEnd(8)} ${f.source.padEnd(11)} ${f.message}`);
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
        const known = await client.get<NodeRecord[]>("/api/nodes");
        if (!known.some((n) => n.name === node)) {
          throw new CliError(
            `no node named "${node}"`,
            ExitCode.Usage,
            `use one of: ${known.map((n) => n.name).join(", ") || "(no nodes: load a cluster with up --cluster <file>)"}`,
          );
        }
        const result = await client.post<NodeRecord>(`/api/nodes/${enc(node)}/${action}`, { reason: opts.reason });
        console.log(g.json ? JSON.stringify(result) : `${result.name} ${result.cordoned ? "cordoned" : "ready"}`);
      });
  }
}

/**
 * For a job whose progress source matched nothing in its current attempt: what hang detection watches instead and the
 * progress.regex suggested from its output (the supervisor's progress.fallback event); null otherwise.
 */
async function progressFallbackNote(
  client: ApiClient,
  detail: JobDetail & { attempts: AttemptRecord[] },
): Promise<string | null> {
  const current = detail.attempts[detail.attempts.length - 1]?.n;
  if (detail.last && detail.last.attempt === current) return null;
  const events = await client.get<EventRecord[]>(`/api/jobs/${enc(detail.id)}/events`);
  const note = events.findLast((e) => e.kind === "progress.fallback" && e.data.attempt === current);
  if (!note) return null;
  const regex = typeof note.data.regex === "string" ? note.data.regex : null;
  // Events before `watched` was recorded watched output and CPU on every pool.
  const watched = typeof note.data.watched === "string" ? note.data.watched : "output and CPU";
  return (
    `none matched; watching ${watched} — ` +
    (regex
      ? `suggest regex: '${regex}' (progress.regex in the job spec)`
      : "no counter in its output to suggest a regex from")
  );
}

export interface RunOptions {
  follow?: boolean;
  cluster?: string;
  resumeFrom?: string;
  nprocPerNode?: string;
  nnodes?: string;
  pool?: string;
  name?: string;
  printSpec?: boolean;
}

/** What `run` submits: a spec file as written, or one generated from a script or a torchrun command line. */
export type RunSubmission =
  { kind: "file"; file: string } | { kind: "generated" | "print"; file: string; yaml: string; ignored: string[] };

/**
 * `run`'s arguments -> what to submit. A lone `*.yaml`/`*.yml` is a job spec; `torchrun ...` or `python -m
 * torch.distributed.run ...` (after `--`) is parsed as torchrun would; anything else is the short form: a script (a
 * `.py` runs under a Python that can import torch, anything else as it is) with torchrun's options before it.
 */
export function runSubmission(target: string | undefined, args: string[], opts: RunOptions): RunSubmission {
  const shortForm = (["nprocPerNode", "nnodes", "pool", "name", "printSpec"] as const).filter(
    (k) => opts[k] !== undefined,
  );
  const flag = (k: string) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
  if (target === undefined) {
    throw new CliError(
      "run needs a job spec, a training script or a torchrun command",
      ExitCode.Usage,
      "e.g. switchyard run job.yaml, switchyard run --nproc-per-node 2 train.py, " +
        "or switchyard run -- torchrun --nproc_per_node=2 train.py",
    );
  }
  if (/\.ya?ml$/i.test(target)) {
    if (args.length > 0) {
      throw new CliError(
        `a job spec takes no arguments, got ${JSON.stringify(args[0])} after ${target}`,
        ExitCode.Usage,
        "put the command's arguments in the spec's command, or check the spelling of run's options (see --help)",
      );
    }
    if (shortForm.length > 0) {
      throw new CliError(
        `${shortForm.map(flag).join(", ")} apply to the short form, not to a job spec`,
        ExitCode.Usage,
        `set them in ${target} (procsPerNode, nodes, pools, name), or run a script: switchyard run --nproc-per-node 2 train.py`,
      );
    }
    return { kind: "file", file: target };
  }
  const argv = [target, ...args];
  const invocation = torchrunInvocation(argv);
  let plan;
  if (invocation) {
    const twice = (["nprocPerNode", "nnodes"] as const).filter((k) => opts[k] !== undefined);
    if (twice.length > 0) {
      throw new CliError(
        `${twice.map(flag).join(", ")} given to both switchyard run and torchrun`,
        ExitCode.Usage,
        "give them to torchrun only, after --",
      );
    }
    plan = parseTorchrunArgs(invocation.args, invocation.python);
  } else {
    const launcherArgs = [
      ...(opts.nprocPerNode !== undefined ? ["--nproc-per-node", opts.nprocPerNode] : []),
      ...(opts.nnodes !== undefined ? ["--nnodes", opts.nnodes] : []),
      // Not a Python script and not an option: an executable, run as it is (torchrun --no-python).
      ...(!target.startsWith("-") && !/\.py$/.test(target) ? ["--no-python"] : []),
    ];
    plan = parseTorchrunArgs([...launcherArgs, ...argv], pythonPlaceholder);
  }
  const name = opts.name ?? jobNameFor(plan.script);
  const pools = (opts.pool ?? "")
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p !== "");
  const workdir = process.cwd();
  const yaml = jobSpecYaml(plan, { name, pools, workdir });
  // The spec exists only on the command line: its "file" names the folder it resolves paths in, and says so.
  const file = path.join(workdir, "<command line>");
  return { kind: opts.printSpec ? "print" : "generated", file, yaml, ignored: plan.ignored };
}

/** Runs `call` for a node;/** Runs `call` for a node; a name the server does not know is a usage error listing the names it does. */
async function knownNode<T>(client: ApiClient, name: string, call: () => Promise<T>): Promise<T> {
  const known = await client.get<NodeRecord[]>("/api/nodes");
  if (!known.some((n) => n.name === name)) {
    throw new CliError(
      `no node named "${name}"`,
      ExitCode.Usage,
      `use one of: ${known.map((n) => n.name).join(", ") || "(no nodes: load a cluster with up --cluster <file>)"}`,
    );
  }
  return call();
}

/** "fatal (12s ago)", or "-" when never probed. */
export function healthCell(h: Pick<NodeHealthSummary, "status" | "probedAt"> | null, now = Date.now()): string {
  return h ? `${h.status} (${duration(Math.max(0, now - h.probedAt))} ago)` : "-";
}

/** `nodes describe`: the node, its strikes, and its last probe in full. */
export function describeNode(n: NodeView & { health: NodeHealthRecord | null }, now: number): string {
  const lines = [
    `node     ${n.name}`,
    `pool     ${n.pool} (${n.devices} device(s))`,
    `state    ${n.cordoned ? `cordoned: ${n.reason ?? "-"}` : "ready"}`,
    `strikes  ${n.strikes}${(n.strikeLog ?? []).map((s) => `\n         ${clock(s.t)} ${s.cause}${s.jobId ? ` (${s.jobId} #${s.incident ?? "?"})` : " (health probe)"}`).join("")}`,
  ];
  const h = n.health;
  if (!h) {
    lines.push("health   never probed");
    return lines.join("\n");
  }
  lines.push(
    `health   ${h.status}, probed ${duration(Math.max(0, now - h.probedAt))} ago at ${clock(h.probedAt)} (${h.trigger} probe)`,
  );
  lines.push(
    "",
    table(
      ["GRADE", "CAUSE", "SOURCE", "FINDING"],
      h.findings.map((f) => [f.grade, f.cause, f.source, f.message]),
    ),
  );
  if (h.excerpt.trim() !== "") {
    lines.push(
      "",
      "raw output (excerpt):",
      ...h.excerpt
        .trimEnd()
        .split("\n")
        .map((l) => `  ${l}`),
    );
  }
  return lines.join("\n");
}

function enc(s: string): string {
  return encodeURIComponent(s);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function formatEvent(e: EventRecord): string {
  return `${clock(e.t)}  ${e.kind.padEnd(18)} ${e.message}`;
}

export function progressLine(j: JobSummary & Pick<JobDetail, "attempts">): string {
  const last = j.last;
  // A run resumed at its final step trains nothing: its step is the checkpoint's.
  const resumed = j.attempts?.[j.attempts.length - 1]?.resumeStep ?? null;
  const stepN = last?.step ?? resumed;
  const step =
    stepN !== null && stepN !== undefined
      ? `step ${stepN}${j.steps ? `/${j.steps}` : ""}${last ? "" : " (from checkpoint)"}`
      : "step -";
  const loss = last?.loss !== null && last?.loss !== undefined ? `loss ${last.loss.toFixed(4)}` : "loss -";
  return `${step}  ${loss}  restarts ${j.restarts}  ${j.state}`;
}

/** Prints log text: as is, or under --json one `{"attempt","rank","line"}` object per complete line. */
function logPrinter(json: boolean, rank: number): { write(attempt: number, text: string): void; end(): void } {
  let partial = "";
  let partialAttempt = 0;
  const emit = (attempt: number, line: string) => console.log(JSON.stringify({ attempt, rank, line }));
  return {
    write(attempt, text) {
      if (!json) {
        process.stdout.write(text);
        return;
      }
      const lines = (partial + text).split("\n");
      partial = lines.pop() ?? "";
      partialAttempt = attempt;
      for (const line of lines) emit(attempt, line);
    },
    end() {
      if (json && partial !== "") emit(partialAttempt, partial);
      partial = "";
    },
  };
}

/** What the console says about a new run's checkpoints: where they go, and which other run's it resumes from. */
function checkpointNote(detail: JobDetail, resume: ResumePoint | null): string[] {
  const ckpt = detail.spec?.checkpoint;
  if (!ckpt) return [];
  const lines = [`checkpoints go to ${ckpt.dir}`];
  if (resume) {
    lines.push(`resuming from another run's checkpoint: ${resume.path} (${resume.what}); ${resume.newest}`);
  } else if (ckpt.perRun === false) {
    const steps = stepFolders(ckpt.dir);
    if (steps.length > 0) {
      lines.push(
        `checkpoint.dir ${ckpt.dir} is shared and holds ${steps.length} checkpoint(s) up to ${steps[steps.length - 1]}: ` +
          "this run resumes from the newest that verifies (drop checkpoint.dir from the spec for a fresh run)",
      );
    }
  }
  return lines;
}

export interface ResumePoint {
  /** Absolute: a folder of step-* checkpoints, or one step-* checkpoint. */
  path: string;
  /** Where it came from, in words. */
  what: string;
  /** The newest checkpoint found there (verification happens at launch). */
  newest: string;
}

function stepFolders(dir: string): string[] {
  try {
    return readdirSync(dir)
      .filter((n) => /^step-\d+$/.test(n))
      .sort((a, b) => Number(a.slice(5)) - Number(b.slice(5)));
  } catch {
    return [];
  }
}

/** A run's checkpoint folder with files `checkpoint.watch` adopted (adopted/manifest.json): said as such. */
function adoptedNewest(dir: string): string | undefined {
  return existsSync(path.join(dir, "adopted", "manifest.json")) ? "the files its script saved (adopted)" : undefined;
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/**
 * `--resume-from <job|path>`: an existing path is taken as a checkpoint (a step-* folder), a folder of them, or a
 * checkpoints/<name> folder (its `latest` run); anything else names a job (id, or name for its newest run), whose
 * checkpoint folder is used. Nothing to resume from is an error, not a silent fresh start.
 */
export async function resolveResumeFrom(client: ApiClient, ref: string): Promise<ResumePoint> {
  const fix =
    "pass a job id or name that wrote checkpoints (switchyard ps -a), or a checkpoint folder (one with step-* folders)";
  if (existsSync(ref)) {
    // The real folder: `checkpoints/<name>/latest` moves on as runs verify checkpoints; this run keeps its choice.
    const abs = realpathSync(ref);
    if (!isDir(abs)) throw new CliError(`--resume-from ${ref}: not a folder`, ExitCode.Usage, fix);
    if (/^step-\d+$/.test(path.basename(abs))) {
      return { path: abs, what: "the checkpoint given", newest: path.basename(abs) };
    }
    const dir =
      stepFolders(abs).length === 0 && isDir(path.join(abs, "latest")) ? realpathSync(path.join(abs, "latest")) : abs;
    const steps = stepFolders(dir);
    const newest = steps[steps.length - 1] ?? adoptedNewest(dir);
    if (!newest) throw new CliError(`--resume-from ${ref}: no step-* checkpoint in ${dir}`, ExitCode.Usage, fix);
    return { path: dir, what: "the folder given", newest: `newest there: ${newest}` };
  }
  let detail: JobDetail;
  try {
    detail = await client.get<JobDetail>(`/api/jobs/${enc(ref)}`);
  } catch (err) {
    if (err instanceof CliError && err.exitCode === ExitCode.Usage) {
      throw new CliError(`--resume-from ${ref}: no job with that id or name, and no such path`, ExitCode.Usage, fix);
    }
    throw err;
  }
  const dir = detail.spec?.checkpoint.dir;
  const steps = dir ? stepFolders(dir) : [];
  const newest = steps[steps.length - 1] ?? (dir ? adoptedNewest(dir) : undefined);
  if (!dir || !newest) {
    throw new CliError(
      `--resume-from ${ref}: job ${detail.id} has no checkpoint (in ${dir ?? "?"})`,
      ExitCode.Usage,
      fix,
    );
  }
  return { path: dir, what: `job ${detail.id}, ${detail.state}`, newest: `newest there: ${newest}` };
}

export interface FollowOptions {
  client: ApiClient;
  jobId: string;
  json: boolean;
  /** SWITCHYARD_HOME: to reconnect (starting a server) when the server goes away. */
  home: string;
  /** The command that follows the job again, printed on Ctrl-C. */
  again: string;
  /** How long to keep trying to reach a server that went away. */
  reconnectMs?: number;
}

const interruptedMark = Symbol("interrupted");

/**
 * Streams progress and events of a job until it ends; resolves to the exit code its final state calls for. A server
 * that goes away is waited for (and started again, as any command does); Ctrl-C detaches with one line and exit 4.
 */
export async function follow(opts: FollowOptions): Promise<number> {
  const { jobId, json } = opts;
  let client = opts.client;
  let lastEvent = 0;
  const tty = process.stdout.isTTY && !json;
  let lastLine = "";
  let onSigint: () => void = () => undefined;
  const interrupted = new Promise<typeof interruptedMark>((resolve) => {
    onSigint = () => resolve(interruptedMark);
    process.once("SIGINT", onSigint);
  });
  const race = <T>(p: Promise<T>): Promise<T | typeof interruptedMark> => Promise.race([p, interrupted]);
  const detach = (): number => {
    if (tty) process.stdout.write("\n");
    if (json) console.log(JSON.stringify({ type: "detached", job: jobId, follow: opts.again }));
    else console.log(`detached from ${jobId}; it keeps running (follow it again: ${opts.again})`);
    return ExitCode.Cancelled;
  };
  try {
    let lostSince: number | null = null;
    for (;;) {
      let snapshot: [JobDetail, EventRecord[]] | typeof interruptedMark;
      try {
        snapshot = await race(
          Promise.all([
            client.get<JobDetail>(`/api/jobs/${enc(jobId)}`),
            client.get<EventRecord[]>(`/api/jobs/${enc(jobId)}/events?after=${lastEvent}`),
          ]),
        );
      } catch (err) {
        if (!(err instanceof CliError) || err.exitCode !== ExitCode.Unreachable) throw err;
        const now = Date.now();
        if (lostSince === null) {
          lostSince = now;
          if (tty) process.stdout.write("\r\x1b[2K");
          if (json) console.log(JSON.stringify({ type: "reconnecting", job: jobId, error: err.message }));
          else console.log(`lost the server (${err.message.split("\n")[0]}); reconnecting, the job keeps running`);
        } else if (now - lostSince > (opts.reconnectMs ?? 120_000)) {
          throw new CliError(
            `the switchyard server stayed unreachable for ${Math.round((now - lostSince) / 1000)}s while following ${jobId}: ${err.message}`,
            ExitCode.Unreachable,
            `the job may still be running; follow it again later: ${opts.again}`,
          );
        }
        const next = await race(
          sleep(500).then(() =>
            connect(opts.home).catch((e: unknown) => (e instanceof CliError ? null : Promise.reject(e))),
          ),
        );
        if (next === interruptedMark) return detach();
        if (next) client = next;
        continue;
      }
      if (snapshot === interruptedMark) return detach();
      if (lostSince !== null) {
        lostSince = null;
        if (json) console.log(JSON.stringify({ type: "reconnected", job: jobId, url: client.url }));
        else console.log(`reconnected to the server at ${client.url}`);
      }
      const [job, events] = snapshot;
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
        if (json) console.log(JSON.stringify({ type: "end", job: job.id, state: job.state, reason: job.reason }));
        else console.log(`${job.id} ${job.state}${job.reason ? `: ${job.reason}` : ""}`);
        return job.state === "SUCCEEDED"
          ? ExitCode.Ok
          : job.state === "CANCELLED"
            ? ExitCode.Cancelled
            : ExitCode.JobFailed;
      }
      if ((await race(sleep(500))) === interruptedMark) return detach();
    }
  } finally {
    process.removeListener("SIGINT", onSigint);
  }
}
