/**
 * Gateway traffic end to end (issue 14): a real server, a real `switchyard gateway --control-plane` (2 workers, so
 * the report is the primary's sum over its workers) in front of fixture backends the server's services file names,
 * requests answered, saved by failover to another pool and cut mid-stream; the numbers in the traffic API, the
 * serving ledger, `services describe` and on the dashboard in Chromium.
 *
 * SWITCHYARD_SCREENSHOT=<file.png> also saves a screenshot of the traffic section (docs/img/traffic.png).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/cli/client.js";
import { FixtureBackend } from "../../src/gateway/testing/fixture-backend.js";
import { packageRoot } from "../../src/paths.js";
import type { RequestsLedger, TrafficSeries } from "../../src/server/traffic.js";
import { chromiumPath, noChromium } from "../requirements.js";
import { ServerProcess, tempHome, writeCluster } from "./harness.js";

const bin = path.join(packageRoot, "bin", "switchyard.js");
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ""}`);
}

async function chat(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "chat", stream: true, messages: [{ role: "user", content: "hi" }] }),
  });
  return { status: res.status, body: await res.text() };
}

describe.skipIf(noChromium)("gateway traffic in the server, the ledger, the CLI and the dashboard", () => {
  const home = tempHome("traffic");
  const server = new ServerProcess(home, writeCluster(home));
  let client: ApiClient;
  let primary: FixtureBackend;
  let fallback: FixtureBackend;
  let gateway: ChildProcess | undefined;
  let gatewayOut = "";
  let gatewayUrl: string;
  let browser: Browser | undefined;

  beforeAll(async () => {
    client = await server.start();
    primary = await FixtureBackend.start("primary-0", { chunks: 4 });
    fallback = await FixtureBackend.start("fallback-0", { chunks: 4 });
    const file = path.join(home, "services.yaml");
    const yaml = [
      "services:",
      "  - model: chat",
      "    pools:",
      "      - name: primary",
      `        backends: [{ id: primary-0, url: "${primary.url}", engine: vllm }]`,
      "      - name: fallback",
      `        backends: [{ id: fallback-0, url: "${fallback.url}", engine: vllm }]`,
    ].join("\n");
    writeFileSync(file, yaml);
    await client.post("/api/services", { yaml, file });
    const port = await freePort();
    gateway = spawn(
      process.execPath,
      [
        bin,
        "--home",
        home,
        "gateway",
        "--control-plane",
        server.info!.url,
        "--workers",
        "2",
        "--name",
        "edge-test",
      ].concat(["--port", String(port)]),
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, SWITCHYARD_HOME: home } },
    );
    gateway.stdout!.on("data", (c: Buffer) => (gatewayOut += c.toString("utf8")));
    gateway.stderr!.on("data", (c: Buffer) => (gatewayOut += c.toString("utf8")));
    gatewayUrl = `http://127.0.0.1:${port}`;
    // Knows the model once it has the server's backend set (asked without sending a request that would count).
    await until(`the gateway to know the model:\n${gatewayOut}`, async () => {
      const res = await fetch(`${gatewayUrl}/v1/models`);
      return (await res.text()).includes('"chat"') ? true : undefined;
    });
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
    });
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    if (gateway && gateway.exitCode === null) {
      gateway.kill("SIGTERM");
      await new Promise((r) => gateway!.once("exit", r));
    }
    await primary?.close();
    await fallback?.close();
    await server.stop();
  });

  it("answered, saved by failover and cut requests reach the API, the ledger, describe and the page", async () => {
    // Five answered by the primary pool (default settings: a backend is ejected after 3 failures, so the two 500s
    // and the cut below all reach it).
    for (let i = 0; i < 5; i++) expect((await chat(gatewayUrl)).status).toBe(200);
    // The primary answers 500 before the first byte: the fallback pool answers (saved by failover).
    primary.behaviour.fault = "status500";
    for (let i = 0; i < 2; i++) {
      const r = await chat(gatewayUrl);
      expect(r.status).toBe(200);
      expect(r.body).toContain("[DONE]");
    }
    // The primary cuts a stream mid-answer: the client gets an in-band error (cut), never a silent truncation.
    primary.behaviour.fault = "cutMidStream";
    const cut = await chat(gatewayUrl);
    expect(cut.body).not.toMatch(/data: \[DONE\]\s*$/);
    primary.behaviour.fault = "none";
    // A model the gateway does not serve: refused by the gateway itself, counted apart (no service).
    const unknown = await fetch(`${gatewayUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "nope", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(unknown.status).toBe(404);

    // The API: within a report or two (every 5 s).
    const totals = await until(
      "the traffic in the API",
      async () => {
        const s = await client.get<TrafficSeries>("/api/services/traffic?service=chat&since=5m");
        const t = s.services[0]?.totals;
        return t !== undefined && t.requests >= 8 && s.rejected.unknown_model === 1 ? s : undefined;
      },
      60_000,
    );
    const t = totals.services[0]!.totals;
    expect(t).toMatchObject({ requests: 8, answered: 7, failed: 1, cut: 1, saved: 2, caught: 2, failovers: 2 });
    expect(t.errors).toEqual({ status_5xx: 2, cut: 1 });
    expect(t.ttftP50Ms).not.toBeNull();
    expect(totals.gateways.map((g) => g.gateway)).toEqual(["edge-test"]);
    const pools = Object.fromEntries(totals.services[0]!.pools.map((p) => [p.pool, p]));
    expect(pools.primary).toMatchObject({ answered: 5, failed: 1 });
    expect(pools.fallback).toMatchObject({ answered: 2, failed: 0 });

    // The serving ledger.
    const ledger = await client.get<RequestsLedger>("/api/services/ledger");
    expect(ledger.requests).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ service: "chat", pool: "primary", answered: 5, failed: 1, incomplete: 1 }),
        expect.objectContaining({ service: "chat", pool: "fallback", answered: 2, failed: 0 }),
      ]),
    );
    expect(ledger.saved).toEqual([{ service: "chat", saved: 2, retries: 2, failovers: 2 }]);

    // `services describe`: the last minute's line, and --json.
    const run = (args: string[]): string => {
      const r = spawnSync(process.execPath, [bin, "--home", home, ...args], {
        encoding: "utf8",
        env: { ...process.env, SWITCHYARD_HOME: home },
      });
      expect(r.status, r.stderr).toBe(0);
      return r.stdout;
    };
    expect(run(["services", "describe", "chat"])).toMatch(
      /traffic\s+last minute: [\d.]+ req\/s \(8 requests\), TTFT p50 [\d.]+ m?s p99 [\d.]+ m?s, 1 failed \(1 cut mid-answer\), errors status_5xx 2, cut 1, failovers 2, saved by failover 2/,
    );
    const described = JSON.parse(run(["--json", "services", "describe", "chat"])) as { traffic: { saved: number } };
    expect(described.traffic.saved).toBe(2);
    expect(run(["services", "ledger"])).toMatch(/chat\s+2\s+2\s+2/);

    // The dashboard.
    const page = await browser!.newPage({ viewport: { width: 1400, height: 1300 } });
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(server.dashboardUrl());
    const block = page.locator('[data-traffic-service="chat"]');
    await block.waitFor();
    const value = (k: string) => block.locator(`[data-k="${k}"] b`).textContent();
    await expect(value("requests")).resolves.toBe("8");
    await expect(value("saved")).resolves.toBe("2");
    await expect(value("failovers")).resolves.toBe("2");
    await expect(value("cut")).resolves.toBe("1");
    await expect(value("caught")).resolves.toBe("2");
    await expect(value("failed")).resolves.toBe("1");
    await expect(value("errors")).resolves.toBe("status_5xx 2, cut 1");
    expect(await value("ttft")).toMatch(/ms \/ .*ms/);
    await block.locator(".chart-errors canvas").waitFor();
    expect(await block.locator("canvas").count()).toBe(3);
    expect(await page.locator("#traffic-gateways").textContent()).toContain("edge-test");
    expect(await page.locator("#traffic-rejected").textContent()).toBe(
      "refused by the gateways (15 min): unknown_model 1",
    );
    const savedCell = page.locator('#requests-ledger tr.total[data-service="chat"] td').nth(4);
    await expect(savedCell.textContent()).resolves.toBe("2");
    const primaryRow = page.locator('#requests-ledger tr[data-pool="primary"] td');
    await expect(primaryRow.nth(2).textContent()).resolves.toBe("5");
    await expect(primaryRow.nth(3).textContent()).resolves.toBe("1");
    if (process.env.SWITCHYARD_SCREENSHOT) {
      await page.locator("#traffic-panel").screenshot({ path: process.env.SWITCHYARD_SCREENSHOT });
    }
    expect(errors).toEqual([]);
    await page.close();
  }, 120_000);
});
