/**
 * CPU per proxied request, A/B: the gateway CPU time (utime + stime of the gateway process and its workers, from
 * /proc) divided by the requests wrk completed through it. Robust to background load, unlike req/s: a busy machine
 * slows every variant's wall clock but hardly changes the CPU each request costs. Variants run interleaved, round by
 * round, against one fixture backend, and the report takes the median over rounds.
 *
 *   npx vite-node bench/gateway/cpu.ts -- --variant base=/tmp/perf/A --variant new=. [--rounds 5 --seconds 4]
 *     [--workers 1] [--connections 64] [--nginx] [--floor] [--prof DIR]
 *
 * A variant is a directory with bin/switchyard.js and a built dist/ (`npm run build`; copy dist, bin, package.json
 * and a node_modules link elsewhere to keep a baseline). `--nginx` adds nginx (1 worker, access log buffered) as a
 * variant; `--floor` adds floor.ts, a zero-logic raw-socket Node proxy (the lower bound of any Node gateway);
 * `--prof DIR` runs each switchyard variant once more under `node --cpu-prof` and writes the profiles there.
 * Needs wrk (and nginx for --nginx) on PATH.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { compileProc, freePort, log, median, waitHttp } from "./lib.js";

const { values: argv } = parseArgs({
  options: {
    variant: { type: "string", multiple: true, default: [] },
    rounds: { type: "string", default: "5" },
    seconds: { type: "string", default: "4" },
    workers: { type: "string", default: "1" },
    connections: { type: "string", default: "64" },
    nginx: { type: "boolean", default: false },
    floor: { type: "boolean", default: false },
    prof: { type: "string" },
    body: { type: "string", default: "chat" },
  },
  allowPositionals: true,
});

const root = resolve(import.meta.dirname, "../..");
const build = join(root, "dist", "bench-gateway");
const children: ChildProcess[] = [];
const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

/** utime + stime of a process, in seconds (0 when it is gone); `sys` alone gives stime (kernel time). */
function cpuSeconds(pid: number, sys = false): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    return ((sys ? 0 : Number(fields[11])) + Number(fields[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** A process and its children (the workers of `--workers N`), by pid. */
function family(pid: number): number[] {
  const out = [pid];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}

const familyCpu = (pids: number[], sys = false): number => pids.reduce((a, p) => a + cpuSeconds(p, sys), 0);

function startBackend(): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [join(build, "bench/gateway/proc.js"), "backend", "fast"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(child);
  return new Promise((res, rej) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const m = /^READY (\d+)$/.exec(line);
      if (m) res({ child, port: Number(m[1]) });
    });
    child.once("exit", (code) => rej(new Error(`backend exited ${code}`)));
  });
}

async function startSwitchyard(
  dir: string,
  variantRoot: string,
  name: string,
  backendPort: number,
  nodeArgs: string[] = [],
): Promise<{ child: ChildProcess; url: string }> {
  const port = await freePort();
  const services = join(dir, `services-${name}.yaml`);
  writeFileSync(
    services,
    `gateway: { stallTimeoutMs: 30000, ttftTimeoutMs: 60000, connectTimeoutMs: 10000 }
services:
  - model: m
    pools: [{ name: main, backends: [{ id: fast, url: "http://127.0.0.1:${backendPort}", engine: vllm }] }]
`,
  );
  const child = spawn(
    process.execPath,
    [
      ...nodeArgs,
      join(variantRoot, "bin", "switchyard.js"),
      "--json",
      "gateway",
      services,
      "--port",
      String(port),
      "--workers",
      argv.workers,
      "--no-auth",
    ],
    {
      stdio: ["ignore", "ignore", "inherit"],
      env: { ...process.env, SWITCHYARD_HOME: join(dir, `home-${name}`) },
    },
  );
  children.push(child);
  const url = `http://127.0.0.1:${port}`;
  await waitHttp(`${url}/healthz`, 200);
  return { child, url };
}

async function startNginx(dir: string, backendPort: number): Promise<{ child: ChildProcess; url: string }> {
  const port = await freePort();
  const conf = join(dir, "nginx.conf");
  writeFileSync(
    conf,
    `worker_processes ${argv.workers};
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 16384; }
http {
  access_log ${dir}/access.log combined buffer=64k flush=1s;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  upstream backend { server 127.0.0.1:${backendPort}; keepalive 256; }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
`,
  );
  const child = spawn("nginx", ["-p", dir, "-c", conf], { stdio: ["ignore", "ignore", "inherit"] });
  children.push(child);
  const url = `http://127.0.0.1:${port}`;
  await waitHttp(`${url}/health`, 200);
  return { child, url };
}

const BODIES: Record<string, string> = {
  chat: '{"model":"m","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":16}',
  stream:
    '{"model":"m","stream":true,"messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":16}',
};

function wrk(url: string, seconds: number, dir: string): { requests: number; non2xx: number } {
  const script = join(dir, "post.lua");
  const body = BODIES[argv.body];
  if (body === undefined) throw new Error(`--body must be one of ${Object.keys(BODIES).join(", ")}`);
  writeFileSync(
    script,
    `wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = '${body}'\n`,
  );
  const out = execFileSync(
    "wrk",
    ["-t1", `-c${argv.connections}`, `-d${seconds}s`, "-s", script, `${url}/v1/chat/completions`],
    { encoding: "utf8" },
  );
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  return { requests, non2xx };
}

interface Target {
  name: string;
  url: string;
  pids: () => number[];
}

async function main(): Promise<void> {
  compileProc(root, build);
  const dir = mkdtempSync(join(tmpdir(), "sy-bench-cpu-"));
  try {
    const backend = await startBackend();
    const targets: Target[] = [];
    for (const spec of argv.variant) {
      const eq = spec.indexOf("=");
      if (eq < 1) throw new Error(`--variant ${spec}: expected NAME=DIR`);
      const name = spec.slice(0, eq);
      const sy = await startSwitchyard(dir, resolve(spec.slice(eq + 1)), name, backend.port);
      const pid = sy.child.pid!;
      targets.push({ name, url: sy.url, pids: () => family(pid) });
    }
    if (argv.floor) {
      const port = await freePort();
      const child = spawn(
        process.execPath,
        [join(build, "bench/gateway/floor.js"), String(port), String(backend.port)],
        { stdio: ["ignore", "ignore", "inherit"] },
      );
      children.push(child);
      const url = `http://127.0.0.1:${port}`;
      await waitHttp(`${url}/healthz`, 200);
      targets.push({ name: "floor", url, pids: () => [child.pid!] });
    }
    if (argv.nginx) {
      const ng = await startNginx(dir, backend.port);
      const master = Number(readFileSync(join(dir, "nginx.pid"), "utf8"));
      targets.push({ name: "nginx", url: ng.url, pids: () => family(master) });
    }
    const seconds = Number(argv.seconds);
    for (const t of targets) wrk(t.url, 2, dir); // warm-up: JIT, connection pools
    const usPerReq: Record<string, number[]> = Object.fromEntries(targets.map((t) => [t.name, []]));
    const backendUs: Record<string, number[]> = Object.fromEntries(targets.map((t) => [t.name, []]));
    const sysUs: Record<string, number[]> = Object.fromEntries(targets.map((t) => [t.name, []]));
    const rps: Record<string, number[]> = Object.fromEntries(targets.map((t) => [t.name, []]));
    const rounds = Number(argv.rounds);
    for (let round = 0; round < rounds; round++) {
      // Alternate the order each round so that neither variant always runs first.
      const order = round % 2 === 0 ? targets : [...targets].reverse();
      for (const t of order) {
        const pids = t.pids();
        const c0 = familyCpu(pids);
        const s0 = familyCpu(pids, true);
        const b0 = cpuSeconds(backend.child.pid!);
        const t0 = performance.now();
        const { requests, non2xx } = wrk(t.url, seconds, dir);
        const wall = (performance.now() - t0) / 1000;
        const cpu = familyCpu(pids) - c0;
        const sys = familyCpu(pids, true) - s0;
        const bcpu = cpuSeconds(backend.child.pid!) - b0;
        if (non2xx > 0) log(`${t.name}: ${non2xx} non-2xx answers`);
        usPerReq[t.name]!.push((cpu / requests) * 1e6);
        sysUs[t.name]!.push((sys / requests) * 1e6);
        backendUs[t.name]!.push((bcpu / requests) * 1e6);
        rps[t.name]!.push(requests / wall);
        log(
          `round ${round + 1} ${t.name}: ${requests} requests, ${((cpu / requests) * 1e6).toFixed(1)} us CPU/request ` +
            `(backend ${((bcpu / requests) * 1e6).toFixed(1)} us), ${(requests / wall).toFixed(0)} req/s, load ${readFileSync("/proc/loadavg", "utf8").split(" ")[0]}`,
        );
      }
    }
    const lines = [
      `workers ${argv.workers}, wrk -t1 -c${argv.connections}, ${rounds} rounds x ${seconds} s, body ${argv.body}`,
    ];
    for (const t of targets) {
      lines.push(
        `${t.name}: ${median(usPerReq[t.name]!).toFixed(1)} us CPU/request (rounds ${usPerReq[t.name]!.map((x) => x.toFixed(1)).join(" ")}; ` +
          `kernel ${median(sysUs[t.name]!).toFixed(1)}), backend ${median(backendUs[t.name]!).toFixed(1)} us, ${median(rps[t.name]!).toFixed(0)} req/s`,
      );
    }
    if (argv.prof !== undefined) {
      const profDir = resolve(argv.prof);
      mkdirSync(profDir, { recursive: true });
      for (const spec of argv.variant) {
        const eq = spec.indexOf("=");
        const name = spec.slice(0, eq);
        const out = join(profDir, name);
        mkdirSync(out, { recursive: true });
        const sy = await startSwitchyard(dir, resolve(spec.slice(eq + 1)), `${name}-prof`, backend.port, [
          "--cpu-prof",
          "--cpu-prof-interval",
          "100",
          "--cpu-prof-dir",
          out,
        ]);
        wrk(sy.url, 2, dir);
        wrk(sy.url, seconds, dir);
        sy.child.kill("SIGINT");
        await new Promise((r) => sy.child.once("exit", r));
        lines.push(`${name}: profile in ${out}`);
      }
    }
    process.stdout.write(`${lines.join("\n")}\n`);
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
    try {
      const pid = Number(readFileSync(join(dir, "nginx.pid"), "utf8"));
      if (pid > 0) process.kill(pid, "SIGQUIT");
    } catch {
      // no nginx
    }
    await new Promise((r) => setTimeout(r, 300));
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
