// Healthy soak: switchyard's gray-failure detection on healthy runs of the Slurm testbed for a fixed wall time, with
// checkpoints and eval steps, to count false positives. Two lanes run at the same time on partition `ascend`, each
// resubmitting its job when it ends, until the time is up (then the running jobs are cancelled):
//
//   lane 1  bench/gray/soak-small.yaml   the char-GPT example at its default size, checkpoint every 20, eval every 50
//   lane 2  bench/gray/soak-wide.yaml    the benchmark's communication-heavy size, checkpoint every 20, eval every 40
//
//   npm run build && node bench/gray/soak.mjs [--minutes 30] [--work DIR]
//
// Counted from switchyard's own events and incidents: slowdowns detected, slowdown incidents opened (network,
// straggler, degraded), evictions (slowdown.evict), pre-flight exclusions, and hosts drained by switchyard. On a
// healthy testbed every one of them should be 0. Not a test (too long for CI); see README.md in this folder.
import { spawn, spawnSync } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release, tmpdir, totalmem } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const root = fileURLToPath(new URL("../../", import.meta.url));
const fail = (msg, fix) => {
  console.error(`bench/gray soak: ${msg}${fix ? ` (fix: ${fix})` : ""}`);
  process.exit(2);
};
if (!existsSync(path.join(root, "dist/server/main.js")) && !existsSync(path.join(root, "dist/cli/main.js"))) {
  fail("not built", "npm run build");
}

const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  if (!["--minutes", "--work", "--lanes"].includes(argv[i]))
    fail(`unknown option ${argv[i]}`, "--minutes N, --work DIR");
  if (argv[i + 1] === undefined) fail(`${argv[i]} needs a value`);
}
const flag = (name, fallback) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : fallback;
};
const minutes = Number(flag("--minutes", "30"));
if (!Number.isFinite(minutes) || minutes < 1 || minutes > 24 * 60) fail("--minutes must be in [1, 1440]");
const laneFiles = flag("--lanes", "soak-small.yaml,soak-wide.yaml")
  .split(",")
  .map((f) => path.resolve(here, f));
for (const f of laneFiles) if (!existsSync(f)) fail(`no job file ${f}`, "--lanes a.yaml,b.yaml (in bench/gray)");
const work = flag("--work", "") || mkdtempSync(path.join(tmpdir(), "sy-soak-gray-"));
const python = process.env.SWITCHYARD_PYTHON ?? "/usr/bin/python3";
const slurmEnv = { SLURM_CONF: process.env.SLURM_CONF ?? "/run/switchyard-testbed/slurm.conf" };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (msg) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

const sinfo = spawnSync("sinfo", ["-h", "-N", "-p", "ascend", "-o", "%N|%T|%E"], {
  encoding: "utf8",
  env: { ...process.env, ...slurmEnv },
});
if (sinfo.status !== 0) fail(`sinfo: ${sinfo.stderr.trim()}`, "bash scripts/testbed.sh up");
const drainedBefore = new Set(
  sinfo.stdout
    .split("\n")
    .filter((l) => /drain/.test(l))
    .map((l) => l.split("|")[0]),
);

const home = path.join(work, "home");
mkdirSync(home, { recursive: true });
const cluster = path.join(work, "cluster.yaml");
writeFileSync(
  cluster,
  [
    "strikeWindowSeconds: 3600",
    "pools:",
    "  - name: ascend",
    "    executor: slurm",
    "    accelerator: { vendor: ascend, model: 910B }",
    "    devicesPerNode: 2",
    `    slurm: { partition: ascend, agentPython: ${python}, env: { GLOO_SOCKET_IFNAME: eth0 } }`,
    "",
  ].join("\n"),
);
const serverLog = createWriteStream(path.join(work, "server.log"));
const server = spawn(
  process.execPath,
  [path.join(root, "bin/switchyard.js"), "server", "--home", home, "--cluster", cluster, "--port", "0"],
  {
    env: { ...process.env, ...slurmEnv, SWITCHYARD_HOME: home, SWITCHYARD_PYTHON: python },
    stdio: ["ignore", "pipe", "pipe"],
  },
);
server.stdout.pipe(serverLog);
server.stderr.pipe(serverLog);
const serverExited = new Promise((r) => server.once("exit", r));
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
if (!url) fail(`the server did not start; see ${work}/server.log`);
const token = readFileSync(path.join(home, "token"), "utf8").trim();
async function api(method, p, body) {
  if (method !== "GET") body ??= {};
  const res = await fetch(url + p, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

let stopping = false;
const stopServer = async () => {
  server.kill("SIGTERM");
  await Promise.race([serverExited, sleep(10_000)]);
};
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    stopping = true;
  });
}

const machine = {
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model,
  memGiB: Math.round(totalmem() / 2 ** 30),
  kernel: release(),
  node: process.version,
  loadBefore: loadavg().map((x) => Number(x.toFixed(2))),
};
log(`soak: ${minutes} min, lanes ${laneFiles.map((f) => path.basename(f)).join(", ")}; work ${work}; server ${url}`);
const startedAt = Date.now();
const deadline = startedAt + minutes * 60_000;
const loads = [];
const loadTimer = setInterval(() => loads.push(loadavg()[0]), 10_000);
const terminal = (s) => ["SUCCEEDED", "FAILED", "CANCELLED"].includes(s);
const jobs = []; // {lane, id}

async function lane(file) {
  const yaml = readFileSync(file, "utf8");
  while (!stopping && Date.now() < deadline - 60_000) {
    const { id } = await api("POST", "/api/jobs", { yaml, file });
    jobs.push({ lane: path.basename(file), id });
    log(`${path.basename(file)}: job ${id} submitted`);
    for (;;) {
      await sleep(2000);
      const v = await api("GET", `/api/jobs/${id}`);
      if (terminal(v.state)) {
        log(`${id}: ${v.state} at step ${v.last?.step ?? "-"}`);
        break;
      }
      if (stopping || Date.now() >= deadline) {
        await api("POST", `/api/jobs/${id}/cancel`).catch(() => null);
        log(`${id}: time is up at step ${v.last?.step ?? "-"}: cancelled`);
        return;
      }
    }
  }
}

let error = null;
try {
  await Promise.all(laneFiles.map((f) => lane(f)));
} catch (err) {
  error = String(err.stack ?? err);
  log(`ERROR ${error}`);
}
clearInterval(loadTimer);
await sleep(3000);

// ------------------------------------------------------------------------------------------------ counting
const perJob = [];
for (const j of jobs) {
  const v = await api("GET", `/api/jobs/${j.id}`);
  const events = await api("GET", `/api/jobs/${j.id}/events`);
  const report = await api("GET", `/api/jobs/${j.id}/report`).catch(() => null);
  const count = (kind) => events.filter((e) => e.kind === kind).length;
  const grayIncidents = v.incidents.filter((i) => ["network", "straggler", "degraded"].includes(i.cause));
  perJob.push({
    lane: j.lane,
    id: j.id,
    state: v.state,
    lastStep: v.last?.step ?? null,
    attempts: v.attempts.length,
    wallS: report ? report.ledger.wallMs / 1000 : null,
    checkpoints: count("checkpoint.saved"),
    slowdownsDetected: count("slowdown.detected"),
    slowdownIncidents: grayIncidents.length,
    evictions: count("slowdown.evict"),
    preflightExclusions: count("preflight.network"),
    otherIncidents: v.incidents.filter((i) => !grayIncidents.includes(i)).map((i) => `${i.cause}: ${i.summary}`),
    degradedS: report ? (report.ledger.totals.degraded ?? 0) / 1000 : null,
    slowdownEvents: events
      .filter((e) => e.kind.startsWith("slowdown") || e.kind === "preflight.network")
      .map((e) => `${new Date(e.t).toISOString().slice(11, 19)} ${e.kind}: ${e.message}`),
  });
}
// Eval steps seen: from rank 0's logs of each job's attempts.
for (const j of perJob) {
  j.evalSteps = 0;
  for (let n = 1; n <= j.attempts; n++) {
    for (let offset = 0, rest = ""; ;) {
      const page = await api("GET", `/api/jobs/${j.id}/logs?rank=0&attempt=${n}&offset=${offset}`).catch(() => null);
      if (!page || page.text === "") break;
      const lines = (rest + page.text).split("\n");
      rest = lines.pop() ?? "";
      j.evalSteps += lines.filter((l) => l.startsWith("eval at step")).length;
      offset = page.offset;
    }
  }
}
const after = spawnSync("sinfo", ["-h", "-N", "-p", "ascend", "-o", "%N|%T|%E"], {
  encoding: "utf8",
  env: { ...process.env, ...slurmEnv },
});
const drainedBySwitchyard = after.stdout
  .split("\n")
  .filter((l) => /\|switchyard/.test(l) && !drainedBefore.has(l.split("|")[0]))
  .map((l) => l.trim());
await stopServer();
// Hosts this soak's server drained are resumed (their reason is in the results).
for (const line of drainedBySwitchyard) {
  const name = line.split("|")[0];
  spawnSync("scontrol", ["update", `NodeName=${name}`, "State=RESUME"], { env: { ...process.env, ...slurmEnv } });
  log(`${name} resumed in Slurm (drained by this soak's server: ${line})`);
}

const sum = (k) => perJob.reduce((a, j) => a + (j[k] ?? 0), 0);
const result = {
  minutes,
  wallS: (Date.now() - startedAt) / 1000,
  machine: {
    ...machine,
    loadDuring: loads.length
      ? { min: Math.min(...loads), median: loads.sort((a, b) => a - b)[loads.length >> 1], max: Math.max(...loads) }
      : null,
  },
  totals: {
    jobs: perJob.length,
    checkpoints: sum("checkpoints"),
    evalSteps: sum("evalSteps"),
    slowdownsDetected: sum("slowdownsDetected"),
    slowdownIncidents: sum("slowdownIncidents"),
    evictions: sum("evictions"),
    preflightExclusions: sum("preflightExclusions"),
    hostsDrainedBySwitchyard: drainedBySwitchyard.length,
  },
  drainedBySwitchyard,
  jobs: perJob,
  error,
};
writeFileSync(path.join(work, "soak-results.json"), JSON.stringify(result, null, 1));
console.log(JSON.stringify(result.totals));
for (const j of perJob) {
  console.log(
    `${j.lane} ${j.id}: ${j.state} at step ${j.lastStep}, ${j.checkpoints} checkpoints, ${j.evalSteps} evals, ` +
      `${j.slowdownsDetected} slowdowns, ${j.slowdownIncidents} gray incidents, ${j.evictions} evictions` +
      (j.otherIncidents.length ? `; other incidents: ${j.otherIncidents.join(" | ")}` : ""),
  );
  for (const e of j.slowdownEvents) console.log(`    ${e}`);
}
console.log(`load average during: ${JSON.stringify(result.machine.loadDuring)}; results: ${work}/soak-results.json`);
const bad = result.totals.evictions + result.totals.slowdownIncidents + result.totals.hostsDrainedBySwitchyard;
process.exitCode = error ? 1 : bad > 0 ? 1 : 0;
