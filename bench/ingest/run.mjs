// Ingestion benchmark: 4,096 ranks at one report per second each, against a real switchyard server.
//
//   npm run build && node bench/ingest/run.mjs [--nodes 512 --per-node 8 --load-seconds 60]
//
// The server is the real one (node bin/switchyard.js server), unchanged. Its cluster has two pools:
//   big    executor: slurm, partition `big` of a stand-in Slurm (fake-slurm.mjs, first on the server's PATH) with
//          --nodes virtual hosts; the job `ingest-big` asks for all of them x --per-node ranks. Its `srun` is one
//          process that plays every node agent of the step: per rank a heartbeat file every second, a report line
//          per step (one a second, all ranks in lockstep), exit records when stopped. The server reads exactly
//          what it would read from 4,096 real ranks on Slurm: every report file, every heartbeat, every exit record.
//   small  the built-in local executor: the job `ingest-small`, 2 real ranks (test/fixtures/ranks/gloo_pair.py: an
//          all-reduce over gloo every step, so a stopped rank stalls its peer as in DDP), on which
//          kills (chaos kill-rank) and hangs (chaos hang-rank, SIGSTOP) are timed: first without the load, then
//          with it.
// Measured: the server's CPU (utime+stime from /proc/PID/stat, as a share of one core) and RSS, over the baseline
// and over the load window; ingestion lag (a report's own write time -> visible through the API: the job's last
// step, and rank 0's and the last rank's step lists); detection latency (kill -> incident, hang -> incident).
import { spawn } from "node:child_process";
import { chmodSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release, tmpdir, totalmem } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const root = fileURLToPath(new URL("../../", import.meta.url));
const argv = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : fallback;
};
const opt = {
  nodes: Number(flag("--nodes", "512")),
  perNode: Number(flag("--per-node", "8")),
  loadSeconds: Number(flag("--load-seconds", "60")), // the measured window under load (at least)
  baselineSeconds: Number(flag("--baseline-seconds", "30")),
  warmSeconds: Number(flag("--warm-seconds", "10")),
  kills: Number(flag("--kills", "4")),
  hangs: Number(flag("--hangs", "2")),
  hangMinSeconds: Number(flag("--hang-min-seconds", "5")),
  lostAfter: Number(flag("--lost-after", "15")), // the big pool's slurm.lostAfterSeconds
  cpuProf: argv.includes("--cpu-prof"), // the server writes a V8 CPU profile into <work>/prof when it stops
  python: process.env.SWITCHYARD_PYTHON ?? "/usr/bin/python3",
  work: flag("--work", "") || mkdtempSync(path.join(tmpdir(), "sy-bench-ingest-")),
};
if (!existsSync(path.join(root, "dist/server/main.js"))) {
  console.error("bench/ingest: build first (npm run build)");
  process.exit(2);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (who, msg) => console.log(`[${new Date().toISOString().slice(11, 23)}] ${who.padEnd(8)} ${msg}`);
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * (s.length - 1) + 0.5))] : null;
};
const median = (xs) => pct(xs, 0.5);

// ------------------------------------------------------------------------------------------------ fake Slurm
const fakebin = path.join(opt.work, "fakebin");
mkdirSync(fakebin, { recursive: true });
for (const cmd of ["sinfo", "sbatch", "squeue", "scancel", "scontrol", "srun"]) {
  const f = path.join(fakebin, cmd);
  writeFileSync(
    f,
    `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(path.join(here, "fake-slurm.mjs"))} ${cmd} "$@"\n`,
  );
  chmodSync(f, 0o755);
}
const fakeState = path.join(opt.work, "fake-slurm");
const stepLog = path.join(opt.work, "steps.jsonl");

// ------------------------------------------------------------------------------------------------ server
const home = path.join(opt.work, "home");
mkdirSync(home, { recursive: true, mode: 0o700 });
const clusterFile = path.join(opt.work, "cluster.yaml");
writeFileSync(
  clusterFile,
  [
    "pools:",
    "  - name: big",
    "    executor: slurm",
    "    accelerator: { vendor: cpu }",
    `    devicesPerNode: ${opt.perNode}`,
    `    slurm: { partition: big, agentPython: python3, lostAfterSeconds: ${opt.lostAfter} }`,
    "  - name: small",
    "    accelerator: { vendor: cpu }",
    "    nodes: 1",
    "    devicesPerNode: 2",
    "",
  ].join("\n"),
);
const serverLog = createWriteStream(path.join(opt.work, "server.log"));
const server = spawn(
  process.execPath,
  [
    ...(opt.cpuProf ? ["--cpu-prof", `--cpu-prof-dir=${path.join(opt.work, "prof")}`] : []),
    path.join(root, "bin/switchyard.js"),
    "server",
    "--home",
    home,
    "--cluster",
    clusterFile,
    "--port",
    "0",
  ],
  {
    env: {
      ...process.env,
      PATH: `${fakebin}:${process.env.PATH}`,
      SWITCHYARD_HOME: home,
      SWITCHYARD_PYTHON: opt.python,
      FAKE_SLURM_STATE: fakeState,
      FAKE_SLURM_NODES: String(opt.nodes),
      FAKE_SLURM_PARTITION: "big",
      FAKE_SLURM_STEPLOG: stepLog,
    },
    stdio: ["ignore", "pipe", "pipe"],
  },
);
server.stdout.pipe(serverLog, { end: false });
server.stderr.pipe(serverLog, { end: false });
let url = null;
for (let i = 0; i < 300 && !url; i++) {
  try {
    const info = JSON.parse(readFileSync(path.join(home, "server.json"), "utf8"));
    if (info.pid === server.pid) url = info.url;
  } catch {
    /* not yet */
  }
  if (!url) await sleep(100);
}
if (!url) throw new Error(`server did not start; see ${opt.work}/server.log`);
const token = readFileSync(path.join(home, "token"), "utf8").trim();
async function api(method, p, body) {
  const res = await fetch(url + p, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(method !== "GET" ? { "content-type": "application/json" } : {}) },
    body: method === "GET" ? undefined : JSON.stringify(body ?? {}),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}
log("server", `${url} (pid ${server.pid}), work ${opt.work}`);

/** Agents' process (the fake srun), from the fake Slurm's state. */
const agentPids = () => {
  try {
    const s = JSON.parse(readFileSync(path.join(fakeState, "jobs.json"), "utf8"));
    return Object.values(s.jobs).flatMap((j) => Object.values(j.steps).map((st) => st.pid));
  } catch {
    return [];
  }
};
const jobs = [];
const cleanup = async () => {
  for (const id of jobs) await api("POST", `/api/jobs/${id}/cancel`).catch(() => null);
  await sleep(500);
  for (const pid of agentPids()) {
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      /* gone */
    }
  }
  if (server.exitCode === null) {
    server.kill("SIGTERM");
    for (let i = 0; i < 50 && server.exitCode === null; i++) await sleep(100);
    if (server.exitCode === null) server.kill("SIGKILL");
  }
};
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    await cleanup();
    process.exit(130);
  });
}

// ------------------------------------------------------------------------------------------------ process sampling
const clk = 100; // USER_HZ on Linux
function procSample(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const rss = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
    return { t: Date.now(), cpuS: (Number(f[11]) + Number(f[12])) / clk, rss };
  } catch {
    return null;
  }
}
/** CPU share of one core and RSS of a process between start() and end(), sampled every second. */
function meter(pidFn) {
  const samples = [];
  const timer = setInterval(() => {
    const pid = pidFn();
    const s = pid ? procSample(pid) : null;
    if (s) samples.push(s);
  }, 1000);
  const loads = [];
  const lt = setInterval(() => loads.push(loadavg()[0]), 5000);
  return {
    end() {
      clearInterval(timer);
      clearInterval(lt);
      if (samples.length < 2) return null;
      const a = samples[0];
      const b = samples.at(-1);
      const perSecond = samples.slice(1).map((s, i) => (s.cpuS - samples[i].cpuS) / ((s.t - samples[i].t) / 1000));
      return {
        seconds: (b.t - a.t) / 1000,
        cpuShare: (b.cpuS - a.cpuS) / ((b.t - a.t) / 1000),
        cpuShareP95: pct(perSecond, 0.95),
        rssStartMiB: a.rss / 2 ** 20,
        rssEndMiB: b.rss / 2 ** 20,
        rssMaxMiB: Math.max(...samples.map((s) => s.rss)) / 2 ** 20,
        load1: loads.length ? [Math.min(...loads), Math.max(...loads)] : [loadavg()[0], loadavg()[0]],
      };
    },
  };
}

// ------------------------------------------------------------------------------------------------ jobs
async function submit(name, lines) {
  const dir = path.join(opt.work, name);
  mkdirSync(dir, { recursive: true });
  const yaml = [`name: ${name}`, `workdir: ${JSON.stringify(dir)}`, ...lines, ""].join("\n");
  writeFileSync(path.join(dir, "job.yaml"), yaml);
  const job = await api("POST", "/api/jobs", { yaml, file: path.join(dir, "job.yaml") });
  jobs.push(job.id);
  return job.id;
}

/** Kills and hangs of rank 1 of the small job; per fault: fault -> incident (detectedAt), and the hang timeout. */
async function detectionSeries(jobId, label) {
  const out = [];
  const faults = [...Array(opt.kills).fill("kill"), ...Array(opt.hangs).fill("hang")];
  for (const kind of faults) {
    let view;
    for (;;) {
      view = await api("GET", `/api/jobs/${jobId}`);
      const cur = view.attempts.at(-1);
      if (cur && cur.endedAt === null && view.last?.attempt === cur.n && view.last.step >= 5) break;
      await sleep(200);
    }
    await sleep(Math.random() * 1000);
    const attemptN = view.attempts.at(-1).n;
    const at = Date.now();
    await api("POST", `/api/jobs/${jobId}/chaos`, { action: kind === "kill" ? "kill-rank" : "hang-rank", rank: 1 });
    let incident;
    for (let i = 0; ; i++) {
      view = await api("GET", `/api/jobs/${jobId}`);
      incident = view.incidents.find((x) => x.attempt === attemptN);
      if (incident) break;
      if (i > 600) throw new Error(`${label}: no incident for the ${kind} within 60 s`);
      await sleep(100);
    }
    const timeout = /timeout ([\d.]+)s/.exec(incident.summary ?? incident.message ?? JSON.stringify(incident));
    const row = {
      kind,
      cause: incident.cause,
      detectionMs: incident.detectedAt - at,
      timeoutS: timeout ? Number(timeout[1]) : null,
    };
    log(label, `${kind}: ${incident.cause} detected in ${row.detectionMs} ms`);
    out.push(row);
  }
  return out;
}

/** Ingestion lag while the big job runs: API last step, and rank 0's / the last rank's step lists. */
function lagProbe(jobId, lastRank) {
  const steps = new Map(); // step -> {first, last} write times from the agents' process
  const apiSeen = new Map(); // step -> first time the job view showed last.step >= step
  const rankLag = { 0: [], [lastRank]: [] };
  const seenRank = { 0: new Set(), [lastRank]: new Set() };
  let stop = false;
  const readStepLog = () => {
    try {
      for (const line of readFileSync(stepLog, "utf8").split("\n")) {
        if (!line) continue;
        const s = JSON.parse(line);
        steps.set(s.step, s);
      }
    } catch {
      /* not yet */
    }
  };
  const viewLoop = (async () => {
    while (!stop) {
      const v = await api("GET", `/api/jobs/${jobId}`).catch(() => null);
      const now = Date.now();
      const last = v?.last?.step ?? 0;
      for (let k = 1; k <= last; k++) if (!apiSeen.has(k)) apiSeen.set(k, now);
      await sleep(200);
    }
  })();
  const rankLoop = (async () => {
    let first = true;
    while (!stop) {
      for (const r of [0, lastRank]) {
        const list = await api("GET", `/api/jobs/${jobId}/steps?rank=${r}`).catch(() => []);
        const now = Date.now();
        for (const s of list) {
          if (seenRank[r].has(s.step)) continue;
          seenRank[r].add(s.step);
          if (!first) rankLag[r].push(now - s.t); // the report's own time (written by the agents' process)
        }
      }
      first = false;
      await sleep(500);
    }
  })();
  return {
    async end() {
      stop = true;
      await Promise.all([viewLoop, rankLoop]);
      readStepLog();
      const lags = [];
      const firstSeen = Math.min(...apiSeen.keys());
      for (const [k, t] of apiSeen) {
        const s = steps.get(k);
        if (s && k > firstSeen) lags.push(t - s.first);
      }
      const burst = [...steps.values()].map((s) => s.last - s.first);
      const summary = (xs) => ({
        n: xs.length,
        p50: median(xs),
        p95: pct(xs, 0.95),
        max: xs.length ? Math.max(...xs) : null,
      });
      return {
        apiLastStep: summary(lags),
        rank0: summary(rankLag[0]),
        lastRank: summary(rankLag[lastRank]),
        writeBurstMs: summary(burst),
        stepsWritten: steps.size,
      };
    },
  };
}

// ------------------------------------------------------------------------------------------------ main
const machine = {
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model,
  memGiB: Math.round(totalmem() / 2 ** 30),
  kernel: release(),
  node: process.version,
};
const result = { options: opt, machine };
try {
  const small = await submit("ingest-small", [
    "pools: [small]",
    "nodes: 1",
    "procsPerNode: 2",
    "env: { GLOO_SOCKET_IFNAME: lo }",
    `command: ${JSON.stringify([opt.python, path.join(root, "test/fixtures/ranks/gloo_pair.py"), "--steps", "1000000", "--step-sleep", "0.2"])}`,
    "recovery: { maxRestarts: 1000, backoffSeconds: 0.5, maxBackoffSeconds: 0.5, strikesBeforeCordon: 100000, " +
      "graceSeconds: 2, poolFailures: { count: 100000, windowSeconds: 60 } }",
    `detection: { hangMinSeconds: ${opt.hangMinSeconds}, hangMultiple: 3, stackDumpSeconds: 2 }`,
  ]);
  log("small", `job ${small} submitted`);

  // Baseline: the server with the small job only.
  const base = meter(() => server.pid);
  const baseStart = Date.now();
  result.detectionBaseline = await detectionSeries(small, "baseline");
  while (Date.now() - baseStart < opt.baselineSeconds * 1000) await sleep(500);
  result.baseline = base.end();
  log("baseline", JSON.stringify(result.baseline));

  // Load: 4,096 ranks.
  const world = opt.nodes * opt.perNode;
  const submittedAt = Date.now();
  const big = await submit("ingest-big", [
    "pools: [big]",
    `nodes: ${opt.nodes}`,
    `procsPerNode: ${opt.perNode}`,
    'command: ["/bin/true"]', // never run: the fake srun plays the agents and ranks
    "recovery: { maxRestarts: 3, strikesBeforeCordon: 100000 }",
    "detection: { hangMinSeconds: 60 }",
  ]);
  log("big", `job ${big} submitted (${world} ranks, ${opt.nodes} hosts) in ${Date.now() - submittedAt} ms`);
  for (let i = 0; ; i++) {
    const v = await api("GET", `/api/jobs/${big}`);
    if (v.last) {
      result.bigFirstStepVisibleMs = Date.now() - submittedAt;
      log("big", `first step visible ${result.bigFirstStepVisibleMs} ms after submission (state ${v.state})`);
      break;
    }
    if (["FAILED", "CANCELLED"].includes(v.state))
      throw new Error(`big job ${v.state}: ${JSON.stringify(v.incidents)}`);
    if (i > 600) throw new Error("big job: no step within 120 s");
    await sleep(200);
  }
  await sleep(opt.warmSeconds * 1000);
  const srvMeter = meter(() => server.pid);
  const agentMeter = meter(() => agentPids()[0]);
  const lag = lagProbe(big, world - 1);
  const loadStart = Date.now();
  result.detectionLoaded = await detectionSeries(small, "loaded");
  while (Date.now() - loadStart < opt.loadSeconds * 1000) await sleep(500);
  result.loaded = srvMeter.end();
  result.agents = agentMeter.end();
  result.lag = await lag.end();
  const bigView = await api("GET", `/api/jobs/${big}`);
  result.bigState = {
    state: bigView.state,
    incidents: bigView.incidents.map((i) => `${i.cause}: ${i.summary ?? ""}`.slice(0, 300)),
    last: bigView.last,
  };
  log("loaded", JSON.stringify(result.loaded));
  log("agents", JSON.stringify(result.agents));
  log("lag", JSON.stringify(result.lag));
  log(
    "big",
    `state ${bigView.state}, ${bigView.incidents.length} incident(s) ${JSON.stringify(result.bigState.incidents)}, last step ${bigView.last?.step}`,
  );
} catch (err) {
  result.error = String(err.stack ?? err);
  log("error", result.error);
} finally {
  await cleanup();
}

// ------------------------------------------------------------------------------------------------ tables
const f1 = (x) => (x === null || x === undefined ? "—" : x.toFixed(1));
if (result.baseline && result.loaded) {
  console.log(
    "\n| phase | window (s) | server CPU (% of one core) avg / p95 of 1-s samples | server RSS (MiB) start -> end (max) | load average (1 min) |",
  );
  console.log("|---|---:|---|---|---|");
  for (const [name, m] of [
    ["small job only", result.baseline],
    [`+ ${opt.nodes * opt.perNode} ranks`, result.loaded],
  ]) {
    console.log(
      `| ${name} | ${f1(m.seconds)} | ${f1(m.cpuShare * 100)} / ${f1(m.cpuShareP95 * 100)} | ${f1(m.rssStartMiB)} -> ${f1(m.rssEndMiB)} (${f1(m.rssMaxMiB)}) | ${m.load1.map((x) => x.toFixed(2)).join("-")} |`,
    );
  }
  if (result.agents)
    console.log(`agents' process (the simulated hosts): CPU ${f1(result.agents.cpuShare * 100)}% of one core`);
}
if (result.lag) {
  const l = result.lag;
  const row = (name, x) => `| ${name} | ${x.n} | ${x.p50} | ${x.p95} | ${x.max} |`;
  console.log("\n| ingestion lag (ms) | n | p50 | p95 | max |\n|---|---:|---:|---:|---:|");
  console.log(row("first report of a step written -> job's last step in the API (200 ms polls)", l.apiLastStep));
  console.log(row("rank 0's report -> in its step list (500 ms polls)", l.rank0));
  console.log(row(`rank ${opt.nodes * opt.perNode - 1}'s report -> in its step list (500 ms polls)`, l.lastRank));
  console.log(row("writing one step's reports of every rank (first -> last)", l.writeBurstMs));
}
for (const [name, rows] of [
  ["without load", result.detectionBaseline],
  ["with load", result.detectionLoaded],
]) {
  if (!rows) continue;
  const by = (k) => rows.filter((r) => r.kind === k).map((r) => r.detectionMs);
  console.log(
    `detection ${name}: kill -> incident ${by("kill").join(", ")} ms (median ${median(by("kill"))}); ` +
      `hang -> incident ${by("hang").join(", ")} ms (timeout ${rows.find((r) => r.kind === "hang")?.timeoutS} s)`,
  );
}
result.machine.loadAfter = loadavg();
const out = path.join(opt.work, "results.json");
writeFileSync(out, JSON.stringify(result, null, 1));
console.log(`results: ${out}`);
process.exit(result.error ? 1 : 0);
