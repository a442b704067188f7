/**
 * The gateway as the data plane of the real control plane: `switchyard up` owns a service (`POST /api/services`, one
 * replica of the stand-in engine), `switchyard gateway --control-plane <server> --workers 2` (the built CLI, token from
 * the home) routes to the replica the server publishes. The server is SIGKILLed while a stream is under way: the
 * stream completes, and new requests still route from the last known set; the restarted server re-adopts the replica.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/cli/client.js";
import type { BackendSet } from "../../src/gateway/control-plane-source.js";
import { packageRoot } from "../../src/paths.js";
import type { ServiceSummary } from "../../src/supervisor/services.js";
import { ServerProcess, sleep, tempHome, waitFor, writeCluster } from "./harness.js";

const bin = path.join(packageRoot, "bin", "switchyard.js");
const fixture = path.join(packageRoot, "src", "gateway", "testing", "replica-fixture.mjs");

const yaml = [
  "services:",
  "  - model: fixture-model",
  "    pools:",
  "      - name: unstable",
  "        replicas:",
  "          count: 1",
  "          engine: vllm",
  `          command: ["${process.execPath}", "${fixture}", --port, "{port}", --tokens, "20", --token-delay-ms, "150"]`,
  "          port: 18360",
  "          readyTimeoutS: 30",
  "          drainSeconds: 1",
].join("\n");

async function stream(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "fixture-model", prompt: "x", stream: true }),
  });
  return { status: res.status, body: await res.text() };
}

describe("the gateway follows the real server, and outlives it", () => {
  const home = tempHome("gw-server");
  const server = new ServerProcess(home, writeCluster(home));
  let client: ApiClient;
  let gw: ChildProcess | undefined;
  let out = "";

  beforeAll(async () => {
    client = await server.start();
  }, 30_000);
  afterAll(async () => {
    if (gw !== undefined && gw.exitCode === null) {
      gw.kill("SIGTERM");
      await new Promise((r) => setTimeout(r, 3000));
      if (gw.exitCode === null) gw.kill("SIGKILL");
    }
    await client.post(`/api/services/fixture-model/undeploy`).catch(() => undefined);
    await waitFor(
      "undeploy",
      async () => (await client.get<ServiceSummary[]>("/api/services")).length === 0,
      30_000,
    ).catch(() => undefined);
    await server.stop();
  }, 60_000);

  it("SIGKILL of the server mid-stream: the stream completes, new requests still route, the restarted server re-adopts the replica", async () => {
    const file = path.join(home, "services.yaml");
    writeFileSync(file, yaml);
    await client.post<ServiceSummary[]>("/api/services", { yaml, file });
    const set = await waitFor(
      "a ready replica",
      async () => {
        const s = await client.get<BackendSet>("/api/services/backends");
        return s.services.some((svc) => svc.backends.some((b) => b.state === "ready")) ? s : null;
      },
      60_000,
    );
    const replica = set.services[0]!.backends[0]!;

    gw = spawn(
      process.execPath,
      [bin, "--json", "gateway", "--control-plane", server.info!.url, "--port", "0", "--workers", "2"],
      { env: { ...process.env, SWITCHYARD_HOME: home }, stdio: ["ignore", "pipe", "pipe"] },
    );
    gw.stdout!.on("data", (c: Buffer) => (out += c.toString("utf8")));
    gw.stderr!.on("data", (c: Buffer) => (out += c.toString("utf8")));
    const url = await waitFor(
      `the gateway to listen:\n${out}`,
      () => Promise.resolve(/"url":"(http:\/\/[^"]+)"/.exec(out)?.[1] ?? null),
      30_000,
    );
    const first = await waitFor(
      "the gateway to route to the replica",
      async () => {
        const r = await stream(url);
        return r.status === 200 ? r : null;
      },
      30_000,
    );
    expect(first.body.trimEnd().endsWith("data: [DONE]")).toBe(true);

    const inFlight = stream(url);
    await sleep(1000); // 20 chunks, 150 ms apart: under way
    server.kill9();
    const s = await inFlight;
    expect(s.status).toBe(200);
    expect(s.body.trimEnd().endsWith("data: [DONE]")).toBe(true);
    expect(s.body).not.toContain('"error"');
    // The server is gone: both workers still route from the last known set.
    for (let i = 0; i < 4; i++) {
      const r = await stream(url);
      expect(r.status).toBe(200);
      expect(r.body.trimEnd().endsWith("data: [DONE]")).toBe(true);
    }
    expect(out).toMatch(/control plane: .* cannot be reached/);

    // (Following a restarted server is tested in gateway-control-plane.test.ts: this harness restarts the server on
    // another port.) The restarted server re-adopts the replica, with the same URL the gateway routes to.
    client = await server.start();
    const adopted = await waitFor(
      "the replica adopted",
      async () => {
        const a = await client.get<BackendSet>("/api/services/backends");
        return a.services.some((svc) => svc.backends.some((b) => b.state === "ready")) ? a : null;
      },
      30_000,
    );
    expect(adopted.services[0]?.backends.map((b) => b.url)).toContain(replica.url);
  }, 180_000);
});
