/**
 * The gateway as data plane (`switchyard gateway --control-plane URL`, the built CLI, 2 workers): it routes to the
 * backend set the control plane hands out, and a control plane that is SIGKILLed mid-stream interrupts nothing: the
 * stream completes, new requests still route from the last known set, a gateway started while the control plane is
 * down serves the set cached on disk, and a restarted control plane with a new set is followed.
 *
 * The control plane here is a stand-in process speaking the contract of src/gateway/control-plane-source.ts
 * (GET /api/services/backends with the bearer token, long poll with since/epoch/wait), so it can be SIGKILLed.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { FixtureBackend } from "../../src/gateway/testing/fixture-backend.js";
import { packageRoot } from "../../src/paths.js";

const bin = path.join(packageRoot, "bin", "switchyard.js");
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const TOKEN = "test-token-0123456789abcdef";

const FAKE_CONTROL_PLANE = `
import { createServer } from "node:http";
const [port, setFile] = process.argv.slice(2);
const { readFileSync } = await import("node:fs");
const set = JSON.parse(readFileSync(setFile, "utf8"));
createServer((req, res) => {
  if (req.headers.authorization !== "Bearer ${TOKEN}") { res.writeHead(401).end("{}"); return; }
  const u = new URL(req.url, "http://x");
  if (u.pathname !== "/api/services/backends") { res.writeHead(404).end("{}"); return; }
  const answer = () => { res.writeHead(200, { "content-type": "application/json" }); res.end(JSON.stringify(set)); };
  const since = u.searchParams.get("since");
  if (since !== null && Number(since) === set.version && u.searchParams.get("epoch") === set.epoch) {
    setTimeout(answer, Math.min(60, Number(u.searchParams.get("wait") ?? 25)) * 1000);
  } else answer();
}).listen(Number(port), "127.0.0.1", () => console.log("READY"));
`;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

interface Proc {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

function start(args: string[], env: NodeJS.ProcessEnv): Proc {
  const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (c: Buffer) => (out += c.toString("utf8")));
  child.stderr!.on("data", (c: Buffer) => (out += c.toString("utf8")));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, out: () => out, exited };
}

async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch {
      // not yet
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function listeningUrl(p: Proc): Promise<string> {
  return until(`the gateway to listen:\n${p.out()}`, () => {
    for (const line of p.out().split("\n")) {
      if (!line.startsWith("{")) continue;
      const rec = JSON.parse(line) as { url?: string };
      if (rec.url !== undefined) return rec.url;
    }
    if (p.child.exitCode !== null) throw new Error(p.out());
    return undefined;
  });
}

async function complete(
  url: string,
  model: string,
  stream: boolean,
): Promise<{ status: number; backend: string | null; body: string }> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model, stream, messages: [{ role: "user", content: "hi" }] }),
  });
  return { status: res.status, backend: res.headers.get("x-switchyard-backend"), body: await res.text() };
}

function backendSet(version: number, epoch: string, backend: FixtureBackend): unknown {
  return {
    version,
    epoch,
    services: [
      {
        name: "m",
        aliases: ["m-alias"],
        pools: [{ name: "p", priority: 0, queueThreshold: 16 }],
        backends: [{ id: backend.name, url: backend.url, pool: "p", engine: "vllm", state: "ready", model: "m" }],
      },
    ],
  };
}

describe("switchyard gateway --control-plane: the data plane outlives the control plane", () => {
  let dir: string;
  let slow: FixtureBackend;
  let fast: FixtureBackend;
  let env: NodeJS.ProcessEnv;
  const procs: Proc[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "sy-gw-cp-"));
    slow = await FixtureBackend.start("slow", { chunks: 16, record: false });
    fast = await FixtureBackend.start("fast", { record: false });
    const home = path.join(dir, "home");
    mkdirSync(home, { recursive: true, mode: 0o700 });
    writeFileSync(path.join(dir, "token"), `${TOKEN}\n`, { mode: 0o600 });
    writeFileSync(path.join(dir, "cp.mjs"), FAKE_CONTROL_PLANE);
    env = { ...process.env, SWITCHYARD_HOME: home };
  });
  afterEach(async () => {
    for (const p of procs) {
      if (p.child.exitCode === null && p.child.signalCode === null) {
        p.child.kill("SIGTERM");
        await Promise.race([p.exited, sleep(10_000)]);
        if (p.child.exitCode === null) p.child.kill("SIGKILL");
      }
    }
    procs.length = 0;
  });
  afterAll(async () => {
    await slow.close();
    await fast.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function controlPlane(port: number, set: unknown, name: string): Promise<Proc> {
    const file = path.join(dir, `${name}.json`);
    writeFileSync(file, JSON.stringify(set));
    const cp = start([path.join(dir, "cp.mjs"), String(port), file], env);
    procs.push(cp);
    await until("the control plane", () => (cp.out().includes("READY") ? true : undefined));
    return cp;
  }

  it("SIGKILL of the control plane mid-stream: the stream completes, routing goes on, a new gateway serves the cached set, a restarted control plane is followed", async () => {
    const cpPort = await freePort();
    const cp = await controlPlane(cpPort, backendSet(1, "epoch-1", slow), "set1");
    const gwArgs = ["--control-plane", `http://127.0.0.1:${cpPort}`, "--token-file", path.join(dir, "token")];
    const gw = start([bin, "--json", "gateway", ...gwArgs, "--port", "0", "--workers", "2"], env);
    procs.push(gw);
    const url = await listeningUrl(gw);
    // The set reaches both workers: every connection (either worker) routes "m" and its alias.
    await until("the backend set", async () =>
      (await complete(url, "m-alias", false)).status === 200 ? true : undefined,
    );
    for (let i = 0; i < 6; i++)
      expect((await complete(url, i % 2 === 0 ? "m" : "m-alias", false)).backend).toBe("slow");

    await slow.set({ chunkDelayMs: 200 }); // the stream is slow (3.2 s); the other requests are not
    const stream = complete(url, "m", true);
    await sleep(800); // under way: 16 chunks, 200 ms apart
    cp.child.kill("SIGKILL");
    await cp.exited;
    const s = await stream;
    expect(s.status).toBe(200);
    expect(s.body.trimEnd().endsWith("data: [DONE]")).toBe(true);
    await slow.set({ chunkDelayMs: 0 });
    // The control plane is gone: requests still route from the last known set.
    for (let i = 0; i < 4; i++) {
      const r = await complete(url, "m", false);
      expect(r.status).toBe(200);
      expect(r.backend).toBe("slow");
    }
    // A gateway that starts while the control plane is down serves the set it cached on disk.
    const second = start([bin, "--json", "gateway", ...gwArgs, "--port", "0"], env);
    procs.push(second);
    const url2 = await listeningUrl(second);
    const cached = await until("the cached set", async () => {
      const r = await complete(url2, "m", false);
      return r.status === 200 ? r : undefined;
    });
    expect(cached.backend).toBe("slow");
    expect(second.out()).toMatch(/cannot be reached.*serving the last known backend set/);

    // The control plane comes back (a new epoch) with another backend: the gateway follows it.
    await controlPlane(cpPort, backendSet(1, "epoch-2", fast), "set2");
    const moved = await until("the new set", async () => {
      const r = await complete(url, "m", false);
      return r.backend === "fast" ? r : undefined;
    });
    expect(moved.status).toBe(200);
    for (let i = 0; i < 4; i++) expect((await complete(url, "m", false)).backend).toBe("fast");
  }, 90_000);

  it("bad input: no services file and no control plane, a control-plane URL that is not one, an unreadable token file", async () => {
    const run = (args: string[]): Promise<{ code: number | null; out: string }> => {
      const p = start([bin, "gateway", ...args], env);
      return p.exited.then((code) => ({ code, out: p.out() }));
    };
    const none = await run([]);
    expect(none.code).toBe(2);
    expect(none.out).toMatch(/no services file and no --control-plane/);
    const badUrl = await run(["--control-plane", "ftp://x", "--token-file", path.join(dir, "token")]);
    expect(badUrl.code).toBe(2);
    expect(badUrl.out).toMatch(/--control-plane ftp:\/\/x is not an http\(s\) URL/);
    const noToken = await run(["--control-plane", "http://127.0.0.1:1", "--token-file", path.join(dir, "nope")]);
    expect(noToken.code).toBe(2);
    expect(noToken.out).toMatch(/cannot read the control plane's API token from .*nope \(ENOENT\)/);
  }, 30_000);
});
