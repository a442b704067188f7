// What the benchmarks under bench/ (gray, recovery, restart) share: options, logging, child processes started and
// stopped by pid, a switchyard server over a temp home and its API, the ranks' report files, Slurm queries, machine
// facts and the load average. Plain Node, no build step; the benchmarks import it as ../lib/bench.mjs.
import { spawn, spawnSync } from "node:child_process";
import { createWriteStream, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { cpus, loadavg, release, totalmem } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The repository's root (bench/lib/../../). */
export const root = fileURLToPath(new URL("../../", import.meta.url));
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const terminal = (state) => ["SUCCEEDED", "FAILED", "CANCELLED"].includes(state);

/** `fail(msg, fix)`: prints `<who>: msg (fix: fix)` and exits 2 (bad input / not ready). */
export function failWith(who) {
  return (msg, fix) => {
    console.error(`${who}: ${msg}${fix ? ` (fix: ${fix})` : ""}`);
    process.exit(2);
  };
}

/** `log(who, msg)`: one line stamped with the UTC time of day (ms), `who` padded to `width`. */
export function logger(width = 10) {
  return (who, msg) => console.log(`[${new Date().toISOString().slice(11, 23)}] ${who.padEnd(width)} ${msg}`);
}

/**
 * `--name value` options. With `known`, an unknown name or a missing value fails. `flag(name, fallback)` is the raw
 * value; `num(name, fallback, min, max)` a number in range (else it fails).
 */
export function options(argv, { known, fail } = {}) {
  if (known) {
    for (let i = 0; i < argv.length; i += 2) {
      if (!known.includes(argv[i])) fail(`unknown option ${argv[i]}`, `one of ${known.join(", ")}`);
      if (argv[i + 1] === undefined) fail(`${argv[i]} needs a value`);
    }
  }
  const flag = (name, fallback) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : fallback;
  };
  const num = (name, fallback, min, max) => {
    const v = Number(flag(name, fallback));
    if (!Number.isFinite(v) || v < min || v > max) fail(`${name} must be a number in [${min}, ${max}]`);
    return v;
  };
  return { flag, num };
}

/** The machine a benchmark ran on (results files carry it). */
export function machineFacts() {
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    memGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
  };
}

/**
 * Samples the 1-minute load average every `everyMs` (and at once with `initial`): `samples` ({t, l1}), `stop()`,
 * `range(from?, to?)` ({min, median, max}, the median the upper middle one).
 */
export function loadSampler(everyMs, { initial = false } = {}) {
  const samples = initial ? [{ t: Date.now(), l1: loadavg()[0] }] : [];
  const timer = setInterval(() => samples.push({ t: Date.now(), l1: loadavg()[0] }), everyMs);
  const range = (from = -Infinity, to = Infinity) => {
    const xs = samples
      .filter((x) => x.t >= from && x.t <= to)
      .map((x) => x.l1)
      .sort((a, b) => a - b);
    return xs.length ? { min: xs[0], median: xs[xs.length >> 1], max: xs[xs.length - 1] } : null;
  };
  return { samples, stop: () => clearInterval(timer), range };
}

// ------------------------------------------------------------------------------------------------ processes
/** pid -> name of what the benchmark started and has not seen exit; `stopChildren` signals them by pid. */
export const children = new Map();

export function killPid(pid, sig = "SIGKILL") {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

export function stopChildren(sig = "SIGTERM") {
  for (const [pid] of children) killPid(pid, sig);
}

/**
 * Spawns a process; its stdout/stderr go, line by line and stamped with the arrival time (ms), to `logFile` and to
 * `onLine(t, line)`. Returns {child, lines, exited}; `exited` resolves to {code, signal, t}.
 */
export function launch(name, cmd, args, { env, cwd, logFile, onLine }) {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, cwd, stdio: ["ignore", "pipe", "pipe"] });
  children.set(child.pid, name);
  const out = createWriteStream(logFile);
  const lines = [];
  const feed = (stream) => {
    let buf = "";
    stream.on("data", (d) => {
      const t = Date.now();
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        out.write(`${t} ${line}\n`);
        lines.push({ t, line });
        onLine?.(t, line);
      }
    });
  };
  feed(child.stdout);
  feed(child.stderr);
  const exited = new Promise((resolve) =>
    child.once("exit", (code, signal) => {
      children.delete(child.pid);
      resolve({ code, signal, t: Date.now() });
    }),
  );
  return { child, lines, exited };
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// ------------------------------------------------------------------------------------------------ the server
/** `api(method, path, body)` against a server: JSON in and out, the token on every call; a non-2xx throws. */
export function apiClient(url, token) {
  return async (method, p, body) => {
    if (method !== "GET") body ??= {};
    const res = await fetch(url + p, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const json = await res.json();
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
}

/**
 * Starts `switchyard server` over `home` with `cluster` on a free port (output to `logFile`) and waits until it has
 * written its server.json (at most `waitMs`). Returns {child, exited, url, token, api, stop(graceMs)}: `stop` sends
 * SIGTERM and, if it is still there after `graceMs`, SIGKILL.
 */
export async function startServer({ home, cluster, logFile, cwd, env = {}, waitMs = 30_000 }) {
  const server = launch(
    "server",
    process.execPath,
    [path.join(root, "bin/switchyard.js"), "server", "--home", home, "--cluster", cluster, "--port", "0"],
    { env: { SWITCHYARD_HOME: home, ...env }, cwd, logFile },
  );
  let url = null;
  for (const until = Date.now() + waitMs; !url && Date.now() < until;) {
    try {
      const info = JSON.parse(readFileSync(path.join(home, "server.json"), "utf8"));
      if (info.pid === server.child.pid) url = info.url;
    } catch {
      /* not yet */
    }
    if (!url) await sleep(100);
  }
  if (!url) {
    server.child.kill("SIGKILL");
    throw new Error(`the switchyard server did not start; see ${logFile}`);
  }
  const token = readFileSync(path.join(home, "token"), "utf8").trim();
  const stop = async (graceMs = 10_000) => {
    if (!children.has(server.child.pid)) return;
    server.child.kill("SIGTERM");
    await Promise.race([server.exited, sleep(graceMs)]);
    if (children.has(server.child.pid)) server.child.kill("SIGKILL");
  };
  return { ...server, url, token, api: apiClient(url, token), stop };
}

/** The text of a rank's log of one attempt, through the paged logs API. */
export async function rankLog(api, jobId, rank, attempt) {
  let text = "";
  for (let offset = 0; ;) {
    const page = await api("GET", `/api/jobs/${jobId}/logs?rank=${rank}&attempt=${attempt}&offset=${offset}`).catch(
      () => null,
    );
    if (!page || page.text === "") return text;
    text += page.text;
    offset = page.offset;
  }
}

// ------------------------------------------------------------------------------------------------ ranks' reports
/** Incremental reader of a JSON-lines report file (the rank contract's SWITCHYARD_REPORT). */
export class Report {
  constructor(file) {
    this.file = file;
    this.offset = 0;
    this.rest = "";
    this.lines = [];
  }
  poll() {
    let text;
    try {
      const all = readFileSync(this.file);
      text = all.subarray(this.offset).toString("utf8");
      this.offset = all.length;
    } catch {
      return this.lines;
    }
    const parts = (this.rest + text).split("\n");
    this.rest = parts.pop() ?? "";
    for (const p of parts) {
      try {
        this.lines.push(JSON.parse(p));
      } catch {
        /* a torn line: skip */
      }
    }
    return this.lines;
  }
  /** The step lines so far, {attempt, step, t (ms)}. */
  steps() {
    return this.poll()
      .filter((l) => l.kind === "step")
      .map((l) => ({ attempt: l.attempt, step: l.step, t: l.t * 1000 }));
  }
}

// ------------------------------------------------------------------------------------------------ Slurm
export const slurmEnv = { SLURM_CONF: process.env.SLURM_CONF ?? "/run/switchyard-testbed/slurm.conf" };

/** Runs a command to its end with the testbed's Slurm configuration: {code, out (stdout + stderr)}. */
export function runSync(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: "utf8", env: { ...process.env, ...slurmEnv } });
  return { code: r.status, out: `${r.stdout ?? ""}${r.stderr ?? ""}`.trim() };
}

/** `sinfo` of a partition: name -> {address, state, reason}; null when sinfo fails. */
export function sinfoNodes(partition) {
  const r = runSync("sinfo", ["-h", "-N", "-p", partition, "-o", "%N|%o|%T|%E"]);
  if (r.code !== 0) return null;
  const out = new Map();
  for (const line of r.out.split("\n")) {
    const [name, address, state, reason] = line.split("|");
    if (name) out.set(name, { address, state, reason: reason === "none" ? null : reason });
  }
  return out;
}

/**
 * The cluster file of a benchmark on the testbed: one pool `pool` (executor slurm, Ascend-labelled) on `partition`,
 * its agents run by `python`, gloo over the hosts' eth0; strikes counted over an hour.
 */
export function slurmClusterYaml({ pool, partition, python, devicesPerNode }) {
  return [
    "strikeWindowSeconds: 3600",
    "pools:",
    `  - name: ${pool}`,
    "    executor: slurm",
    "    accelerator: { vendor: ascend, model: 910B }",
    `    devicesPerNode: ${devicesPerNode}`,
    `    slurm: { partition: ${partition}, agentPython: ${python}, env: { GLOO_SOCKET_IFNAME: eth0 } }`,
    "",
  ].join("\n");
}

/** A host Slurm would give a step now (not down, drained, failing or not responding). */
export const usable = (n) => !/down|drain|fail|not_responding|\*$/.test(n.state);
