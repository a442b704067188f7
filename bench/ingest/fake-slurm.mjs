// A stand-in Slurm for the ingestion benchmark: one script that answers as sinfo, sbatch, squeue, scancel, scontrol
// and srun (bench/ingest/run.mjs puts shims named after them first on the server's PATH). The switchyard server and
// its Slurm executor are the real, unchanged code; only the workload manager and the hosts are played here:
//
//   sinfo     FAKE_SLURM_NODES hosts v0001.. in partition FAKE_SLURM_PARTITION, idle, 8 CPUs each
//   sbatch    a new allocation, RUNNING at once (state in FAKE_SLURM_STATE)
//   squeue    the allocation's state and its steps
//   scancel   forgets an allocation or a step (and stops the step's agents process)
//   scontrol  `show hostnames` (comma lists only) and `update` (accepted, nothing changes)
//   srun      plays every node agent of the step in this one process: per rank, what agent/node_agent.py writes
//             into the attempt folder (rank-N.log, a heartbeat rank-N.hb every second, rank-N.exit when it ends)
//             and what the rank's SDK would append to rank-N.jsonl (a `start` line, then one `step` report every
//             FAKE_SLURM_STEP_S seconds, all ranks in lockstep as DDP ranks are). It acts on ctl/stop (every rank
//             exits 143) and ctl/rank-N.*.SIGKILL (that rank exits 137). FAKE_SLURM_STEPLOG (optional) receives one
//             JSON line per step: when its first and last report were written.
//
// Usage (through the shims): <cmd> args...   or directly: node fake-slurm.mjs <cmd> args...
import {
  appendFileSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";

const [cmd = "", ...args] = process.argv.slice(2);
const stateDir = process.env.FAKE_SLURM_STATE;
if (!stateDir) {
  process.stderr.write("fake-slurm: FAKE_SLURM_STATE is not set\n");
  process.exit(2);
}
mkdirSync(stateDir, { recursive: true });
const nodeCount = Number(process.env.FAKE_SLURM_NODES ?? "512");
const partition = process.env.FAKE_SLURM_PARTITION ?? "big";
const sep = "\u001f";
const nodeName = (i) => `v${String(i + 1).padStart(4, "0")}`;
const stateFile = path.join(stateDir, "jobs.json");

function load() {
  try {
    return JSON.parse(readFileSync(stateFile, "utf8"));
  } catch {
    return { next: 100, jobs: {} };
  }
}
function save(state) {
  const tmp = `${stateFile}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(state));
  renameSync(tmp, stateFile);
}
/** Read-modify-write of the state under a lock (sbatch, srun and scancel may run at once). */
function withState(fn) {
  const lock = path.join(stateDir, "lock.d");
  for (let i = 0; ; i++) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      if (i > 500) throw new Error("fake-slurm: state lock held too long");
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    }
  }
  try {
    const state = load();
    const out = fn(state);
    save(state);
    return out;
  } finally {
    rmdirSync(lock);
  }
}
const opt = (name) => {
  const hit = args.find((a) => a.startsWith(`--${name}=`));
  return hit ? hit.slice(name.length + 3) : null;
};

switch (cmd) {
  case "sinfo": {
    const lines = [];
    for (let i = 0; i < nodeCount; i++) {
      const octets = `${10}.${99}.${Math.floor(i / 250)}.${(i % 250) + 2}`;
      lines.push([nodeName(i), `${partition}*`, "idle", "(null)", "8", octets, "none"].join(sep));
    }
    process.stdout.write(lines.join("\n") + "\n");
    break;
  }
  case "sbatch": {
    const nodes = (opt("nodelist") ?? "").split(",").filter(Boolean);
    const id = withState((s) => {
      const id = String(s.next++);
      s.jobs[id] = { state: "RUNNING", nodes, name: opt("job-name") ?? "", steps: {} };
      return id;
    });
    process.stdout.write(`${id}\n`);
    break;
  }
  case "squeue": {
    const j = args[args.indexOf("-j") + 1] ?? "";
    const job = load().jobs[j];
    if (args.includes("-s")) {
      if (job) for (const [sid, st] of Object.entries(job.steps)) process.stdout.write(`${j}.${sid} ${st.name}\n`);
    } else if (job) {
      process.stdout.write(`${job.state}${sep}${job.nodes.join(",")}\n`);
    } else {
      process.stderr.write("slurm_load_jobs error: Invalid job id specified\n");
      process.exit(1);
    }
    break;
  }
  case "scancel": {
    const id = args.find((a) => !a.startsWith("-")) ?? "";
    const [j, sid] = id.split(".");
    const pids = withState((s) => {
      const job = s.jobs[j];
      if (!job) return [];
      if (sid !== undefined) {
        const st = job.steps[sid];
        delete job.steps[sid];
        return st ? [st.pid] : [];
      }
      delete s.jobs[j];
      return Object.values(job.steps).map((st) => st.pid);
    });
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        /* gone */
      }
    }
    break;
  }
  case "scontrol": {
    if (args[0] === "show" && args[1] === "hostnames") {
      process.stdout.write((args[2] ?? "").split(",").filter(Boolean).join("\n") + "\n");
    }
    break;
  }
  case "srun":
    await srun();
    break;
  default:
    process.stderr.write(`fake-slurm: unknown command ${cmd}\n`);
    process.exit(2);
}

async function srun() {
  // The simulated hosts stand for other machines: on a 2-core machine shared with other work they must not starve
  // (a starved simulator writes late heartbeats and looks like dead hosts). As root: nice -10, for the process and
  // for its session's autogroup (the server starts srun in a session of its own).
  try {
    os.setPriority(-10);
    writeFileSync("/proc/self/autogroup", "-10");
  } catch {
    /* not root: default priority */
  }
  const jobId = opt("jobid") ?? "";
  const nodes = (opt("nodelist") ?? "").split(",").filter(Boolean);
  const perNode = Number(opt("ntasks-per-node") ?? "1");
  const name = opt("job-name") ?? "";
  const dir = args[args.indexOf("--dir") + 1];
  if (!dir || !existsSync(dir)) {
    process.stderr.write("fake srun: no --dir\n");
    process.exit(2);
  }
  const attempt = Number(process.env.SWITCHYARD_ATTEMPT ?? "1");
  const stepS = Number(process.env.FAKE_SLURM_STEP_S ?? "1");
  const stepLog = process.env.FAKE_SLURM_STEPLOG ?? null;
  withState((s) => {
    const job = s.jobs[jobId];
    if (job) job.steps[String(Object.keys(job.steps).length)] = { name, pid: process.pid };
  });
  const world = nodes.length * perNode;
  const ranks = Array.from({ length: world }, (_, r) => ({
    r,
    node: nodes[Math.floor(r / perNode)],
    pid: 100000 + r,
    live: true,
    report: path.join(dir, `rank-${r}.jsonl`),
    hb: path.join(dir, `rank-${r}.hb`),
    exit: path.join(dir, `rank-${r}.exit`),
  }));
  const t0 = Date.now();
  for (const k of ranks) {
    writeFileSync(path.join(dir, `rank-${k.r}.log`), `fake rank ${k.r} on ${k.node}\n`, { flag: "a" });
    appendFileSync(k.report, JSON.stringify({ t: t0 / 1000, kind: "start", rank: k.r, attempt, pid: k.pid }) + "\n");
  }
  const writeJson = (file, value) => {
    const tmp = `${file}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(value) + "\n");
    renameSync(tmp, file);
  };
  const exitRank = (k, code) => {
    if (!k.live) return;
    k.live = false;
    writeJson(k.exit, { code, t: Date.now() });
  };
  let step = 0;
  let ticks = 0;
  let done = false;
  const finish = (code) => {
    if (done) return;
    done = true;
    for (const k of ranks) exitRank(k, code);
    process.exit(0);
  };
  process.on("SIGTERM", () => finish(137));
  const seen = new Set();
  const ctl = path.join(dir, "ctl");
  // Heartbeats: each rank once a second, spread over the second in 10 slices (agents are not in step with each
  // other); reports: every rank at each step, in lockstep.
  const slices = 10;
  let slice = 0;
  const hbTimer = setInterval(() => {
    const now = Date.now();
    for (let i = slice; i < ranks.length; i += slices) {
      const k = ranks[i];
      if (k.live) writeJson(k.hb, { t: now, node: k.node, pid: k.pid, state: "S", cpuTicks: ticks, rssPages: 1000 });
    }
    slice = (slice + 1) % slices;
    ticks++;
  }, 1000 / slices);
  const stepTimer = setInterval(() => {
    step++;
    const first = Date.now();
    for (const k of ranks) {
      if (!k.live) continue;
      const line = { t: Date.now() / 1000, kind: "step", rank: k.r, attempt, step, loss: 4 / (1 + 0.01 * step) };
      line.tokens = 4096;
      line.compute_s = stepS;
      const fd = openSync(k.report, "a");
      writeSync(fd, JSON.stringify(line) + "\n");
      closeSync(fd);
    }
    if (stepLog) appendFileSync(stepLog, JSON.stringify({ step, first, last: Date.now(), ranks: world }) + "\n");
  }, stepS * 1000);
  const ctlTimer = setInterval(() => {
    let names;
    try {
      names = readdirSync(ctl);
    } catch {
      return;
    }
    for (const n of names) {
      if (seen.has(n)) continue;
      seen.add(n);
      if (n === "stop") {
        clearInterval(hbTimer);
        clearInterval(stepTimer);
        clearInterval(ctlTimer);
        finish(143);
      }
      const m = /^rank-(\d+)\..*\.(SIG[A-Z0-9]+)$/.exec(n);
      if (m && (m[2] === "SIGKILL" || m[2] === "SIGTERM")) {
        const k = ranks[Number(m[1])];
        if (k) exitRank(k, m[2] === "SIGKILL" ? 137 : 143);
      }
    }
  }, 100);
}
