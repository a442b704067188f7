import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import OpenAI from "openai";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/cli/client.js";
import { followControlPlane } from "../../src/gateway/control-plane.js";
import type { BackendSet } from "../../src/gateway/control-plane-source.js";
import { Gateway } from "../../src/gateway/gateway.js";
import { listenGateway, type ListeningGateway } from "../../src/gateway/server.js";
import { packageRoot } from "../../src/paths.js";
import { readToken } from "../../src/server/config.js";
import type { DeployedService, ServicePlan } from "../../src/supervisor/services.js";
import type { EventRecord } from "../../src/store/port.js";
import { ServerProcess, sleep, tempHome, waitFor, writeCluster } from "./harness.js";

/**
 * Redeploying a changed spec (issue 14): `switchyard deploy services.yaml` with the same service and another env rolls
 * the running replicas onto it one at a time, readiness-gated, the old one drained before it stops, as a newer
 * checkpoint does, while a gateway that follows the control plane carries a streaming load from the official `openai`
 * client: 0 failed requests. An unchanged redeploy says so and does nothing; `--dry-run` prints the plan only.
 *
 * The model server is the stand-in engine: its stream is the FIXTURE_LABEL of its environment (which spec answered).
 */
const fixture = path.join(packageRoot, "src", "gateway", "testing", "replica-fixture.mjs");
const bin = path.join(packageRoot, "bin", "switchyard.js");
const MODEL = "redeployed";

function servicesYaml(label: string): string {
  return [
    "services:",
    `  - model: ${MODEL}`,
    "    pools:",
    "      - name: serve",
    "        replicas:",
    "          count: 2",
    "          engine: vllm",
    `          command: ["${process.execPath}", "${fixture}", --port, "{port}", --tokens, "8", --token-delay-ms, "60", --ready-after-ms, "500"]`,
    `          env: { FIXTURE_LABEL: ${label} }`,
    "          port: 18600",
    "          readyTimeoutS: 30",
    "          drainSeconds: 10",
  ].join("\n");
}

interface Described {
  replicas: Array<{ jobId: string; slot: string; state: string }>;
}

describe("redeploying a changed spec rolls the replicas under streaming load", () => {
  const home = tempHome("redeploy");
  const server = new ServerProcess(home, writeCluster(home, ["pools:", "  - name: serve", "    nodes: 3"].join("\n")));
  const file = path.join(home, "services.yaml");
  let client: ApiClient;
  let gateway: Gateway;
  let http: ListeningGateway;
  const stop = new AbortController();

  /** The CLI as a user runs it (the built bin), against this test's server. */
  function cli(...args: string[]): { code: number | null; out: string } {
    const r = spawnSync(process.execPath, [bin, "--home", home, ...args], {
      encoding: "utf8",
      env: { ...process.env, SWITCHYARD_HOME: home },
      timeout: 30_000,
    });
    return { code: r.status, out: `${r.stdout}${r.stderr}` };
  }

  beforeAll(async () => {
    client = await server.start();
    gateway = new Gateway(undefined, { logger: pino({ level: "silent" }) });
    http = await listenGateway(gateway, { port: 0 });
    gateway.startHealthChecks();
    followControlPlane({
      url: server.info!.url,
      token: readToken(home)!,
      cacheFile: path.join(home, "gateway", "backends.json"),
      logger: pino({ level: "silent" }),
      signal: stop.signal,
      apply: (list) => gateway.setBackends(list),
      watch: { minBackoffMs: 50, maxBackoffMs: 200, waitSeconds: 5 },
    });
  }, 30_000);

  afterAll(async () => {
    stop.abort();
    await client.post(`/api/services/${MODEL}/undeploy`).catch(() => undefined);
    await waitFor("undeploy", async () => (await client.get<unknown[]>("/api/services")).length === 0, 30_000).catch(
      () => undefined,
    );
    await http?.close();
    await gateway?.close();
    await server.stop();
  }, 60_000);

  it("created, unchanged, dry run, then a changed env rolls both replicas one at a time with 0 failed requests", async () => {
    writeFileSync(file, servicesYaml("v1"));
    const created = cli("deploy", file);
    expect(created.code, created.out).toBe(0);
    expect(created.out).toContain(`created ${MODEL}: 2 replica(s) on serve`);
    const readyIds = async (): Promise<string[]> => {
      const set = await client.get<BackendSet>("/api/services/backends");
      const b = set.services.flatMap((s) => s.backends);
      return b.length === 2 && b.every((x) => x.state === "ready") ? b.map((x) => x.id) : [];
    };
    const first = await waitFor(
      "two replicas ready",
      async () => ((await readyIds()).length === 2 ? readyIds() : null),
      30_000,
    );
    await waitFor("the gateway to route to both", async () => gateway.backends().length === 2, 10_000);

    // The same file again: nothing to do, and it says so.
    const unchanged = cli("deploy", file);
    expect(unchanged.out).toContain(`unchanged ${MODEL}: the running service already matches the file`);
    // A dry run of the changed file prints the roll and changes nothing.
    writeFileSync(file, servicesYaml("v2"));
    const dry = cli("deploy", file, "--dry-run");
    expect(dry.code, dry.out).toBe(0);
    expect(dry.out).toContain(
      `${MODEL}: rolling serve (env (FIXTURE_LABEL) changed): 2 replica(s) replaced one at a time`,
    );
    expect(dry.out).toMatch(/each successor ready before its predecessor drains \(dry run\)\n/);
    expect(dry.out).toContain("dry run: nothing was changed");
    const dryJson = JSON.parse(cli("--json", "deploy", file, "--dry-run").out) as {
      dryRun: boolean;
      services: Array<{ name: string; plan: ServicePlan }>;
    };
    expect(dryJson.services[0]!.plan.roll).toEqual([{ pool: "serve", replicas: 2, fields: ["env (FIXTURE_LABEL)"] }]);
    await sleep(500);
    expect((await readyIds()).sort()).toEqual([...first].sort());

    // Streaming load through the gateway with the official client, from now until the roll is over.
    const openai = new OpenAI({ baseURL: `${http.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const failures: string[] = [];
    const served = new Map<string, number>();
    let requests = 0;
    let loading = true;
    const worker = async (): Promise<void> => {
      while (loading) {
        requests++;
        try {
          const stream = await openai.completions.create({ model: MODEL, prompt: "x", max_tokens: 8, stream: true });
          let text = "";
          for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
          const label = text.replace(/\.+$/, "");
          if (text.length !== label.length + 7) failures.push(`short answer "${text}"`);
          served.set(label, (served.get(label) ?? 0) + 1);
        } catch (err) {
          failures.push(String(err));
        }
      }
    };
    const workers = Array.from({ length: 4 }, () => worker());
    await sleep(1000);

    const rolled = cli("--json", "deploy", file);
    expect(rolled.code, rolled.out).toBe(0);
    const [plan] = (JSON.parse(rolled.out) as DeployedService[]).map((s) => s.plan);
    expect(plan).toEqual({
      name: MODEL,
      action: "update",
      roll: [{ pool: "serve", replicas: 2, fields: ["env (FIXTURE_LABEL)"] }],
      scale: [],
      inPlace: [],
    });
    await waitFor(
      "two new replicas ready and the old ones stopped",
      async () => {
        const ids = await readyIds();
        const d = await client.get<Described>(`/api/services/${MODEL}`);
        return ids.length === 2 &&
          ids.every((id) => !first.includes(id)) &&
          d.replicas.filter((r) => r.state !== "stopped").length === 2
          ? true
          : null;
      },
      60_000,
    );
    await sleep(500);
    loading = false;
    await Promise.all(workers);

    expect(failures, failures.slice(0, 5).join("\n")).toEqual([]);
    expect(served.get("v1") ?? 0).toBeGreaterThan(0);
    expect(served.get("v2") ?? 0).toBeGreaterThan(0);
    expect([...served.keys()].sort()).toEqual(["v1", "v2"]);

    // One at a time: each successor was ready before its predecessor drained, and the second slot's roll began
    // after the first slot's old replica stopped.
    const all = await client.get<EventRecord[]>("/api/events");
    const kinds = all
      .filter((e) => ["replica.rolling", "replica.ready", "replica.draining", "replica.stopped"].includes(e.kind))
      .map((e) => ({ kind: e.kind, id: e.id, message: e.message }));
    const rolls = kinds.filter((k) => k.kind === "replica.rolling");
    expect(rolls.map((r) => r.message)).toEqual([
      expect.stringContaining("its spec changed (env (FIXTURE_LABEL)); starting its successor beside it"),
      expect.stringContaining("its spec changed (env (FIXTURE_LABEL)); starting its successor beside it"),
    ]);
    const stops = kinds.filter((k) => k.kind === "replica.stopped");
    const drains = kinds.filter((k) => k.kind === "replica.draining");
    const readies = kinds.filter((k) => k.kind === "replica.ready");
    expect(stops).toHaveLength(2);
    expect(stops[0]!.id).toBeLessThan(rolls[1]!.id);
    expect(readies).toHaveLength(4);
    expect(readies[2]!.id).toBeLessThan(drains[0]!.id);
    expect(readies[3]!.id).toBeLessThan(drains[1]!.id);
    console.log(
      `redeploy roll: ${requests} streaming requests, ${failures.length} failed; served by v1: ${served.get("v1") ?? 0}, by v2: ${served.get("v2") ?? 0}`,
    );
  }, 120_000);
});
