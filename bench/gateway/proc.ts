/**
 * Child processes of the gateway benchmark (compiled to JS by run.ts, so no transpiler sits in the measured process).
 *   backend <fast|slow>                       fixture model server; prints "READY <port>"
 *   gateway <fastUrl> <slowUrl>               switchyard gateway (access log on, to /dev/null); prints "READY <port>"
 *   rate <url> <rps> <seconds>                open-loop load at a fixed rate; prints a JSON latency summary
 *   streams <url> <n> <seconds>               n concurrent streaming requests held open; prints a JSON summary
 * Every loop is bounded by its arguments and exits on its own.
 */
import { Pool } from "undici";
import { destination, pino } from "pino";
import { compileServices } from "../../src/gateway/config.js";
import { Gateway } from "../../src/gateway/gateway.js";
import { listenGateway } from "../../src/gateway/server.js";
import { FixtureBackend } from "../../src/gateway/testing/fixture-backend.js";

const CHAT_BODY = JSON.stringify({
  model: "m",
  messages: [{ role: "user", content: "Say hello in five words." }],
  max_tokens: 16,
});

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function backend(kind: string): Promise<void> {
  const f =
    kind === "slow"
      ? await FixtureBackend.start("slow", { chunks: 30, chunkDelayMs: 1000, record: false, padding: 16 })
      : await FixtureBackend.start("fast", { chunks: 8, record: false, padding: 8 });
  process.stdout.write(`READY ${f.port}\n`);
}

async function gateway(fastUrl: string, slowUrl: string): Promise<void> {
  const config = compileServices({
    gateway: { stallTimeoutMs: 30_000, ttftTimeoutMs: 60_000, connectTimeoutMs: 10_000 },
    services: [
      { model: "m", aliases: [], pools: [{ name: "main", backends: [{ id: "fast", url: fastUrl, engine: "vllm" }] }] },
      {
        model: "slow",
        aliases: [],
        pools: [{ name: "main", backends: [{ id: "slow", url: slowUrl, engine: "vllm" }] }],
      },
    ],
  });
  const logger = pino(
    { level: process.env.BENCH_LOG_LEVEL ?? "info" },
    destination({ dest: "/dev/null", sync: false }),
  );
  const gw = new Gateway(config, { logger });
  gw.startHealthChecks();
  const http = await listenGateway(gw, { host: "127.0.0.1", port: 0 });
  process.stdout.write(`READY ${http.port}\n`);
  // A clean exit on SIGINT lets `node --cpu-prof` write its profile.
  process.once("SIGINT", () => process.exit(0));
}

async function rate(url: string, rps: number, seconds: number): Promise<void> {
  const u = new URL(url);
  const pool = new Pool(u.origin, { connections: 256, pipelining: 1 });
  const latencies: number[] = [];
  let errors = 0;
  const total = Math.round(rps * seconds);
  let sent = 0;
  const inflight = new Set<Promise<void>>();
  const start = performance.now();
  const one = async (): Promise<void> => {
    const t0 = performance.now();
    try {
      const res = await pool.request({
        path: u.pathname,
        method: "POST",
        headers: { "content-type": "application/json" },
        body: CHAT_BODY,
      });
      await res.body.dump({ limit: 1 << 20 });
      if (res.statusCode !== 200) errors++;
      else latencies.push(performance.now() - t0);
    } catch {
      errors++;
    }
  };
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rps));
    while (sent < due) {
      sent++;
      const p = one().finally(() => inflight.delete(p));
      inflight.add(p);
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(inflight);
  const elapsed = (performance.now() - start) / 1000;
  await pool.close();
  // The first second warms connections and the JIT: left out of the percentiles.
  const sorted = latencies.slice(Math.min(rps, Math.floor(latencies.length / 5))).sort((a, b) => a - b);
  process.stdout.write(
    `${JSON.stringify({
      sent,
      ok: latencies.length,
      errors,
      achievedRps: sent / elapsed,
      p50: percentile(sorted, 50),
      p90: percentile(sorted, 90),
      p99: percentile(sorted, 99),
      max: sorted.at(-1) ?? NaN,
    })}\n`,
  );
}

async function streams(url: string, n: number, seconds: number): Promise<void> {
  const u = new URL(url);
  const pool = new Pool(u.origin, { connections: n, pipelining: 1, bodyTimeout: 0, headersTimeout: 0 });
  const body = JSON.stringify({ model: "slow", stream: true, messages: [{ role: "user", content: "x" }] });
  let open = 0;
  let complete = 0;
  let failed = 0;
  let late = 0;
  const statuses: Record<string, number> = {};
  const deadline = Date.now() + seconds * 1000;
  const one = async (): Promise<void> => {
    try {
      const res = await pool.request({
        path: u.pathname,
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
      let first = true;
      let tail = "";
      for await (const chunk of res.body) {
        if (first) {
          open++;
          first = false;
        }
        tail = (tail + (chunk as Buffer).toString("utf8")).slice(-64);
        if (Date.now() > deadline) {
          late++;
          break;
        }
      }
      if (tail.includes("data: [DONE]")) complete++;
      else failed++;
    } catch {
      failed++;
    }
  };
  const all: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    all.push(one());
    if (i % 100 === 99) await new Promise((r) => setTimeout(r, 50));
  }
  const reporter = setInterval(() => process.stdout.write(`OPEN ${open}\n`), 500);
  await Promise.all(all);
  clearInterval(reporter);
  await pool.close();
  process.stdout.write(`${JSON.stringify({ requested: n, complete, failed, late, statuses })}\n`);
}

async function main(): Promise<void> {
  const [role, ...args] = process.argv.slice(2);
  switch (role) {
    case "backend":
      return backend(args[0] ?? "fast");
    case "gateway":
      return gateway(args[0]!, args[1]!);
    case "rate":
      return rate(args[0]!, Number(args[1]), Number(args[2]));
    case "streams":
      return streams(args[0]!, Number(args[1]), Number(args[2]));
    default:
      process.stderr.write(`unknown role ${String(role)}\n`);
      process.exit(2);
  }
}

await main();
