/**
 * `switchyard gateway` as users run it (node bin/switchyard.js, the built dist/), in front of a slow streaming fixture
 * backend: SIGTERM drains (streams in flight finish, then the process exits), a drain deadline cuts a stream with an
 * in-band error event, and the console is JSON lines when stdout is a pipe, human lines on a terminal (a pty from
 * `script`, part of every Debian install).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { FixtureBackend } from "../../src/gateway/testing/fixture-backend.js";
import { packageRoot } from "../../src/paths.js";

const bin = path.join(packageRoot, "bin", "switchyard.js");
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Gw {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  exited: Promise<number | null>;
}

function startGateway(args: string[], env: NodeJS.ProcessEnv): Gw {
  const child = spawn(process.execPath, [bin, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout!.on("data", (c: Buffer) => (out += c.toString("utf8")));
  child.stderr!.on("data", (c: Buffer) => (err += c.toString("utf8")));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, out: () => out, err: () => err, exited };
}

async function listeningUrl(gw: Gw): Promise<string> {
  const until = Date.now() + 20_000;
  while (Date.now() < until) {
    for (const line of gw.out().split("\n")) {
      if (!line.startsWith("{")) continue;
      const rec = JSON.parse(line) as { url?: string };
      if (rec.url !== undefined) return rec.url;
    }
    await sleep(50);
  }
  throw new Error(`the gateway did not start:\n${gw.out()}\n${gw.err()}`);
}

async function streamText(url: string): Promise<string> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "m", stream: true, messages: [{ role: "user", content: "hi" }] }),
  });
  return await res.text();
}

describe("switchyard gateway process: SIGTERM drain and console output", () => {
  let dir: string;
  let backend: FixtureBackend;
  let services: string;
  let env: NodeJS.ProcessEnv;
  let gw: Gw | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "sy-gw-cli-"));
    backend = await FixtureBackend.start("slow");
    services = path.join(dir, "services.yaml");
    writeFileSync(
      services,
      `services:\n  - model: m\n    pools:\n      - name: p\n        backends: [{ id: slow, url: "${backend.url}", engine: vllm }]\n`,
    );
    env = { ...process.env, SWITCHYARD_HOME: path.join(dir, "home") };
  });
  afterEach(async () => {
    if (gw !== undefined && gw.child.exitCode === null) gw.child.kill("SIGKILL");
    gw = undefined;
    await backend.reset();
  });
  afterAll(async () => {
    await backend.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("SIGTERM: stops accepting, lets the stream in flight finish, exits 0; stdout (a pipe) is JSON lines only", async () => {
    await backend.set({ chunks: 30, chunkDelayMs: 50 }); // 1.5 s
    gw = startGateway(["gateway", services, "--port", "0", "--drain-timeout", "20"], env);
    const url = await listeningUrl(gw);
    const stream = streamText(url);
    await sleep(300);
    gw.child.kill("SIGTERM");
    await sleep(200);
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
    const text = await stream;
    expect(text).toContain("slow-tok29");
    expect(text.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(await gw.exited).toBe(0);
    const lines = gw.out().trim().split("\n");
    for (const line of lines) expect(() => JSON.parse(line) as unknown).not.toThrow();
    const msgs = lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    expect(msgs.some((m) => /SIGTERM: no new requests; 1 in flight may finish within 20 s/.test(m))).toBe(true);
    expect(msgs).toContain("gateway: every request in flight finished");
    expect(gw.err()).toBe("");
  });

  it("past --drain-timeout the stream is cut with an in-band gateway_shutdown event, and the process exits", async () => {
    await backend.set({ chunks: 400, chunkDelayMs: 50 }); // 20 s
    gw = startGateway(["gateway", services, "--port", "0", "--drain-timeout", "0.5"], env);
    const url = await listeningUrl(gw);
    const stream = streamText(url);
    await sleep(300);
    gw.child.kill("SIGTERM");
    const text = await stream;
    expect(text).toContain("slow-tok0");
    expect(text).not.toContain("[DONE]");
    expect(text.trimEnd().split("\n\n").at(-1)).toContain('"code":"gateway_shutdown"');
    expect(await gw.exited).toBe(0);
    expect(gw.out()).toContain("1 request(s) cut");
  });

  it("on a terminal the console is human lines, none of them JSON", async () => {
    // `script` gives the gateway a pty for stdout; `timeout` sends it SIGTERM after 3 s. Paths are this test's own.
    const cmd = `timeout --preserve-status -s TERM 3 ${process.execPath} ${bin} gateway ${services} --port 0`;
    const child = spawn("script", ["-qfec", cmd, "/dev/null"], { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString("utf8")));
    const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
    expect(code).toBe(0);
    const lines = out
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter(Boolean);
    expect(lines.some((l) => /^\d\d:\d\d:\d\d switchyard gateway listening on http:\/\/127\.0\.0\.1:\d+/.test(l))).toBe(
      true,
    );
    expect(lines.some((l) => /SIGTERM: no new requests; nothing in flight/.test(l))).toBe(true);
    for (const l of lines) expect(l.startsWith("{"), l).toBe(false);
  });
});
