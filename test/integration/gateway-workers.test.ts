/**
 * `switchyard gateway --workers 2` as users run it (the built CLI): two processes accept on one port, a key's RPM
 * limit holds across both (R, not 2R), /metrics counts every worker's requests, a worker killed mid-stream is
 * restarted while the other worker's streams finish untouched, and SIGTERM drains both.
 *
 * Which worker serves a connection is the primary's choice (the next free one); the tests open connections until each
 * worker has some, learning the worker of each from GET /healthz on that same keep-alive connection.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Client } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { FixtureBackend } from "../../src/gateway/testing/fixture-backend.js";
import { selfSigned } from "../../src/gateway/testing/self-signed.js";
import { packageRoot } from "../../src/paths.js";

const bin = path.join(packageRoot, "bin", "switchyard.js");
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Gw {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

function startGateway(args: string[], env: NodeJS.ProcessEnv): Gw {
  const child = spawn(process.execPath, [bin, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (c: Buffer) => (out += c.toString("utf8")));
  child.stderr!.on("data", (c: Buffer) => (out += c.toString("utf8")));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, out: () => out, exited };
}

async function listeningUrl(gw: Gw): Promise<string> {
  const until = Date.now() + 30_000;
  while (Date.now() < until) {
    for (const line of gw.out().split("\n")) {
      if (!line.startsWith("{")) continue;
      const rec = JSON.parse(line) as { url?: string };
      if (rec.url !== undefined) return rec.url;
    }
    if (gw.child.exitCode !== null) break;
    await sleep(50);
  }
  throw new Error(`the gateway did not start:\n${gw.out()}`);
}

interface Conn {
  client: Client;
  worker: number;
  pid: number;
}

/** Opens connections until each of `workers` workers holds at least `perWorker` of them (at most 200 tries). */
async function connectionsPerWorker(url: string, workers: number, perWorker: number): Promise<Conn[][]> {
  const by: Conn[][] = Array.from({ length: workers }, () => []);
  const spare: Client[] = [];
  for (let i = 0; i < 200 && by.some((c) => c.length < perWorker); i++) {
    const client = new Client(url, { pipelining: 1, keepAliveTimeout: 60_000 });
    const res = await client.request({ path: "/healthz", method: "GET" });
    const h = (await res.body.json()) as { worker: number; pid: number };
    const list = by[h.worker]!;
    if (list.length < perWorker) list.push({ client, worker: h.worker, pid: h.pid });
    else spare.push(client);
  }
  await Promise.all(spare.map((c) => c.close()));
  for (let w = 0; w < workers; w++) {
    if (by[w]!.length < perWorker) throw new Error(`worker ${w} got only ${by[w]!.length} connections of 200`);
  }
  return by;
}

async function chatOn(
  c: Client,
  headers: Record<string, string> = {},
  stream = false,
): Promise<{ status: number; body: string; error?: string; retryAfter?: string }> {
  try {
    const res = await c.request({
      path: "/v1/chat/completions",
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify({ model: "m", stream, messages: [{ role: "user", content: "hi" }] }),
    });
    let body = "";
    try {
      for await (const chunk of res.body) body += (chunk as Buffer).toString("utf8");
    } catch (err) {
      return { status: res.statusCode, body, error: String(err) };
    }
    const ra = res.headers["retry-after"];
    return { status: res.statusCode, body, ...(typeof ra === "string" && { retryAfter: ra }) };
  } catch (err) {
    return { status: 0, body: "", error: String(err) };
  }
}

describe("switchyard gateway --workers 2", () => {
  let dir: string;
  let fast: FixtureBackend;
  let slow: FixtureBackend;
  let env: NodeJS.ProcessEnv;
  let gw: Gw | undefined;
  let conns: Conn[][] = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "sy-gw-workers-"));
    fast = await FixtureBackend.start("fast", { record: false });
    slow = await FixtureBackend.start("slow", { chunks: 12, chunkDelayMs: 250, record: false });
    env = { ...process.env, SWITCHYARD_HOME: path.join(dir, "home") };
  });
  afterEach(async () => {
    for (const list of conns) for (const c of list) await c.client.destroy();
    conns = [];
    if (gw !== undefined && gw.child.exitCode === null) {
      gw.child.kill("SIGTERM");
      await Promise.race([gw.exited, sleep(10_000)]);
      if (gw.child.exitCode === null) gw.child.kill("SIGKILL");
    }
    gw = undefined;
  });
  afterAll(async () => {
    await fast.close();
    await slow.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function services(backend: FixtureBackend): string {
    const file = path.join(dir, `services-${backend.name}.yaml`);
    writeFileSync(
      file,
      `services:\n  - model: m\n    pools:\n      - name: p\n        backends: [{ id: ${backend.name}, url: "${backend.url}", engine: vllm }]\n`,
    );
    return file;
  }

  it("a burst of keep-alive connections opened at once is spread over both workers, not taken by one", async () => {
    // wrk, a load balancer's pool or an SDK opens its connections at once and keeps them: with the kernel choosing
    // (SCHED_NONE), the first worker to wake took nearly all of such a burst (62/2, 64/0 of wrk's 64), so a second
    // worker added nothing. The primary now hands each new connection to the next free worker.
    gw = startGateway(["--json", "gateway", services(fast), "--port", "0", "--workers", "2", "--no-auth"], env);
    const url = await listeningUrl(gw);
    const clients = Array.from({ length: 32 }, () => new Client(url, { pipelining: 1, keepAliveTimeout: 60_000 }));
    try {
      const workers = await Promise.all(
        clients.map(async (client) => {
          const res = await client.request({ path: "/healthz", method: "GET" });
          return ((await res.body.json()) as { worker: number }).worker;
        }),
      );
      const counts = [0, 1].map((w) => workers.filter((x) => x === w).length);
      expect(counts[0]! + counts[1]!).toBe(32);
      expect(Math.min(...counts)).toBeGreaterThanOrEqual(8);
    } finally {
      await Promise.all(clients.map((c) => c.destroy()));
    }
  });

  it("a key limited to 20 rpm gets about 20 requests across both workers (not 40), and /metrics sums the workers", async () => {
    const keysFile = path.join(dir, "keys.json");
    const added = spawnSync(
      process.execPath,
      [bin, "--json", "gateway", "keys", "add", "app", "--rpm", "20", "--keys-file", keysFile],
      {
        env,
        encoding: "utf8",
      },
    );
    expect(added.status).toBe(0);
    const key = (JSON.parse(added.stdout) as { key: string }).key;
    gw = startGateway(
      ["--json", "gateway", services(fast), "--port", "0", "--workers", "2", "--keys-file", keysFile],
      env,
    );
    const url = await listeningUrl(gw);
    conns = await connectionsPerWorker(url, 2, 2);
    const auth = { authorization: `Bearer ${key}` };
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) => chatOn(conns[i % 2]![Math.floor(i / 2) % 2]!.client, auth)),
    );
    const ok = results.filter((r) => r.status === 200).length;
    const limited = results.filter((r) => r.status === 429);
    expect(ok + limited.length).toBe(60);
    expect(ok).toBeGreaterThanOrEqual(19);
    expect(ok).toBeLessThanOrEqual(21); // 20, plus what refills while the test runs
    expect(Number(limited[0]!.retryAfter)).toBeGreaterThanOrEqual(1);
    // Both workers admitted some: the limit is shared, not one worker's.
    const okByWorker = [0, 1].map((w) => results.filter((r, i) => i % 2 === w && r.status === 200).length);
    expect(okByWorker[0]).toBeGreaterThan(0);
    expect(okByWorker[1]).toBeGreaterThan(0);
    // /metrics asked of either worker counts the 200s of both.
    const res = await conns[0]![0]!.client.request({ path: "/metrics", method: "GET" });
    const text = await res.body.text();
    const m =
      /switchyard_gateway_requests_total\{service="m",backend="fast",status="200",result="complete"\} (\d+)/.exec(text);
    expect(Number(m?.[1])).toBe(ok);
    const rejected = /switchyard_gateway_rejected_total\{reason="rate_limited"\} (\d+)/.exec(text);
    expect(Number(rejected?.[1])).toBe(limited.length);
  }, 60_000);

  it("backend ejection is shared: a failing backend gets ejectAfterFailures requests in all, not per worker", async () => {
    const bad = await FixtureBackend.start("bad", { fault: "status500" });
    try {
      const file = path.join(dir, "services-eject.yaml");
      writeFileSync(
        file,
        [
          "gateway: { ejectAfterFailures: 3, ejectCooldownMs: 60000, healthIntervalMs: 60000 }",
          "services:",
          "  - model: m",
          "    pools:",
          "      - name: p",
          `        backends: [{ id: bad, url: "${bad.url}", engine: vllm }, { id: fast, url: "${fast.url}", engine: vllm }]`,
        ].join("\n"),
      );
      gw = startGateway(["--json", "gateway", file, "--port", "0", "--workers", "2"], env);
      const url = await listeningUrl(gw);
      conns = await connectionsPerWorker(url, 2, 1);
      // One request at a time, alternating workers: every answer comes from "fast" (a 500 is retried there).
      for (let i = 0; i < 16; i++) {
        const r = await chatOn(conns[i % 2]![0]!.client);
        expect(r.status).toBe(200);
      }
      // Three failures in all eject "bad" on both workers (per worker it would take up to six).
      expect(bad.completions).toBe(3);
      const res = await conns[1]![0]!.client.request({ path: "/metrics", method: "GET" });
      const text = await res.body.text();
      expect(text).toMatch(/switchyard_gateway_backend_state\{backend="bad",service="m",pool="p",state="ejected"\} 1/);
    } finally {
      await bad.close();
    }
  }, 60_000);

  it("a worker killed mid-stream is restarted; the other worker's streams finish untouched", async () => {
    gw = startGateway(["--json", "gateway", services(slow), "--port", "0", "--workers", "2"], env);
    const url = await listeningUrl(gw);
    conns = await connectionsPerWorker(url, 2, 2);
    const victimPid = conns[0]![0]!.pid;
    const streams = conns.flat().map((c) => chatOn(c.client, {}, true).then((r) => ({ worker: c.worker, ...r })));
    await sleep(1000); // every stream is under way (12 chunks, 250 ms apart)
    process.kill(victimPid, "SIGKILL");
    const done = await Promise.all(streams);
    for (const s of done.filter((d) => d.worker === 1)) {
      expect(s.status).toBe(200);
      expect(s.body.trimEnd().endsWith("data: [DONE]")).toBe(true);
      expect(s.error).toBeUndefined();
    }
    // The killed worker's streams broke off: never a clean end without [DONE].
    for (const s of done.filter((d) => d.worker === 0)) {
      expect(s.body.includes("data: [DONE]")).toBe(false);
      expect(s.error).toBeDefined();
    }
    // The primary says so and starts a new worker 0 (a new pid) that serves.
    const until = Date.now() + 20_000;
    let replaced = false;
    while (Date.now() < until && !replaced) {
      const c = new Client(url);
      const h = (await (await c.request({ path: "/healthz", method: "GET" })).body.json()) as {
        worker: number;
        pid: number;
      };
      if (h.worker === 0 && h.pid !== victimPid) {
        replaced = true;
        const r = await chatOn(c, {}, true);
        expect(r.status).toBe(200);
        expect(r.body.trimEnd().endsWith("data: [DONE]")).toBe(true);
      }
      await c.close();
    }
    expect(replaced).toBe(true);
    expect(gw.out()).toMatch(/gateway worker 0 \(pid \d+\) exited \(SIGKILL\); restarting it/);
  }, 60_000);

  it("HTTPS (--tls-cert/--tls-key) and CORS (--cors-origin) on every worker", async () => {
    const cert = path.join(dir, "cert.pem");
    const key = path.join(dir, "key.pem");
    selfSigned(cert, key);
    gw = startGateway(
      [
        "--json",
        "gateway",
        services(fast),
        "--port",
        "0",
        "--workers",
        "2",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--cors-origin",
        "https://app.example.com",
      ],
      env,
    );
    const url = await listeningUrl(gw);
    expect(url).toMatch(/^https:/);
    const ca = readFileSync(cert);
    const seen = new Set<number>();
    for (let i = 0; i < 40 && seen.size < 2; i++) {
      const c = new Client(url, { connect: { ca } });
      const h = (await (await c.request({ path: "/healthz", method: "GET" })).body.json()) as { worker: number };
      seen.add(h.worker);
      const res = await c.request({
        path: "/v1/chat/completions",
        method: "POST",
        headers: { "content-type": "application/json", origin: "https://app.example.com" },
        body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] }),
      });
      await res.body.dump();
      expect(res.statusCode).toBe(200);
      expect(res.headers["access-control-allow-origin"]).toBe("https://app.example.com");
      await c.close();
    }
    expect([...seen].sort()).toEqual([0, 1]);
  }, 60_000);

  it("a port in use: the workers cannot listen, and the gateway exits 2 with the fix", async () => {
    const { createServer } = await import("node:net");
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      gw = startGateway(["gateway", services(fast), "--port", String(port), "--workers", "2"], env);
      expect(await gw.exited).toBe(2);
      expect(gw.out()).toMatch(new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: the address is in use.*--port`));
    } finally {
      blocker.close();
    }
  }, 30_000);

  it("SIGTERM drains both workers: their streams finish, then the gateway exits 0", async () => {
    gw = startGateway(["--json", "gateway", services(slow), "--port", "0", "--workers", "2"], env);
    const url = await listeningUrl(gw);
    conns = await connectionsPerWorker(url, 2, 1);
    const streams = conns.flat().map((c) => chatOn(c.client, {}, true));
    await sleep(500);
    gw.child.kill("SIGTERM");
    const done = await Promise.all(streams);
    for (const s of done) {
      expect(s.status).toBe(200);
      expect(s.body.trimEnd().endsWith("data: [DONE]")).toBe(true);
    }
    expect(await gw.exited).toBe(0);
    expect(gw.out()).toMatch(/gateway: stopped/);
  }, 60_000);
});
