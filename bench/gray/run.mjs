// Gray-failure benchmark: one host's link collapses to 100 Mbit/s a minute into a multi-host run on the Slurm testbed.
// The same job (bench/gray/job.yaml: char-GPT sized so the all-reduce dominates a step) runs three ways, at the same
// time, on the same three hosts of partition `ascend`:
//
//   switchyard   its server and the job (Slurm executor): detects the slowdown, probes the hosts, names the host,
//                drains it and goes on with a spare host
//   torchrun     torch 1.13's torchrun on every host (srun, static rendezvous, --max_restarts 3): restarts on a crash
//                only, so it just runs slow
//   none         srun starting the ranks directly: no supervision, just runs slow
//
//   npm run build && node bench/gray/run.mjs [--steps 200 --collapse-after 60 --rate 100mbit ...]
//
// Measured: time from the collapse to switchyard's slowdown.detected and to the incident that names the host, wall
// time and goodput to the end (the same useful work, N steps at the healthy pace, over each run's wall time), and the
// ratio. As root, with the testbed up (scripts/testbed.sh up). See README.md in this folder.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import {
  children,
  failWith,
  launch,
  loadSampler,
  logger,
  machineFacts,
  options,
  Report,
  root,
  runSync as run,
  sinfoNodes,
  sleep,
  slurmClusterYaml,
  slurmEnv,
  startServer,
  stopChildren,
  usable,
} from "../lib/bench.mjs";

const here = fileURLToPath(new URL(".", import.meta.url));
const fail = failWith("bench/gray");
if (!existsSync(path.join(root, "dist/core/slowdown.js"))) fail("not built", "npm run build");
const { median } = await import(path.join(root, "dist/core/slowdown.js"));

// ------------------------------------------------------------------------------------------------ options
const known = ["--steps", "--collapse-after", "--rate", "--only", "--cap", "--work", "--job", "--partition"];
const { flag, num } = options(process.argv.slice(2), { known, fail });
const opt = {
  steps: num("--steps", "200", 50, 100_000),
  collapseAfter: num("--collapse-after", "60", 20, 3600), // s after every run's first step
  rate: flag("--rate", "100mbit"),
  cap: num("--cap", "1500", 60, 7200), // a run still going this long after its launch is stopped (s)
  only: flag("--only", "switchyard,torchrun,none").split(","),
  job: path.resolve(flag("--job", path.join(here, "job.yaml"))),
  partition: flag("--partition", "ascend"),
  python: process.env.SWITCHYARD_PYTHON ?? "/usr/bin/python3",
  work: flag("--work", "") || mkdtempSync(path.join(tmpdir(), "sy-bench-gray-")),
};
if (!/^[0-9]+(kbit|mbit|gbit)$/.test(opt.rate)) fail(`bad --rate ${opt.rate}`, "e.g. 100mbit");
if (!/^[A-Za-z0-9_-]+$/.test(opt.partition)) fail(`bad --partition ${opt.partition}`);
for (const w of opt.only) {
  if (!["switchyard", "torchrun", "none"].includes(w)) fail(`--only: unknown run ${w}`, "switchyard,torchrun,none");
}
if (process.getuid?.() !== 0) fail("the testbed's link shaping needs root", "run as root");
const testbedSh = path.join(root, "scripts/testbed.sh");

const jobSpec = parseYaml(readFileSync(opt.job, "utf8"));
const jobDir = path.dirname(opt.job);
const workdir = path.resolve(jobDir, jobSpec.workdir ?? ".");
/** The job's command with --steps set to opt.steps; "{python}" stays for switchyard, the others get the interpreter. */
const command = [...jobSpec.command];
{
  const i = command.indexOf("--steps");
  if (i < 0) fail(`${opt.job}: the command has no --steps`, "add --steps N to command");
  command[i + 1] = String(opt.steps);
}
const baseCommand = command.map((c) => (c === "{python}" ? opt.python : c));
const ckptEvery = Number(command[command.indexOf("--ckpt-every") + 1] ?? 0);

// ------------------------------------------------------------------------------------------------ helpers
const log = logger(10);
const s1 = (ms) => (ms === null || ms === undefined || !Number.isFinite(ms) ? "—" : (ms / 1000).toFixed(1));

/** `sinfo` of the partition: name -> {address, state, reason}. */
function nodesOf(partition) {
  const nodes = sinfoNodes(partition);
  if (!nodes) fail(`sinfo failed: ${run("sinfo", ["-p", partition]).out}`, "bash scripts/testbed.sh up");
  return nodes;
}

/** Per-step intervals (ms) of one series, consecutive steps of the same attempt only, with their end time. */
function intervals(steps) {
  const sorted = [...steps].sort((a, b) => a.attempt - b.attempt || a.step - b.step);
  const out = [];
  for (let i = 1; i < sorted.length; i++) {
    const [a, b] = [sorted[i - 1], sorted[i]];
    if (a.attempt === b.attempt && b.step === a.step + 1 && b.t > a.t) {
      out.push({ step: b.step, attempt: b.attempt, endT: b.t, ms: b.t - a.t });
    }
  }
  return out;
}
/** Median step time between two instants, leaving out the steps next to a checkpoint (saves are not the link). */
function paceMs(steps, from, to) {
  const ms = intervals(steps)
    .filter((x) => x.endT > from && x.endT <= to)
    .filter((x) => !ckptEvery || ((x.step - 1) % ckptEvery !== 0 && (x.step - 2) % ckptEvery !== 0))
    .map((x) => x.ms);
  return ms.length >= 3 ? { ms: median(ms), n: ms.length } : { ms: null, n: ms.length };
}

// ------------------------------------------------------------------------------------------------ the runs
/** What every run exposes to the main loop while it goes on. */
class RunState {
  constructor(who) {
    this.who = who;
    this.launchedAt = null;
    this.endedAt = null;
    this.state = "STARTING";
    this.steps = () => [];
    this.stop = async () => {};
  }
  firstStepAt() {
    const st = this.steps();
    return st.length ? Math.min(...st.map((x) => x.t)) : null;
  }
  lastStep() {
    return Math.max(0, ...this.steps().map((x) => x.step));
  }
}

async function startSwitchyard(rs) {
  const dir = path.join(opt.work, "switchyard");
  const home = path.join(dir, "home");
  mkdirSync(home, { recursive: true });
  const cluster = path.join(dir, "cluster.yaml");
  writeFileSync(
    cluster,
    slurmClusterYaml({
      pool: jobSpec.pools?.[0] ?? "ascend",
      partition: opt.partition,
      python: opt.python,
      devicesPerNode: 1,
    }),
  );
  const server = await startServer({
    home,
    cluster,
    cwd: dir,
    logFile: path.join(dir, "server.log"),
    env: { ...slurmEnv, SWITCHYARD_PYTHON: opt.python },
  });
  const { url, api } = server;
  // The job file with --steps applied to `steps` and the command (the same command the other runs get).
  const yaml = stringifyYaml({ ...jobSpec, steps: opt.steps, command });
  rs.launchedAt = Date.now();
  const job = await api("POST", "/api/jobs", { yaml, file: opt.job });
  log("switchyard", `job ${job.id} submitted (server ${url}, home ${home})`);
  Object.assign(rs, { url, jobId: job.id, home, view: null, stepCache: [] });
  let lastFetch = 0;
  rs.refresh = async () => {
    rs.view = await api("GET", `/api/jobs/${job.id}`);
    rs.state = rs.view.state;
    if (Date.now() - lastFetch > 3000 || ["SUCCEEDED", "FAILED", "CANCELLED"].includes(rs.state)) {
      lastFetch = Date.now();
      rs.stepCache = (await api("GET", `/api/jobs/${job.id}/steps?rank=0`)).map((x) => ({
        attempt: x.attempt,
        step: x.step,
        t: x.t,
      }));
    }
    if (["SUCCEEDED", "FAILED", "CANCELLED"].includes(rs.state) && rs.endedAt === null) rs.endedAt = Date.now();
  };
  rs.steps = () => rs.stepCache;
  rs.stop = async () => {
    if (rs.endedAt === null) {
      await api("POST", `/api/jobs/${job.id}/cancel`).catch(() => null);
      rs.endedAt = Date.now();
      rs.state = `STOPPED at the cap (${opt.cap} s)`;
    }
  };
  rs.api = api;
  rs.shutdown = async () => {
    if (!children.has(server.child.pid)) return;
    await rs.stop(); // a job still going is cancelled first: its ranks outlive the server otherwise
    await server.stop();
  };
  // The hosts of the first attempt: the other runs go on the same ones.
  for (let i = 0; i < 1200; i++) {
    await rs.refresh();
    const a = rs.view.attempts?.[0];
    if (a?.nodes?.length) return a.nodes;
    if (["FAILED", "CANCELLED"].includes(rs.state)) throw new Error(`switchyard job ${rs.state} before launching`);
    await sleep(250);
  }
  throw new Error("switchyard: no attempt launched within 5 minutes");
}

function startOutside(rs, hosts, addresses) {
  const who = rs.who;
  const dir = path.join(opt.work, who);
  const reports = path.join(dir, "reports");
  mkdirSync(reports, { recursive: true });
  const port = String(20_000 + Math.floor(Math.random() * 10_000) + (who === "torchrun" ? 0 : 10_000));
  const master = addresses[0];
  const env = {
    BENCH_CKPT_DIR: path.join(dir, "ckpt"),
    BENCH_REPORT_DIR: reports,
    BENCH_RESUME: who === "torchrun" ? "1" : "0",
    GLOO_SOCKET_IFNAME: "eth0",
    PYTHONUNBUFFERED: "1",
    LOGLEVEL: "INFO",
  };
  const wrapper = path.join(here, "rank_wrapper.py");
  const srun = ["-p", opt.partition, "-w", hosts.join(","), "-N", String(hosts.length), "-n", String(hosts.length)];
  srun.push("--ntasks-per-node=1", "-J", `bench-gray-${who}`, "--export=ALL");
  let args;
  if (who === "torchrun") {
    args = [
      ...srun, opt.python, path.join(here, "torchrun_node.py"),
      "--nnodes", String(hosts.length), "--nproc_per_node", "1", "--master_addr", master, "--master_port", port,
      "--max_restarts", "3", "--monitor_interval", "5",
      wrapper, ...baseCommand.slice(1),
    ]; // prettier-ignore
  } else {
    Object.assign(env, { MASTER_ADDR: master, MASTER_PORT: port });
    args = [...srun, opt.python, wrapper, ...baseCommand.slice(1)];
  }
  rs.launchedAt = Date.now();
  const proc = launch(who, "srun", args, {
    env: { ...slurmEnv, ...env },
    cwd: workdir,
    logFile: path.join(dir, "srun.log"),
  });
  const r0 = new Report(path.join(reports, "rank-0.jsonl"));
  rs.steps = () => r0.steps();
  rs.done = () => r0.poll().some((l) => l.kind === "done");
  void proc.exited.then((e) => {
    rs.endedAt ??= e.t;
    rs.exit = e;
    if (!rs.state.startsWith("STOPPED"))
      rs.state = rs.done() ? "SUCCEEDED" : `FAILED (srun exit ${e.code ?? e.signal})`;
  });
  rs.refresh = async () => {
    if (rs.endedAt === null && rs.steps().length) rs.state = "RUNNING";
  };
  rs.stop = async () => {
    if (rs.endedAt !== null) return;
    rs.state = `STOPPED at the cap (${opt.cap} s)`;
    rs.endedAt = Date.now();
    proc.child.kill("SIGINT"); // srun forwards it to the tasks; twice within a second cancels the step
    await sleep(300);
    proc.child.kill("SIGINT");
    await Promise.race([proc.exited, sleep(15_000)]);
    if (children.has(proc.child.pid)) proc.child.kill("SIGKILL");
  };
  rs.shutdown = rs.stop;
  log(who, `srun on ${hosts.join(",")} (master ${master}:${port})`);
}

// ------------------------------------------------------------------------------------------------ main
const cleanups = [];
const cleanup = async () => {
  while (cleanups.length)
    await cleanups
      .pop()()
      .catch((e) => log("bench", `cleanup: ${e.message}`));
  stopChildren("SIGTERM");
};
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    void cleanup().then(() => process.exit(130));
  });
}

const before = nodesOf(opt.partition);
const usableHosts = [...before].filter(([, n]) => usable(n)).map(([name]) => name);
if (usableHosts.length < 4) {
  fail(
    `partition ${opt.partition} has ${usableHosts.length} usable host(s) (${usableHosts.join(", ")}); the benchmark needs 4 (3 + a spare)`,
    "bash scripts/testbed.sh up, and resume drained hosts: scontrol update NodeName=aN State=RESUME",
  );
}
const shaped = run("bash", [testbedSh, "status"])
  .out.split("\n")
  .filter((l) => /link degraded/.test(l));
if (shaped.length > 0) fail(`a link is shaped already: ${shaped.join("; ")}`, "bash scripts/testbed.sh heal NODE");

const machine = {
  ...machineFacts(),
  slurm: run("sinfo", ["--version"]).out,
  loadBefore: loadavg().map((x) => Number(x.toFixed(2))),
};
console.log(`bench/gray: work dir ${opt.work}`);
console.log(`options: ${JSON.stringify({ ...opt, work: undefined })}; command: ${command.join(" ")}`);
const loads = loadSampler(5000);

const runs = Object.fromEntries(opt.only.map((w) => [w, new RunState(w)]));
let culprit = null;
const marks = { detected: null, named: null, namedNode: null, evicted: null, incident: null, events: [] };
let results;
let hosts = null;
let seenEvents = 0;
/** Whether this benchmark shaped the culprit's link and has not healed it yet. */
let shapedHere = false;

/**
 * One run, alone on the hosts: started, its link collapse a minute after its first step, followed to the end (or the
 * cap), then the link healed and a drain switchyard made resumed, so the next run starts on the same healthy hosts.
 */
async function runOne(r) {
  if (r.who === "switchyard") {
    hosts = [...(await startSwitchyard(r))].sort();
    cleanups.push(() => r.shutdown());
  } else {
    hosts ??= usableHosts.slice(0, 3);
    await waitUsable(hosts);
    startOutside(
      r,
      hosts,
      hosts.map((h) => before.get(h)?.address),
    );
    cleanups.push(() => r.shutdown());
  }
  culprit ??= hosts.includes("a2") ? "a2" : hosts[1];
  log(
    r.who,
    `on ${hosts.join(",")}; ${culprit}'s link collapses to ${opt.rate} ${opt.collapseAfter} s after its first step`,
  );
  let lastLog = 0;
  for (;;) {
    await r.refresh().catch((e) => log(r.who, `refresh: ${e.message}`));
    const now = Date.now();
    const first = r.firstStepAt();
    if (r.collapseAt === undefined && first !== null && now >= first + opt.collapseAfter * 1000) {
      shapedHere = true; // before the call: a degrade that fails half-way is healed too
      const out = run("bash", [testbedSh, "degrade", culprit, "--rate", opt.rate]);
      if (out.code !== 0) throw new Error(`testbed.sh degrade: ${out.out}`);
      r.collapseAt = Date.now();
      log(r.who, `${out.out} at step ${r.lastStep()}`);
    }
    if (r.who === "switchyard") await followEvents(r);
    if (now - lastLog > 30_000) {
      lastLog = now;
      log(r.who, `${r.state} step ${r.lastStep()} | load ${loadavg()[0].toFixed(1)}`);
    }
    if (r.endedAt === null && r.launchedAt !== null && now - r.launchedAt > opt.cap * 1000) {
      log(r.who, `still going ${opt.cap} s after launch: stopping it`);
      await r.stop();
    }
    if (r.endedAt !== null) break;
    await sleep(1000);
  }
  log(r.who, `${r.state} at step ${r.lastStep()} after ${s1(r.endedAt - r.launchedAt)} s`);
  if (r.who === "switchyard") {
    await followEvents(r);
    // What switchyard recorded (its view, ledger), then its server stops: the next runs have the hosts to themselves.
    await r.refresh();
    r.report = await r.api("GET", `/api/jobs/${r.jobId}/report`).catch(() => null);
    writeFileSync(
      path.join(opt.work, "switchyard", "report.json"),
      JSON.stringify({ view: r.view, report: r.report }, null, 1),
    );
    await r.shutdown();
  }
  healAndResume();
}

/** switchyard's events after the collapse: slowdown.detected, the incident that names a host, slowdown.evict. */
async function followEvents(r) {
  const evs = await r.api("GET", `/api/jobs/${r.jobId}/events`).catch(() => []);
  for (const e of evs.slice(seenEvents)) {
    if (/^(slowdown|incident|preflight|attempt\.launched|job\.)/.test(e.kind)) {
      log("switchyard", `${e.kind}: ${e.message.slice(0, 260)}`);
      marks.events.push({ t: e.t, kind: e.kind, message: e.message });
    }
    if (r.collapseAt !== undefined && e.t >= r.collapseAt) {
      if (e.kind === "slowdown.detected" && marks.detected === null) marks.detected = e.t;
      if (e.kind === "incident" && marks.named === null && e.data?.node)
        [marks.named, marks.namedNode] = [e.t, e.data.node];
      if (e.kind === "slowdown.evict" && marks.evicted === null) marks.evicted = e.t;
    }
  }
  seenEvents = Math.max(seenEvents, evs.length);
}

function healAndResume() {
  if (!culprit) return;
  // Only what this benchmark did: the testbed is shared, another session's shaped link or drain is left alone.
  if (shapedHere) run("bash", [testbedSh, "heal", culprit]);
  shapedHere = false;
  // A drain this benchmark's server made (its reason names the switchyard job) is resumed.
  const n = nodesOf(opt.partition).get(culprit);
  const jobId = runs.switchyard?.jobId;
  if (jobId && n?.reason?.startsWith("switchyard") && n.reason.includes(jobId) && !before.get(culprit)?.reason) {
    run("scontrol", ["update", `NodeName=${culprit}`, "State=RESUME"]);
    log("bench", `${culprit} resumed in Slurm (switchyard had drained it)`);
  }
}

/** Right after RESUME Slurm shows a host "idle*" until its slurmd answers: wait until every host is usable. */
async function waitUsable(list) {
  for (let i = 0; i < 120; i++) {
    const now = nodesOf(opt.partition);
    if (list.every((h) => now.get(h) && usable(now.get(h)))) return;
    await sleep(1000);
  }
  throw new Error(`hosts ${list.join(",")} not usable after 2 minutes: ${run("sinfo", ["-p", opt.partition]).out}`);
}

try {
  cleanups.push(async () => healAndResume());
  for (const w of ["switchyard", "torchrun", "none"]) if (runs[w]) await runOne(runs[w]);
  loads.stop();

  // ---------------------------------------------------------------------------------------------- results
  const sy = runs.switchyard;
  const report = sy?.report ?? null;
  if (sy) {
    const incidents = sy.view.incidents ?? [];
    marks.incident = incidents.find((i) => i.culpritNode) ?? incidents[0] ?? null;
  }
  // The healthy pace: every run's median step time between its warm-up and the collapse, and the median of those.
  const pre = Object.fromEntries(
    Object.values(runs).map((r) => {
      const first = r.firstStepAt() ?? 0;
      return [r.who, paceMs(r.steps(), first + 10_000, r.collapseAt ?? Number.POSITIVE_INFINITY)];
    }),
  );
  const healthyMs = median(
    Object.values(pre)
      .map((p) => p.ms)
      .filter((x) => x !== null),
  );
  const evictionEnd =
    sy?.view.attempts.length > 1 ? sy.view.attempts[0].endedAt : (sy?.endedAt ?? Number.POSITIVE_INFINITY);
  results = Object.values(runs).map((r) => {
    const wallMs = (r.endedAt ?? Date.now()) - r.launchedAt;
    const stepsDone = r.lastStep();
    const slowUntil = r.who === "switchyard" ? evictionEnd : (r.endedAt ?? Date.now());
    const degraded = r.collapseAt ? paceMs(r.steps(), r.collapseAt + 5000, slowUntil) : { ms: null, n: 0 };
    const load = loads.samples.filter((x) => x.t >= r.launchedAt && x.t <= (r.endedAt ?? Date.now())).map((x) => x.l1);
    const afterEviction =
      r.who === "switchyard" && sy.view.attempts.length > 1
        ? paceMs(
            r.steps().filter((x) => x.attempt > 1),
            sy.view.attempts[1].startedAt + 10_000,
            r.endedAt,
          )
        : null;
    return {
      who: r.who,
      state: r.state,
      stepsDone,
      wallMs,
      // The same useful work for every run: opt.steps at the healthy pace, over the run's own wall time.
      goodput: stepsDone >= opt.steps && healthyMs ? (opt.steps * healthyMs) / wallMs : null,
      stepsPerMin: (stepsDone / wallMs) * 60_000,
      healthyStepMs: pre[r.who].ms,
      degradedStepMs: degraded.ms,
      slowdown: degraded.ms && pre[r.who].ms ? degraded.ms / pre[r.who].ms : null,
      afterEvictionStepMs: afterEviction?.ms ?? null,
      collapseAt: r.collapseAt ?? null,
      collapseAtStep: r.collapseAt
        ? Math.max(
            0,
            ...r
              .steps()
              .filter((x) => x.t <= r.collapseAt)
              .map((x) => x.step),
          )
        : null,
      loadAvg1: load.length ? { min: Math.min(...load), median: median(load), max: Math.max(...load) } : null,
      attempts:
        r.who === "switchyard"
          ? sy.view.attempts.map((a) => ({ n: a.n, nodes: a.nodes, resumeStep: a.resumeStep }))
          : null,
      ledger:
        r.who === "switchyard" && report ? { goodput: report.ledger.goodput, totals: report.ledger.totals } : null,
    };
  });
  const bySy = results.find((r) => r.who === "switchyard");
  for (const r of results) {
    r.goodputRatioOfSwitchyard = bySy?.goodput && r.goodput ? bySy.goodput / r.goodput : null;
  }
  const loadDuring = loads.samples.map((x) => x.l1);
  machine.loadDuring = loadDuring.length
    ? { min: Math.min(...loadDuring), median: median(loadDuring), max: Math.max(...loadDuring) }
    : null;
  const collapseAt = sy?.collapseAt ?? null;
  const summary = {
    collapse: { host: culprit, rate: opt.rate, hosts },
    detectS: marks.detected && collapseAt ? (marks.detected - collapseAt) / 1000 : null,
    nameS: marks.named && collapseAt ? (marks.named - collapseAt) / 1000 : null,
    namedNode: marks.namedNode,
    namedRight: marks.namedNode === culprit,
    evictS: marks.evicted && collapseAt ? (marks.evicted - collapseAt) / 1000 : null,
    firstStepAfterEvictionS:
      collapseAt && sy?.view.attempts.length > 1
        ? (Math.min(
            ...sy
              .steps()
              .filter((x) => x.attempt > 1)
              .map((x) => x.t),
          ) -
            collapseAt) /
          1000
        : null,
    healthyStepMs: healthyMs,
    incident: marks.incident
      ? { cause: marks.incident.cause, node: marks.incident.culpritNode, summary: marks.incident.summary }
      : null,
  };

  // ---------------------------------------------------------------------------------------------- tables
  console.log(
    `\n${culprit}'s link cut to ${opt.rate} ${opt.collapseAfter} s after each run's first step; ` +
      `switchyard: slowdown detected after ${summary.detectS?.toFixed(1) ?? "—"} s, host named (${summary.namedNode ?? "none"}) ` +
      `after ${summary.nameS?.toFixed(1) ?? "—"} s`,
  );
  console.log(
    "\n| run | end state | steps | wall (s) | healthy step (s) | step after collapse (s) | slowdown | goodput | switchyard's goodput / this | load avg (1 min) |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|---|");
  for (const r of results) {
    console.log(
      `| ${r.who} | ${r.state} | ${r.stepsDone} | ${s1(r.wallMs)} | ${s1(r.healthyStepMs)} | ` +
        `${s1(r.degradedStepMs)}${r.afterEvictionStepMs ? ` (after eviction ${s1(r.afterEvictionStepMs)})` : ""} | ` +
        `${r.slowdown ? `${r.slowdown.toFixed(2)}x` : "—"} | ${r.goodput?.toFixed(3) ?? "—"} | ` +
        `${r.goodputRatioOfSwitchyard ? `${r.goodputRatioOfSwitchyard.toFixed(2)}x` : "—"} | ` +
        `${r.loadAvg1 ? `${r.loadAvg1.median.toFixed(1)} (${r.loadAvg1.min.toFixed(1)}-${r.loadAvg1.max.toFixed(1)})` : "—"} |`,
    );
  }
  if (summary.incident) console.log(`\nincident: ${summary.incident.summary}`);
  console.log(`\nmachine: ${JSON.stringify(machine)}`);
  const out = path.join(opt.work, "results.json");
  writeFileSync(
    out,
    JSON.stringify({ options: opt, command, machine, summary, results, events: marks.events }, null, 1),
  );
  console.log(`results: ${out}`);
} catch (err) {
  log("bench", `ERROR ${err.stack ?? err}`);
  process.exitCode = 1;
} finally {
  loads.stop();
  await cleanup();
}
