/**
 * Gateway benchmark: direct to a fast fixture backend, through switchyard (`switchyard gateway`, the built CLI) at 1
 * and 2 worker processes, and through nginx (plain reverse proxy) at 1 and 2 worker_processes, side by side in one
 * run on this machine, 127.0.0.1 only.
 *
 *   npx vite-node bench/gateway/run.ts [-- --seconds 10 --rates 500,1000,2000 --workers 1,2 --streams 5000 --soak-seconds 60]
 *
 * Reports added latency p50/p99 at fixed request rates, max throughput (wrk) and the switchyard/nginx ratio at each
 * worker count, RSS of the 1-worker gateway with N concurrent slow streams, and RSS over a soak at a fixed rate
 * (`--streams 0` / `--soak-seconds 0` skip those). Writes bench/gateway/last-results.json. Installs nginx and wrk
 * with apt-get when absent (bench only).
 * Targets (issues 4 and 14): added p50 <= 0.5 ms and p99 <= 2 ms at 1,000 req/s; throughput >= 0.8x nginx's at the
 * same worker count; 5,000 concurrent streams < 300 MB RSS; memory flat over the soak (10 minutes: --soak-seconds 600).
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { compileProc, freePort, log, median, waitHttp } from "./lib.js";

const { values: argv } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    rounds: { type: "string", default: "3" },
    rates: { type: "string", default: "500,1000,2000" },
    streams: { type: "string", default: "5000" },
    "stream-seconds": { type: "string", default: "60" },
    "soak-seconds": { type: "string", default: "60" },
    "soak-rate": { type: "string", default: "500" },
    "wrk-seconds": { type: "string", default: "5" },
    "wrk-connections": { type: "string", default: "64" },
    "wrk-threads": { type: "string", default: "1" },
    workers: { type: "string", default: "1,2" },
    /** Also measure floor.ts, a zero-logic raw-socket Node proxy: the lower bound of any gateway written in Node. */
    floor: { type: "boolean", default: true },
  },
  allowPositionals: true,
});

const root = resolve(import.meta.dirname, "../..");
const build = join(root, "dist", "bench-gateway");
const children: ChildProcess[] = [];
const nginxPids: string[] = [];

function ensureTools(): void {
  const missing = ["nginx", "wrk"].filter((t) => spawnSync("sh", ["-c", `command -v ${t}`]).status !== 0);
  if (missing.length === 0) return;
  log(`installing ${missing.join(", ")} with apt-get (benchmark only)`);
  execFileSync("apt-get", ["install", "-y", ...missing], {
    stdio: "inherit",
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
}

function compile(): void {
  log("building the CLI (dist/) ...");
  execFileSync(join(root, "node_modules", ".bin", "tsc"), ["-p", join(root, "tsconfig.build.json")], {
    stdio: "inherit",
  });
  log("compiling gateway + bench to dist/bench-gateway ...");
  compileProc(root, build);
}

function proc(role: string, ...args: string[]): ChildProcess {
  const child = spawn(process.execPath, [join(build, "bench/gateway/proc.js"), role, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(child);
  return child;
}

function readyPort(child: ChildProcess): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on("line", (line) => {
      const m = /^READY (\d+)$/.exec(line);
      if (m) resolvePort(Number(m[1]));
    });
    child.once("exit", (code) => reject(new Error(`child exited with ${code} before it was ready`)));
  });
}

/** Runs a loadgen child to completion; its last stdout line is JSON. */
function runJson<T>(role: string, args: string[], onLine?: (line: string) => void): Promise<T> {
  return new Promise((resolveJson, reject) => {
    const child = proc(role, ...args);
    let last = "";
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (line.startsWith("{")) last = line;
      else onLine?.(line);
    });
    child.once("exit", (code) =>
      code === 0 && last ? resolveJson(JSON.parse(last) as T) : reject(new Error(`${role} exited ${code}`)),
    );
  });
}

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN);
  return kb / 1024;
}

/** `switchyard gateway --workers N` (the built CLI; its JSON access log to /dev/null, like nginx's to a file). */
function startSwitchyard(dir: string, port: number, workers: number, fastPort: number, slowPort: number): ChildProcess {
  const services = join(dir, "services.yaml");
  writeFileSync(
    services,
    `gateway: { stallTimeoutMs: 30000, ttftTimeoutMs: 60000, connectTimeoutMs: 10000 }
services:
  - model: m
    pools: [{ name: main, backends: [{ id: fast, url: "http://127.0.0.1:${fastPort}", engine: vllm }] }]
  - model: slow
    pools: [{ name: main, backends: [{ id: slow, url: "http://127.0.0.1:${slowPort}", engine: vllm }] }]
`,
  );
  const child = spawn(
    process.execPath,
    [
      join(root, "bin", "switchyard.js"),
      "--json",
      "gateway",
      services,
      "--port",
      String(port),
      "--workers",
      String(workers),
      "--no-auth",
    ],
    { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, SWITCHYARD_HOME: join(dir, `home-${workers}`) } },
  );
  children.push(child);
  return child;
}

function startNginx(dir: string, port: number, upstreamPort: number, workers = 1): ChildProcess {
  const conf = join(dir, `nginx-${workers}.conf`);
  const pidFile = join(dir, `nginx-${workers}.pid`);
  nginxPids.push(pidFile);
  writeFileSync(
    conf,
    `worker_processes ${workers};
daemon off;
pid ${pidFile};
error_log ${dir}/error.log warn;
events { worker_connections 16384; }
http {
  access_log ${dir}/access-${workers}.log combined buffer=64k flush=1s;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  upstream backend { server 127.0.0.1:${upstreamPort}; keepalive 256; }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }
  }
}
`,
  );
  const child = spawn("nginx", ["-p", dir, "-c", conf], { stdio: ["ignore", "ignore", "inherit"] });
  children.push(child);
  return child;
}

function wrk(url: string, seconds: number, connections: number, dir: string): number {
  const script = join(dir, "post.lua");
  writeFileSync(
    script,
    `wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = '{"model":"m","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":16}'\n`,
  );
  const out = execFileSync(
    "wrk",
    [`-t${argv["wrk-threads"]}`, `-c${connections}`, `-d${seconds}s`, "-s", script, url],
    {
      encoding: "utf8",
    },
  );
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  if (non2xx) log(`wrk ${url}: ${non2xx[1]} non-2xx responses`);
  return rps;
}

function loadAverage(): string {
  return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
}

const fmt = (n: number, d = 3): string => (Number.isFinite(n) ? n.toFixed(d) : "n/a");

interface RateResult {
  sent: number;
  ok: number;
  errors: number;
  achievedRps: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

async function main(): Promise<void> {
  ensureTools();
  compile();
  const dir = mkdtempSync(join(tmpdir(), "sy-bench-gw-"));
  try {
    const fast = proc("backend", "fast");
    const slow = proc("backend", "slow");
    const fastPort = await readyPort(fast);
    const slowPort = await readyPort(slow);
    const workerCounts = argv.workers.split(",").map(Number);
    const targets: Record<string, string> = { direct: `http://127.0.0.1:${fastPort}/v1/chat/completions` };
    const syChildren = new Map<number, ChildProcess>();
    for (const n of workerCounts) {
      const syPort = await freePort();
      syChildren.set(n, startSwitchyard(dir, syPort, n, fastPort, slowPort));
      await waitHttp(`http://127.0.0.1:${syPort}/healthz`);
      targets[`switchyard-${n}w`] = `http://127.0.0.1:${syPort}/v1/chat/completions`;
      const ngPort = await freePort();
      startNginx(dir, ngPort, fastPort, n);
      await waitHttp(`http://127.0.0.1:${ngPort}/health`);
      targets[`nginx-${n}w`] = `http://127.0.0.1:${ngPort}/v1/chat/completions`;
    }
    if (argv.floor) {
      const floorPort = await freePort();
      const floor = spawn(
        process.execPath,
        [join(build, "bench/gateway/floor.js"), String(floorPort), String(fastPort)],
        {
          stdio: ["ignore", "ignore", "inherit"],
        },
      );
      children.push(floor);
      await waitHttp(`http://127.0.0.1:${floorPort}/healthz`);
      targets["node-floor"] = `http://127.0.0.1:${floorPort}/v1/chat/completions`;
    }
    const gw = syChildren.get(1) ?? [...syChildren.values()][0]!;
    const gwPort = Number(new URL(targets[`switchyard-${syChildren.has(1) ? 1 : workerCounts[0]}w`]!).port);
    const seconds = Number(argv.seconds);
    const rates = argv.rates.split(",").map(Number);
    const machine = `${cpus().length} cores (${cpus()[0]?.model ?? "?"}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
    const loadBefore = loadAverage();
    log(`machine: ${machine}; load average ${loadBefore}`);

    // Warm-up: JIT and connection pools of every path.
    for (const url of Object.values(targets)) await runJson<RateResult>("rate", [url, "500", "2"]);

    // Each round runs every target once per rate, interleaved, so that background load hits all of them alike;
    // the report takes the median over rounds.
    const rounds = Number(argv.rounds);
    const runs: Record<string, Record<string, RateResult[]>> = {};
    const tput: Record<string, number[]> = Object.fromEntries(Object.keys(targets).map((k) => [k, []]));
    for (let round = 0; round < rounds; round++) {
      for (const rps of rates) {
        runs[rps] ??= {};
        for (const [name, url] of Object.entries(targets)) {
          const r = await runJson<RateResult>("rate", [url, String(rps), String(seconds)]);
          (runs[rps]![name] ??= []).push(r);
          log(
            `round ${round + 1} ${rps} req/s ${name}: p50 ${fmt(r.p50)} ms p99 ${fmt(r.p99)} ms (ok ${r.ok}, errors ${r.errors}, ${fmt(r.achievedRps, 0)} req/s)`,
          );
        }
      }
      for (const [name, url] of Object.entries(targets)) {
        const rps = wrk(url, Number(argv["wrk-seconds"]), Number(argv["wrk-connections"]), dir);
        tput[name]!.push(rps);
        log(`round ${round + 1} throughput ${name}: ${fmt(rps, 0)} req/s`);
      }
    }
    const latency: Record<string, Record<string, { p50: number; p99: number; errors: number }>> = {};
    for (const rps of rates) {
      latency[rps] = {};
      for (const name of Object.keys(targets)) {
        const rs = runs[rps]![name]!;
        latency[rps]![name] = {
          p50: median(rs.map((r) => r.p50)),
          p99: median(rs.map((r) => r.p99)),
          errors: rs.reduce((a, r) => a + r.errors, 0),
        };
      }
    }
    const throughput: Record<string, number> = {};
    for (const name of Object.keys(targets)) throughput[name] = median(tput[name]!);
    const ratios: Record<string, { median: number; rounds: number[] }> = {};
    for (const n of workerCounts) {
      const rounds = tput[`switchyard-${n}w`]!.map((s, i) => s / tput[`nginx-${n}w`]![i]!);
      ratios[`${n}w`] = { median: median(rounds), rounds };
    }
    if (argv.floor && tput["nginx-1w"] !== undefined) {
      const rounds = tput["node-floor"]!.map((s, i) => s / tput["nginx-1w"]![i]!);
      ratios["node-floor/nginx-1w"] = { median: median(rounds), rounds };
    }

    // Concurrent slow streams through the gateway (1 worker, so that its RSS is one process's).
    const nStreams = Number(argv.streams);
    const rssIdle = rssMiB(gw.pid!);
    let peakOpen = 0;
    let peakRss = rssIdle;
    const sampler = setInterval(() => {
      peakRss = Math.max(peakRss, rssMiB(gw.pid!));
    }, 250);
    type StreamResult = {
      requested: number;
      complete: number;
      failed: number;
      late: number;
      statuses: Record<string, number>;
    };
    const streamResult: StreamResult =
      nStreams > 0
        ? await runJson<StreamResult>(
            "streams",
            [`http://127.0.0.1:${gwPort}/v1/chat/completions`, String(nStreams), argv["stream-seconds"]],
            (line) => {
              const m = /^OPEN (\d+)$/.exec(line);
              if (m) peakOpen = Math.max(peakOpen, Number(m[1]));
            },
          )
        : { requested: 0, complete: 0, failed: 0, late: 0, statuses: {} };
    clearInterval(sampler);
    log(
      `streams: ${JSON.stringify(streamResult)}, peak open ${peakOpen}, gateway RSS idle ${fmt(rssIdle, 0)} MiB, peak ${fmt(peakRss, 0)} MiB`,
    );

    // Soak: fixed rate through the gateway, RSS sampled every 5 s.
    const soakSeconds = Number(argv["soak-seconds"]);
    const samples: number[] = [];
    const soakSampler = setInterval(() => samples.push(rssMiB(gw.pid!)), 5000);
    const soak: RateResult =
      soakSeconds > 0
        ? await runJson<RateResult>("rate", [
            `http://127.0.0.1:${gwPort}/v1/chat/completions`,
            argv["soak-rate"],
            String(soakSeconds),
          ])
        : { sent: 0, ok: 0, errors: 0, achievedRps: 0, p50: NaN, p90: NaN, p99: NaN, max: NaN };
    clearInterval(soakSampler);
    samples.push(rssMiB(gw.pid!));
    log(`soak: ${JSON.stringify(soak)}; RSS samples ${samples.map((s) => s.toFixed(0)).join(" ")}`);

    // Report
    const loadAfter = loadAverage();
    const names = Object.keys(targets);
    const lines: string[] = [];
    lines.push(
      `machine: ${machine}; load average before ${loadBefore}, after ${loadAfter}; ${rounds} rounds x ${seconds} s per rate and target ` +
        `(medians over rounds), warm; access log on for both proxies; worker counts ${workerCounts.join(", ")}`,
    );
    lines.push("");
    lines.push(`| rate (req/s) | ${names.map((n) => `${n} p50 / p99 (ms)`).join(" | ")} |`);
    lines.push(`|---|${names.map(() => "---").join("|")}|`);
    for (const rps of rates) {
      const d = latency[rps]!.direct!;
      const cells = names.map((n) => {
        const l = latency[rps]![n]!;
        return n === "direct"
          ? `${fmt(l.p50)} / ${fmt(l.p99)}`
          : `${fmt(l.p50)} / ${fmt(l.p99)} (+${fmt(l.p50 - d.p50)} / +${fmt(l.p99 - d.p99)})`;
      });
      const errs = names.reduce((a, n) => a + latency[rps]![n]!.errors, 0);
      if (errs > 0) log(`${rps} req/s: ${errs} errors in total`);
      lines.push(`| ${rps} | ${cells.join(" | ")} |`);
    }
    lines.push("");
    lines.push(
      `max throughput (wrk -t${argv["wrk-threads"]} -c${argv["wrk-connections"]}, ${argv["wrk-seconds"]} s, median of ${rounds}): ` +
        names.map((n) => `${n} ${fmt(throughput[n]!, 0)} req/s`).join(", "),
    );
    for (const n of workerCounts) {
      const r = ratios[`${n}w`]!;
      lines.push(
        `switchyard/nginx at ${n} worker(s) = ${fmt(r.median, 2)} (per round: ${r.rounds.map((x) => fmt(x, 2)).join(", ")})`,
      );
    }
    const floorRatio = ratios["node-floor/nginx-1w"];
    if (floorRatio !== undefined) {
      lines.push(
        `node-floor (zero-logic raw-socket Node proxy, 1 process)/nginx at 1 worker = ${fmt(floorRatio.median, 2)} ` +
          `(per round: ${floorRatio.rounds.map((x) => fmt(x, 2)).join(", ")})`,
      );
    }
    if (nStreams > 0) {
      lines.push(
        `${nStreams} concurrent slow streams (30 chunks, 1/s): peak open ${peakOpen}, completed with [DONE] ${streamResult.complete}, ` +
          `failed ${streamResult.failed} (still open at the ${argv["stream-seconds"]} s deadline: ${streamResult.late}; statuses ${JSON.stringify(streamResult.statuses)}); gateway RSS idle ${fmt(rssIdle, 0)} MiB, peak ${fmt(peakRss, 0)} MiB`,
      );
    }
    writeFileSync(
      join(root, "bench", "gateway", "last-results.json"),
      `${JSON.stringify(
        {
          at: new Date().toISOString(),
          machine,
          loadAverage: { before: loadBefore, after: loadAfter },
          rounds,
          secondsPerRate: seconds,
          workers: workerCounts,
          latencyMs: latency,
          throughputRps: throughput,
          throughputRounds: tput,
          switchyardOverNginx: ratios,
          ...(nStreams > 0 && { streams: { ...streamResult, peakOpen, rssIdleMiB: rssIdle, rssPeakMiB: peakRss } }),
          ...(soakSeconds > 0 && { soak: { ...soak, rssMiB: samples } }),
        },
        null,
        2,
      )}\n`,
    );
    const firstHalf = samples.slice(0, Math.ceil(samples.length / 2));
    const secondHalf = samples.slice(Math.ceil(samples.length / 2));
    const avg = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    if (soakSeconds > 0)
      lines.push(
        `soak ${soakSeconds} s at ${argv["soak-rate"]} req/s: ${soak.ok} ok, ${soak.errors} errors; RSS ${fmt(samples[0] ?? NaN, 0)} -> ` +
          `${fmt(samples.at(-1) ?? NaN, 0)} MiB (max ${fmt(Math.max(...samples), 0)}; mean of 2nd half minus 1st half ` +
          `${fmt(avg(secondHalf) - avg(firstHalf), 1)} MiB)`,
      );
    process.stdout.write(`${lines.join("\n")}\n`);
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
    for (const file of nginxPids) {
      try {
        const pid = Number(readFileSync(file, "utf8"));
        if (pid > 0) process.kill(pid, "SIGQUIT");
      } catch {
        // nginx already gone
      }
    }
    await new Promise((r) => setTimeout(r, 300));
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
