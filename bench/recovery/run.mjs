// Recovery benchmark: the chargpt example (2 ranks, DDP/gloo on CPU) under the same fault schedule — rank 1 killed
// (SIGKILL) at about step S1, rank 1 hung (SIGSTOP) at about step S2 — run side by side, at the same time:
//
//   switchyard   its server and the job; faults through POST /api/jobs/:id/chaos
//   torchrun     torch 1.13's torchrun (through torchrun_shim.py) with --max_restarts; the script resumes from the
//                newest verified checkpoint through resume_wrapper.py (BENCH_RESUME=1)
//   none         no supervisor: no_supervisor.sh restarts the whole gang from scratch when it fails
//
//   npm run build && node bench/recovery/run.mjs [--steps 400 --kill-at 110 --hang-at 290 ...]
//
// Per fault: detection latency (fault -> the supervisor notices), fault -> first new step, steps lost (recomputed),
// and per run goodput (productive / wall), from switchyard's own /report for switchyard and from the same ledger code
// (dist/core/goodput.js) fed with the ranks' step timestamps for the others. See README.md in this folder.
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  failWith,
  freePort,
  killPid,
  launch,
  loadSampler,
  logger,
  machineFacts,
  options,
  Report,
  root,
  sleep,
  startServer,
  stopChildren,
  terminal as isTerminal,
} from "../lib/bench.mjs";

const here = fileURLToPath(new URL(".", import.meta.url));
if (!existsSync(path.join(root, "dist/core/goodput.js"))) failWith("bench/recovery")("not built", "npm run build");
const { buildLedger } = await import(path.join(root, "dist/core/goodput.js"));
const { percentile } = await import(path.join(root, "dist/core/hang.js"));

// ------------------------------------------------------------------------------------------------ options
const { flag } = options(process.argv.slice(2));
const opt = {
  steps: Number(flag("--steps", "400")),
  ckptEvery: Number(flag("--ckpt-every", "20")),
  batch: Number(flag("--batch", "8")),
  stepSleep: Number(flag("--step-sleep", "0.25")),
  killAt: Number(flag("--kill-at", "110")),
  hangAt: Number(flag("--hang-at", "290")),
  rank: Number(flag("--fault-rank", "1")),
  hangMinSeconds: Number(flag("--hang-min-seconds", "10")),
  maxRestarts: Number(flag("--max-restarts", "3")),
  monitorInterval: Number(flag("--monitor-interval", "5")), // torchrun's default
  pgTimeout: Number(flag("--pg-timeout", "60")), // 0: torch's default (30 min)
  hangCap: Number(flag("--hang-cap", "150")), // give up waiting for a recovery this long after the hang
  only: flag("--only", "switchyard,torchrun,none").split(","),
  python: process.env.SWITCHYARD_PYTHON ?? "/usr/bin/python3",
  work: flag("--work", "") || mkdtempSync(path.join(tmpdir(), "sy-bench-recovery-")),
};
const trainPy = path.join(root, "examples/chargpt/train.py");
const trainArgs = [
  "--steps", String(opt.steps), "--ckpt-every", String(opt.ckptEvery), "--batch", String(opt.batch),
  "--step-sleep", String(opt.stepSleep), "--eval-final",
]; // prettier-ignore
const schedule = [
  { kind: "kill", step: opt.killAt },
  { kind: "hang", step: opt.hangAt },
];

// ------------------------------------------------------------------------------------------------ helpers
const log = logger(10);

/**
 * Injects the schedule: polls progress until the gang reports step >= S, then fires. After a hang, waits for the
 * recovery (a step of a newer attempt) for at most --hang-cap seconds; returns whether the run was capped.
 */
async function driveFaults(who, { progress, inject, ended }) {
  const faults = [];
  for (const f of schedule) {
    for (;;) {
      if (ended()) return { faults, capped: false };
      const p = await progress();
      if (p && p.step >= f.step) {
        const at = Date.now();
        const pid = await inject(f.kind, p);
        faults.push({ ...f, at, atStep: p.step, attempt: p.attempt, pid });
        log(who, `${f.kind} rank ${opt.rank} (pid ${pid ?? "?"}) at step ${p.step} of attempt ${p.attempt}`);
        break;
      }
      await sleep(100);
    }
  }
  const hang = faults.find((f) => f.kind === "hang");
  if (hang) {
    for (;;) {
      if (ended()) return { faults, capped: false };
      const p = await progress();
      if (p && p.attempt > hang.attempt) return { faults, capped: false };
      if (Date.now() - hang.at > opt.hangCap * 1000) {
        log(who, `no recovery from the hang within ${opt.hangCap}s: stopping the run`);
        return { faults, capped: true };
      }
      await sleep(250);
    }
  }
  return { faults, capped: false };
}

/** Rank-0 steps and checkpoints and every rank's start lines, from report files ({t: ms}). */
function fromReports(dir) {
  const r0 = new Report(path.join(dir, "rank-0.jsonl")).poll();
  const all = [0, 1].flatMap((r) => new Report(path.join(dir, `rank-${r}.jsonl`)).poll());
  return {
    steps: r0.filter((l) => l.kind === "step").map((l) => ({ attempt: l.attempt, step: l.step, t: l.t * 1000 })),
    checkpoints: r0
      .filter((l) => l.kind === "checkpoint")
      .map((l) => ({ attempt: l.attempt, step: l.step, t: l.t * 1000, saveMs: (l.save_s ?? 0) * 1000 })),
    starts: all.filter((l) => l.kind === "start").map((l) => ({ ...l, t: l.t * 1000 })),
  };
}

/** Per fault: first step of a newer attempt and the steps it recomputes. */
function recoveryOf(fault, steps) {
  const hw = Math.max(0, ...steps.filter((s) => s.attempt === fault.attempt).map((s) => s.step));
  const first = steps.filter((s) => s.attempt > fault.attempt).sort((a, b) => a.t - b.t)[0];
  return {
    highWater: hw,
    firstStepAt: first?.t ?? null,
    resumedAt: first ? first.step - 1 : null,
    stepsLost: first ? Math.max(0, hw - (first.step - 1)) : null,
  };
}

function p95StepMs(steps, checkpoints) {
  const byAttempt = new Map();
  for (const s of steps) byAttempt.set(s.attempt, [...(byAttempt.get(s.attempt) ?? []), s]);
  const gaps = [];
  for (const list of byAttempt.values()) {
    list.sort((a, b) => a.step - b.step);
    for (let i = 1; i < list.length; i++) {
      if (list[i].step !== list[i - 1].step + 1) continue;
      gaps.push(list[i].t - list[i - 1].t);
    }
  }
  void checkpoints;
  return { p50: percentile(gaps, 0.5), p95: percentile(gaps, 0.95), n: gaps.length };
}

/** switchyard only (it records attempt times): detection -> gang stopped -> next attempt launched -> first step. */
function breakdownOf(attempts, n, detectedAt, firstStepAt) {
  const a = attempts.find((x) => x.n === n);
  const next = attempts.find((x) => x.n === n + 1);
  if (!a?.endedAt || !next || !detectedAt || !firstStepAt) return null;
  return {
    stopMs: a.endedAt - detectedAt,
    relaunchMs: next.startedAt - a.endedAt,
    startupMs: firstStepAt - next.startedAt,
  };
}

// ------------------------------------------------------------------------------------------------ switchyard
async function runSwitchyard() {
  const who = "switchyard";
  const dir = path.join(opt.work, who);
  const home = path.join(dir, "home");
  mkdirSync(home, { recursive: true });
  const cluster = path.join(dir, "cluster.yaml");
  writeFileSync(
    cluster,
    ["pools:", "  - name: bench", "    accelerator: { vendor: cpu }", "    nodes: 2", "    devicesPerNode: 2", ""].join(
      "\n",
    ),
  );
  const server = await startServer({
    home,
    cluster,
    cwd: dir,
    logFile: path.join(dir, "server.log"),
    env: { SWITCHYARD_PYTHON: opt.python },
  });
  const { url, api } = server;
  const jobYaml = [
    "name: bench-recovery",
    "pools: [bench]",
    "nodes: 1",
    "procsPerNode: 2",
    `command: ${JSON.stringify(["{python}", trainPy, ...trainArgs])}`,
    `workdir: ${JSON.stringify(dir)}`,
    `steps: ${opt.steps}`,
    "env: { GLOO_SOCKET_IFNAME: lo }",
    "checkpoint: { dir: ckpt, keep: 3 }",
    `recovery: { maxRestarts: ${opt.maxRestarts + 2}, backoffSeconds: 0.5, strikesBeforeCordon: 2, graceSeconds: 2 }`,
    `detection: { hangMinSeconds: ${opt.hangMinSeconds}, hangMultiple: 3, stackDumpSeconds: 2 }`,
    "",
  ].join("\n");
  writeFileSync(path.join(dir, "job.yaml"), jobYaml);
  const launchedAt = Date.now();
  const job = await api("POST", "/api/jobs", { yaml: jobYaml, file: path.join(dir, "job.yaml") });
  log(who, `job ${job.id} submitted (server ${url})`);
  let view = null;
  const terminal = (v) => v && isTerminal(v.state);
  const progress = async () => {
    view = await api("GET", `/api/jobs/${job.id}`);
    return view.last ? { step: view.last.step, attempt: view.last.attempt } : null;
  };
  const { faults, capped } = await driveFaults(who, {
    progress,
    ended: () => terminal(view),
    inject: async (kind) => {
      const res = await api("POST", `/api/jobs/${job.id}/chaos`, {
        action: kind === "kill" ? "kill-rank" : "hang-rank",
        rank: opt.rank,
      });
      return res.message;
    },
  });
  // A job that makes no progress for 5 minutes (60 s after a capped hang) is given up on and cancelled, so that a
  // switchyard bug cannot hang the benchmark; it is reported as STUCK.
  let stuck = null;
  let lastChange = Date.now();
  let seen = "";
  while (!terminal(view)) {
    await sleep(500);
    view = await api("GET", `/api/jobs/${job.id}`);
    const now = `${view.state}/${view.last?.attempt}/${view.last?.step}`;
    if (now !== seen) [seen, lastChange] = [now, Date.now()];
    if (Date.now() - lastChange > (capped ? 60_000 : 300_000)) {
      stuck = `STUCK in ${view.state} at step ${view.last?.step} (attempt ${view.last?.attempt})`;
      log(who, `${stuck}: cancelling`);
      await api("POST", `/api/jobs/${job.id}/cancel`).catch(() => null);
      break;
    }
  }
  const endedAt = Date.now();
  log(who, `job ${view.state} after ${view.restarts} restart(s)`);
  const report = await api("GET", `/api/jobs/${job.id}/report`);
  const steps = (await api("GET", `/api/jobs/${job.id}/steps?rank=0`)).map((s) => ({
    attempt: s.attempt,
    step: s.step,
    t: s.t,
  }));
  const events = await api("GET", `/api/jobs/${job.id}/events`);
  writeFileSync(path.join(dir, "report.json"), JSON.stringify({ view, report, events }, null, 1));
  await server.stop(5000);

  const rows = faults.map((f) => {
    const incident = view.incidents.find((i) => i.attempt === f.attempt);
    const cost = report.ledger.incidents.find((c) => c.id === incident?.id);
    return {
      ...f,
      ...recoveryOf(f, steps),
      detectedAt: incident?.detectedAt ?? null,
      cause: incident?.cause ?? null,
      selfReported: cost
        ? { detectionMs: cost.detectionMs, timeToFirstStepMs: cost.timeToFirstStepMs, stepsLost: cost.stepsLost }
        : null,
      costMs: cost?.costMs ?? null,
      // where the time between detection and the first new step went
      breakdown: breakdownOf(view.attempts, f.attempt, incident?.detectedAt, recoveryOf(f, steps).firstStepAt),
    };
  });
  return {
    who,
    state: stuck ?? view.state,
    restarts: view.restarts,
    wallMs: report.ledger.wallMs,
    benchWallMs: endedAt - launchedAt,
    goodput: report.ledger.goodput,
    totals: report.ledger.totals,
    stepsLostTotal: report.ledger.stepsLost,
    faults: rows,
    stepTime: p95StepMs(steps, []),
    capped,
  };
}

// ------------------------------------------------------------------------------------------------ torchrun / none
async function runOutside(who) {
  const dir = path.join(opt.work, who);
  const reports = path.join(dir, "reports");
  mkdirSync(reports, { recursive: true });
  const env = {
    BENCH_CKPT_DIR: path.join(dir, "ckpt"),
    BENCH_REPORT_DIR: reports,
    BENCH_RESUME: who === "torchrun" ? "1" : "0",
    BENCH_PG_TIMEOUT_S: who === "torchrun" && opt.pgTimeout > 0 ? String(opt.pgTimeout) : "",
    GLOO_SOCKET_IFNAME: "lo",
    PYTHONUNBUFFERED: "1",
    LOGLEVEL: "INFO",
  };
  const wrapper = path.join(here, "resume_wrapper.py");
  const detections = []; // {t, line}
  const port = await freePort();
  let cmd, args;
  if (who === "torchrun") {
    cmd = opt.python;
    args = [
      path.join(here, "torchrun_shim.py"),
      "--nnodes", "1", "--nproc_per_node", "2", "--rdzv_backend", "c10d", "--rdzv_endpoint", `127.0.0.1:${port}`,
      "--max_restarts", String(opt.maxRestarts), "--monitor_interval", String(opt.monitorInterval),
      wrapper, trainPy, ...trainArgs,
    ]; // prettier-ignore
  } else {
    cmd = "bash";
    args = [path.join(here, "no_supervisor.sh"), "2", String(port), opt.python, wrapper, trainPy, ...trainArgs];
  }
  const launchedAt = Date.now();
  const proc = launch(who, cmd, args, {
    env,
    cwd: dir,
    logFile: path.join(dir, "launcher.log"),
    onLine: (t, line) => {
      // torchrun's agent, when its monitor finds a failed worker, first stops the others ("Sending process N
      // closing signal SIGTERM", up to 30 s), then logs "failed (exitcode: ...)" and "[default] Worker group FAILED.
      // 3/3 attempts left; will restart worker group": the first of these lines is the detection.
      // The shell loop: "no_supervisor: attempt 1 failed at <epoch>; restarting from scratch".
      if (
        /closing signal SIGTERM|failed \(exitcode|Worker group (FAILED|UNHEALTHY)|no_supervisor: attempt \d+ failed/.test(
          line,
        )
      ) {
        detections.push({ t, line });
        log(who, `supervisor noticed: ${line.trim().slice(0, 100)}`);
      }
    },
  });
  let exit = null;
  void proc.exited.then((e) => (exit = e));
  const r0 = new Report(path.join(reports, "rank-0.jsonl"));
  const r1 = new Report(path.join(reports, `rank-${opt.rank}.jsonl`));
  const progress = async () => {
    const last = r0
      .poll()
      .filter((l) => l.kind === "step")
      .at(-1);
    return last ? { step: last.step, attempt: last.attempt } : null;
  };
  const { faults, capped } = await driveFaults(who, {
    progress,
    ended: () => exit !== null,
    inject: async (kind, p) => {
      const start = r1
        .poll()
        .filter((l) => l.kind === "start" && l.attempt === p.attempt)
        .at(-1);
      if (!start) throw new Error(`${who}: no start line of rank ${opt.rank} in attempt ${p.attempt}`);
      killPid(start.pid, kind === "kill" ? "SIGKILL" : "SIGSTOP");
      return start.pid;
    },
  });
  let endedAt;
  if (capped) {
    endedAt = Date.now();
    killPid(proc.child.pid, "SIGKILL"); // the launcher first, so it restarts nothing
    for (const s of fromReports(reports).starts) killPid(s.pid, "SIGKILL");
    await proc.exited;
  } else {
    endedAt = (await proc.exited).t;
  }
  const { steps, checkpoints, starts } = fromReports(reports);
  const attemptNs = [...new Set(starts.map((s) => s.attempt))].sort((a, b) => a - b);
  const attemptStart = (n) => Math.min(...starts.filter((s) => s.attempt === n).map((s) => s.t));
  const attempts = attemptNs.map((n, i) => ({
    n,
    pool: who,
    startedAt: attemptStart(n),
    endedAt: i + 1 < attemptNs.length ? attemptStart(attemptNs[i + 1]) : endedAt,
    resumeStep: null,
  }));
  const rows = faults.map((f, id) => {
    const detection = detections.find((d) => d.t >= f.at);
    return { ...f, ...recoveryOf(f, steps), id, detectedAt: detection?.t ?? null, cause: f.kind };
  });
  const ledger = buildLedger({
    createdAt: launchedAt,
    endAt: endedAt,
    attempts,
    steps,
    checkpoints,
    incidents: rows.map((f) => ({
      id: f.id,
      attempt: f.attempt,
      cause: f.kind,
      culpritRank: opt.rank,
      culpritNode: null,
      pool: who,
      faultAt: f.at,
      detectedAt: f.detectedAt ?? endedAt,
    })),
    waits: [],
  });
  for (const f of rows) f.costMs = ledger.incidents.find((c) => c.id === f.id)?.costMs ?? null;
  const done = new Report(path.join(reports, "rank-0.jsonl")).poll().some((l) => l.kind === "done");
  log(who, capped ? "stopped (capped)" : `exited ${exit?.code ?? exit?.signal} (${done ? "done" : "not done"})`);
  return {
    who,
    state: capped ? `STOPPED (hang not recovered in ${opt.hangCap}s)` : done ? "SUCCEEDED" : `FAILED`,
    restarts: attemptNs.length - 1,
    wallMs: endedAt - launchedAt,
    goodput: ledger.goodput,
    totals: ledger.totals,
    stepsLostTotal: ledger.stepsLost,
    faults: rows,
    stepTime: p95StepMs(steps, checkpoints),
    capped,
    lastStep: Math.max(0, ...steps.map((s) => s.step)),
  };
}

// ------------------------------------------------------------------------------------------------ main
const cleanup = () => stopChildren("SIGTERM");
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    cleanup();
    process.exit(130);
  });
}

const machine = {
  ...machineFacts(),
  loadBefore: loadavg().map((x) => x.toFixed(2)),
};
console.log(`bench/recovery: work dir ${opt.work}`);
console.log(`options: ${JSON.stringify({ ...opt, work: undefined })}`);
const started = Date.now();
const loads = loadSampler(5000);
const runners = { switchyard: runSwitchyard, torchrun: () => runOutside("torchrun"), none: () => runOutside("none") };
const results = await Promise.all(
  opt.only.map((w) =>
    runners[w]().catch((err) => {
      log(w, `ERROR ${err.stack ?? err}`);
      return { who: w, error: String(err) };
    }),
  ),
);
loads.stop();
cleanup();
const loadRange = loads.range();
machine.loadDuring = loadRange ? [loadRange.min.toFixed(2), loadRange.max.toFixed(2)] : null;

// ------------------------------------------------------------------------------------------------ table
const s = (ms) => (ms === null || ms === undefined ? "—" : (ms / 1000).toFixed(1));
const refStep = results.find((r) => r.who === "switchyard" && r.stepTime) ?? results.find((r) => r.stepTime);
const p95 = refStep?.stepTime.p95 ?? 0;
const hangTarget = Math.max(10_000, 3 * p95);
console.log(
  `\nstep time (switchyard run, rank 0): p50 ${s(refStep?.stepTime.p50)} s, p95 ${s(p95)} s -> ` +
    `hang target max(10 s, 3 x p95) = ${s(hangTarget)} s`,
);
const header = ["run", "fault", "at step", "detected (s)", "fault->1st new step (s)", "detect->1st step (s)", "steps lost", "incident cost (s)"]; // prettier-ignore
const table = [header];
for (const r of results) {
  if (r.error) {
    table.push([r.who, "ERROR", r.error.slice(0, 60), "", "", "", "", ""]);
    continue;
  }
  for (const f of r.faults) {
    const notDetected = f.detectedAt === null;
    table.push([
      r.who,
      f.kind,
      String(f.atStep),
      notDetected ? (r.capped ? `not within ${opt.hangCap}` : "—") : s(f.detectedAt - f.at),
      f.firstStepAt ? s(f.firstStepAt - f.at) : "—",
      f.firstStepAt && f.detectedAt ? s(f.firstStepAt - f.detectedAt) : "—",
      f.stepsLost === null ? "—" : String(f.stepsLost),
      s(f.costMs),
    ]);
  }
}
const widths = header.map((_, i) => Math.max(...table.map((row) => String(row[i]).length)));
const fmt = (row) => "| " + row.map((c, i) => String(c).padEnd(widths[i])).join(" | ") + " |";
console.log(fmt(header));
console.log("|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|");
for (const row of table.slice(1)) console.log(fmt(row));

console.log(
  "\n| run | end state | restarts | wall (s) | goodput | productive / lost / detection / restart / ckpt (s) |",
);
console.log("|---|---|---|---|---|---|");
for (const r of results) {
  if (r.error) continue;
  const t = r.totals;
  console.log(
    `| ${r.who} | ${r.state} | ${r.restarts} | ${s(r.wallMs)} | ${r.goodput.toFixed(3)} | ` +
      `${s(t.productive)} / ${s(t.lost)} / ${s(t.detection)} / ${s(t.restart)} / ${s(t.checkpoint)} |`,
  );
}
for (const r of results) {
  for (const f of r.faults ?? []) {
    if (!f.breakdown) continue;
    const b = f.breakdown;
    console.log(
      `${r.who} ${f.kind}: detection -> gang stopped ${s(b.stopMs)} s, -> relaunched ${s(b.relaunchMs)} s ` +
        `(backoff included), -> first step ${s(b.startupMs)} s (interpreter, torch import, rendezvous, ` +
        `checkpoint load, one step); switchyard's own report: ${JSON.stringify(f.selfReported)}`,
    );
  }
}
console.log(`\nmachine: ${JSON.stringify(machine)}; bench wall ${s(Date.now() - started)} s`);
const out = path.join(opt.work, "results.json");
writeFileSync(out, JSON.stringify({ options: opt, machine, hangTargetMs: hangTarget, results }, null, 1));
console.log(`results: ${out}`);
