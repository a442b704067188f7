// Healthy soak: switchyard's gray-failure detection on healthy runs of the Slurm testbed for a fixed wall time, with
// checkpoints and eval steps, to count false positives. Two lanes run at the same time on partition `ascend`, each
// resubmitting its job when it ends, until the time is up (then the running jobs are cancelled):
//
//   lane 1  bench/gray/soak-small.yaml   the char-GPT example at its default size, checkpoint every 20, eval every 50
//   lane 2  bench/gray/soak-wide.yaml    the benchmark's communication-heavy size, checkpoint every 20, eval every 40
//
//   npm run build && node bench/gray/soak.mjs [--minutes 20] [--work DIR] [--lanes a.yaml,b.yaml]
//
// Counted from switchyard's own events and incidents: slowdowns detected, slowdown incidents opened (network,
// straggler, degraded), evictions (slowdown.evict), pre-flight exclusions, and hosts drained by switchyard. On a
// healthy testbed every one of them should be 0. Not a test (too long for CI); see README.md in this folder.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  failWith,
  loadSampler,
  machineFacts,
  options,
  rankLog,
  root,
  runSync,
  sinfoNodes,
  sleep,
  slurmClusterYaml,
  slurmEnv,
  startServer,
  terminal,
} from "../lib/bench.mjs";

const here = fileURLToPath(new URL(".", import.meta.url));
const fail = failWith("bench/gray soak");
if (!existsSync(path.join(root, "dist/server/main.js")) && !existsSync(path.join(root, "dist/cli/main.js"))) {
  fail("not built", "npm run build");
}

const { flag } = options(process.argv.slice(2), { known: ["--minutes", "--work", "--lanes"], fail });
const minutes = Number(flag("--minutes", "20"));
if (!Number.isFinite(minutes) || minutes < 1 || minutes > 24 * 60) fail("--minutes must be in [1, 1440]");
const laneFiles = flag("--lanes", "soak-small.yaml,soak-wide.yaml")
  .split(",")
  .map((f) => path.resolve(here, f));
for (const f of laneFiles) if (!existsSync(f)) fail(`no job file ${f}`, "--lanes a.yaml,b.yaml (in bench/gray)");
const work = flag("--work", "") || mkdtempSync(path.join(tmpdir(), "sy-soak-gray-"));
const python = process.env.SWITCHYARD_PYTHON ?? "/usr/bin/python3";

const log = (msg) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

/** The partition's hosts as `name|state|reason` lines. */
function hostLines() {
  const nodes = sinfoNodes("ascend");
  if (!nodes) fail(`sinfo: ${runSync("sinfo", ["-p", "ascend"]).out}`, "bash scripts/testbed.sh up");
  return [...nodes].map(([name, n]) => `${name}|${n.state}|${n.reason ?? "none"}`);
}
const drainedBefore = new Set(
  hostLines()
    .filter((l) => /drain/.test(l))
    .map((l) => l.split("|")[0]),
);

const home = path.join(work, "home");
mkdirSync(home, { recursive: true });
const cluster = path.join(work, "cluster.yaml");
writeFileSync(cluster, slurmClusterYaml({ pool: "ascend", partition: "ascend", python, devicesPerNode: 2 }));
const server = await startServer({
  home,
  cluster,
  logFile: path.join(work, "server.log"),
  env: { ...slurmEnv, SWITCHYARD_PYTHON: python },
}).catch((err) => fail(err.message));
const { url, api } = server;

let stopping = false;
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    stopping = true;
  });
}

const machine = {
  ...machineFacts(),
  loadBefore: loadavg().map((x) => Number(x.toFixed(2))),
};
log(`soak: ${minutes} min, lanes ${laneFiles.map((f) => path.basename(f)).join(", ")}; work ${work}; server ${url}`);
const startedAt = Date.now();
const deadline = startedAt + minutes * 60_000;
const loads = loadSampler(10_000);
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
loads.stop();
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
    const text = await rankLog(api, j.id, 0, n);
    j.evalSteps += text.split("\n").filter((l) => l.startsWith("eval at step")).length;
  }
}
// Only drains by this soak's server: the hosts it has cordoned itself (the testbed is shared; another server's drain
// is left alone).
const cordonedHere = new Set(
  (await api("GET", "/api/nodes").catch(() => [])).filter((n) => n.cordoned).map((n) => n.name),
);
const drainedBySwitchyard = hostLines().filter(
  (l) => /\|switchyard/.test(l) && !drainedBefore.has(l.split("|")[0]) && cordonedHere.has(l.split("|")[0]),
);
await server.stop();
// Hosts this soak's server drained are resumed (their reason is in the results).
for (const line of drainedBySwitchyard) {
  const name = line.split("|")[0];
  runSync("scontrol", ["update", `NodeName=${name}`, "State=RESUME"]);
  log(`${name} resumed in Slurm (drained by this soak's server: ${line})`);
}

const sum = (k) => perJob.reduce((a, j) => a + (j[k] ?? 0), 0);
const result = {
  minutes,
  wallS: (Date.now() - startedAt) / 1000,
  machine: {
    ...machine,
    loadDuring: loads.range(),
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
