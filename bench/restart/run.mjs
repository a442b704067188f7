// Restart benchmark: crash -> first new step, Slurm (the testbed) vs local, same machine, one run, side by side.
//
//   npm run build && bash scripts/testbed.sh up && node bench/restart/run.mjs [--kills 5]     (as root)
//
// One switchyard server over a temp home with the testbed's pools (examples/testbed/cluster.yaml: Slurm partitions
// `ascend`, 4 hosts, and `nvidia`, 2 hosts) plus a built-in local pool. Three char-GPT jobs (2 ranks, DDP over gloo)
// run at the same time, and each gets --kills SIGKILLs of rank 1 through the chaos API:
//
//   local          pool `local`, 1 node x 2 ranks (the local executor: processes of this host)
//   slurm-reuse    pool `nvidia`, 2 hosts x 1 rank: the partition has only these 2 hosts, so the culprit's host is
//                  used again and every restart is a new `srun` step in the job's allocation
//   slurm-newalloc pool `ascend`, 2 hosts x 1 rank: 4 hosts, so the restart leaves the culprit's host out (placement
//                  puts the last failure's node last) and the allocation is replaced (scancel + sbatch + wait)
//
// Per kill: detection (kill -> incident), incident -> next attempt launched (startedAt: gang stop, backoff), launched
// -> first step of the new attempt (executor launch: sbatch/srun or fork; interpreter, torch import, rendezvous,
// checkpoint load, one step), and the total. See README.md in this folder.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { loadSampler, logger, machineFacts, options, root, sleep, startServer } from "../lib/bench.mjs";

const { flag } = options(process.argv.slice(2));
const opt = {
  kills: Number(flag("--kills", "5")),
  warmSteps: Number(flag("--warm-steps", "7")), // steps an attempt runs before it is killed
  ckptEvery: Number(flag("--ckpt-every", "5")), // so that every restart loads a checkpoint
  batch: Number(flag("--batch", "8")),
  stepSleep: Number(flag("--step-sleep", "0.25")),
  backoff: Number(flag("--backoff", "0.5")),
  only: flag("--only", "local,slurm-reuse,slurm-newalloc").split(","),
  python: process.env.SWITCHYARD_PYTHON ?? "/usr/bin/python3",
  slurmConf: process.env.SLURM_CONF ?? "/run/switchyard-testbed/slurm.conf",
  work: flag("--work", "") || mkdtempSync(path.join(tmpdir(), "sy-bench-restart-")),
};
if (!existsSync(path.join(root, "dist/server/main.js"))) {
  console.error("bench/restart: build first (npm run build)");
  process.exit(2);
}
if (process.getuid?.() !== 0) {
  console.error("bench/restart: run as root (the Slurm testbed needs it)");
  process.exit(2);
}

const log = logger(14);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

// ------------------------------------------------------------------------------------------------ testbed
const testbed = path.join(root, "scripts/testbed.sh");
const testbedUp = () => {
  try {
    const out = execFileSync("sinfo", ["-h", "-N", "-o", "%N %T"], {
      env: { ...process.env, SLURM_CONF: opt.slurmConf },
      timeout: 10_000,
    }).toString();
    return /\bn1\b/.test(out) && /\ba4\b/.test(out);
  } catch {
    return false;
  }
};
let broughtUp = false;
if (!testbedUp()) {
  log("testbed", "not up: bash scripts/testbed.sh up");
  execFileSync("bash", [testbed, "up"], { stdio: "inherit" });
  broughtUp = true;
}

// ------------------------------------------------------------------------------------------------ server
const home = path.join(opt.work, "home");
mkdirSync(home, { recursive: true, mode: 0o700 });
const clusterFile = path.join(opt.work, "cluster.yaml");
writeFileSync(
  clusterFile,
  readFileSync(path.join(root, "examples/testbed/cluster.yaml"), "utf8").trimEnd() +
    "\n  - name: local\n    accelerator: { vendor: cpu }\n    nodes: 1\n    devicesPerNode: 2\n",
);
const server = await startServer({
  home,
  cluster: clusterFile,
  logFile: path.join(opt.work, "server.log"),
  env: { SWITCHYARD_PYTHON: opt.python, SLURM_CONF: opt.slurmConf },
});
const { url, api } = server;
log("server", `${url} (pid ${server.child.pid}), work ${opt.work}`);

const stopServer = () => server.stop(5000);
const jobs = new Map(); // who -> job id, cancelled at the end
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    for (const id of jobs.values()) await api("POST", `/api/jobs/${id}/cancel`).catch(() => null);
    await stopServer();
    if (broughtUp) execFileSync("bash", [testbed, "down"], { stdio: "inherit" });
    process.exit(130);
  });
}

// ------------------------------------------------------------------------------------------------ one job
const runs = {
  local: { pool: "local", nodes: 1, procsPerNode: 2, env: "{ GLOO_SOCKET_IFNAME: lo }" },
  "slurm-reuse": { pool: "nvidia", nodes: 2, procsPerNode: 1, env: "{}" },
  "slurm-newalloc": { pool: "ascend", nodes: 2, procsPerNode: 1, env: "{}" },
};

// The kills start when every job has reported a step, so that the runs are killed side by side under the same load.
let markStarted;
const allStarted = new Promise((resolve) => {
  let left = opt.only.length;
  markStarted = () => --left === 0 && resolve();
});

async function drive(who) {
  const r = runs[who];
  const dir = path.join(opt.work, who);
  mkdirSync(dir, { recursive: true });
  const command = [
    "{python}", path.join(root, "examples/chargpt/train.py"), "--steps", "100000", "--ckpt-every",
    String(opt.ckptEvery), "--batch", String(opt.batch), "--step-sleep", String(opt.stepSleep),
  ]; // prettier-ignore
  const yaml = [
    `name: restart-${who}`,
    `pools: [${r.pool}]`,
    `nodes: ${r.nodes}`,
    `procsPerNode: ${r.procsPerNode}`,
    `workdir: ${JSON.stringify(dir)}`,
    `command: ${JSON.stringify(command)}`,
    `env: ${r.env}`,
    "checkpoint: { keep: 3 }",
    // Constant backoff, no cordon (no drain on the shared testbed), no move to another pool, restarts enough.
    `recovery: { maxRestarts: 100, backoffSeconds: ${opt.backoff}, maxBackoffSeconds: ${opt.backoff}, ` +
      "strikesBeforeCordon: 1000, graceSeconds: 2, poolFailures: { count: 1000, windowSeconds: 60 } }",
    "",
  ].join("\n");
  writeFileSync(path.join(dir, "job.yaml"), yaml);
  const job = await api("POST", "/api/jobs", { yaml, file: path.join(dir, "job.yaml") });
  jobs.set(who, job.id);
  log(who, `job ${job.id} submitted`);
  const jobDir = path.join(home, "jobs", job.id);
  const allocationOf = () => {
    try {
      return JSON.parse(readFileSync(path.join(jobDir, "slurm-allocation.json"), "utf8")).slurmJobId;
    } catch {
      return null;
    }
  };
  const kills = [];
  for (;;) {
    const v = await api("GET", `/api/jobs/${job.id}`);
    if (v.last) break;
    if (["FAILED", "CANCELLED"].includes(v.state)) throw new Error(`job ended ${v.state}`);
    await sleep(500);
  }
  log(who, "first step reported");
  markStarted();
  await allStarted;
  for (let k = 0; k < opt.kills; k++) {
    // Wait until the current attempt is steady: it has reported --warm-steps steps of its own.
    let view;
    for (;;) {
      view = await api("GET", `/api/jobs/${job.id}`);
      if (["FAILED", "CANCELLED", "SUCCEEDED"].includes(view.state)) throw new Error(`job ended ${view.state}`);
      const cur = view.attempts.at(-1);
      if (cur && view.last?.attempt === cur.n && cur.endedAt === null) {
        const first = (cur.resumeStep ?? 0) + 1;
        if (view.last.step >= first + opt.warmSteps) break;
      }
      await sleep(200);
    }
    await sleep(Math.random() * 1000); // off the supervisor's tick phase
    const attemptN = view.attempts.at(-1).n;
    const allocBefore = allocationOf();
    const killedAt = Date.now();
    const res = await api("POST", `/api/jobs/${job.id}/chaos`, { action: "kill-rank", rank: 1 });
    log(who, `kill ${k + 1}/${opt.kills}: attempt ${attemptN} at step ${view.last.step}: ${res.message}`);
    // Wait for the first step of the next attempt.
    let next;
    for (let i = 0; ; i++) {
      view = await api("GET", `/api/jobs/${job.id}`);
      next = view.attempts.find((a) => a.n === attemptN + 1);
      if (next && view.last?.attempt === attemptN + 1) break;
      if (i > 1200) throw new Error(`no step of attempt ${attemptN + 1} within 4 minutes`);
      await sleep(200);
    }
    const incident = view.incidents.find((x) => x.attempt === attemptN);
    const old = view.attempts.find((a) => a.n === attemptN);
    const steps = await api("GET", `/api/jobs/${job.id}/steps?rank=0`);
    const firstStep = steps.filter((s) => s.attempt === attemptN + 1).sort((a, b) => a.t - b.t)[0];
    const events = await api("GET", `/api/jobs/${job.id}/events`);
    const launchedEv =
      events.find((e) => e.kind === "attempt.launched" && e.data?.attempt === attemptN + 1) ??
      events.filter((e) => e.kind === "attempt.launched").at(-1);
    let exitT = null;
    try {
      exitT = JSON.parse(readFileSync(path.join(old.dir, "rank-1.exit"), "utf8")).t;
    } catch {
      /* none */
    }
    // When the new attempt's rank 0 process started (local: the wrapper's rank-0.pid; Slurm: the node agent's
    // rank-0.agent) and when its SDK wrote the `start` line (after the interpreter started and torch was imported).
    const mtime = (f) => {
      try {
        return statSync(path.join(next.dir, f)).mtimeMs;
      } catch {
        return null;
      }
    };
    let sdkStartAt = null;
    try {
      const line = readFileSync(path.join(next.dir, "rank-0.jsonl"), "utf8").split("\n")[0];
      const parsed = JSON.parse(line);
      if (parsed.kind === "start") sdkStartAt = parsed.t * 1000;
    } catch {
      /* none */
    }
    const row = {
      k: k + 1,
      processStartAt: r.pool === "local" ? mtime("rank-0.pid") : mtime("rank-0.agent"),
      sdkStartAt,
      attempt: attemptN,
      culprit: incident ? `${incident.cause} rank ${incident.culpritRank} on ${incident.culpritNode}` : null,
      nodesBefore: old.nodes,
      nodesAfter: next.nodes,
      allocBefore,
      allocAfter: allocationOf(),
      killedAt,
      exitAt: exitT,
      detectedAt: incident?.detectedAt ?? null,
      oldEndedAt: old.endedAt,
      nextStartedAt: next.startedAt,
      launchReturnedAt: launchedEv?.t ?? null,
      firstStepAt: firstStep?.t ?? null,
    };
    const d = (a, b) => (a !== null && b !== null ? b - a : null);
    row.ms = {
      detection: d(row.killedAt, row.detectedAt),
      exitToIncident: d(row.exitAt, row.detectedAt),
      incidentToLaunched: d(row.detectedAt, row.nextStartedAt),
      stop: d(row.detectedAt, row.oldEndedAt),
      stoppedToLaunched: d(row.oldEndedAt, row.nextStartedAt),
      launchCall: d(row.nextStartedAt, row.launchReturnedAt),
      launchedToFirstStep: d(row.nextStartedAt, row.firstStepAt),
      launchedToProcess: d(row.nextStartedAt, row.processStartAt),
      processToSdkStart: d(row.processStartAt, row.sdkStartAt),
      sdkStartToFirstStep: d(row.sdkStartAt, row.firstStepAt),
      total: d(row.killedAt, row.firstStepAt),
    };
    log(
      who,
      `  detected ${row.ms.detection} ms, -> launched ${row.ms.incidentToLaunched} ms, -> first step ` +
        `${row.ms.launchedToFirstStep} ms (launch call ${row.ms.launchCall} ms), total ${row.ms.total} ms; ` +
        `nodes ${old.nodes.join(",")} -> ${next.nodes.join(",")}` +
        (allocBefore ? `, allocation ${allocBefore} -> ${row.allocAfter}` : ""),
    );
    kills.push(row);
  }
  await api("POST", `/api/jobs/${job.id}/cancel`).catch(() => null);
  jobs.delete(who);
  return { who, jobId: job.id, pool: r.pool, kills };
}

// ------------------------------------------------------------------------------------------------ main
const machine = machineFacts();
const loads = loadSampler(5000, { initial: true });
const started = Date.now();
const results = await Promise.all(
  opt.only.map((w) =>
    drive(w).catch((err) => {
      log(w, `ERROR ${err.stack ?? err}`);
      return { who: w, error: String(err) };
    }),
  ),
);
loads.stop();
const loadRange = loads.range();
machine.loadDuring = [loadRange.min.toFixed(2), loadRange.max.toFixed(2)];
for (const id of jobs.values()) await api("POST", `/api/jobs/${id}/cancel`).catch(() => null);
await sleep(3000); // the allocations are released when the jobs end
await stopServer();
if (broughtUp) execFileSync("bash", [testbed, "down"], { stdio: "inherit" });

// ------------------------------------------------------------------------------------------------ tables
const s = (ms) => (ms === null || ms === undefined ? "—" : (ms / 1000).toFixed(2));
const cols = [
  ["detection", "kill -> incident"],
  ["incidentToLaunched", "incident -> launched"],
  ["launchedToFirstStep", "launched -> 1st step"],
  ["total", "kill -> 1st step"],
];
console.log(`\n| run | n | ${cols.map((c) => `${c[1]} (s) median [min-max]`).join(" | ")} |`);
console.log(`|---|---:|${cols.map(() => "---|").join("")}`);
for (const r of results) {
  if (r.error) {
    console.log(`| ${r.who} | ERROR ${r.error.slice(0, 80)} |`);
    continue;
  }
  const cells = cols.map(([key]) => {
    const xs = r.kills.map((k) => k.ms[key]).filter((x) => x !== null);
    return xs.length ? `${s(median(xs))} [${s(Math.min(...xs))}-${s(Math.max(...xs))}]` : "—";
  });
  console.log(`| ${r.who} (${r.pool}) | ${r.kills.length} | ${cells.join(" | ")} |`);
}
console.log(
  "\nbreakdown (medians, s): exit record -> incident | incident -> old gang stopped | stopped -> launched " +
    "(backoff) | launch call (executor.launch) | launched -> rank 0 process started | -> SDK start line " +
    "(interpreter + torch import) | -> 1st step (rendezvous, checkpoint load, one step)",
);
for (const r of results) {
  if (r.error) continue;
  const m = (key) => s(median(r.kills.map((k) => k.ms[key]).filter((x) => x !== null)));
  const allocs = r.kills.map((k) => `${k.allocBefore ?? "-"}->${k.allocAfter ?? "-"}`).join(" ");
  console.log(
    `${r.who}: ${m("exitToIncident")} | ${m("stop")} | ${m("stoppedToLaunched")} | ${m("launchCall")} | ` +
      `${m("launchedToProcess")} | ${m("processToSdkStart")} | ${m("sdkStartToFirstStep")}` +
      (r.pool !== "local" ? `; allocations ${allocs}` : ""),
  );
}
console.log(`\nmachine: ${JSON.stringify(machine)}; bench wall ${s(Date.now() - started)} s`);
const out = path.join(opt.work, "results.json");
writeFileSync(out, JSON.stringify({ options: opt, machine, results }, null, 1));
console.log(`results: ${out}`);
