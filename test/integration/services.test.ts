import { spawn, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/cli/client.js";
import type { BackendSet } from "../../src/gateway/control-plane-source.js";
import { packageRoot } from "../../src/paths.js";
import type { ServiceSummary } from "../../src/supervisor/services.js";
import { chromiumPath, noChromium } from "../requirements.js";
import { events, job, ServerProcess, sleep, tempHome, waitFor, writeCluster } from "./harness.js";

/**
 * Services in the server (issue 14): replicas are jobs of the one supervisor, on the shared inventory, adopted by a
 * restarted server, published as the live backend set. The model server is a stand-in engine (plain Node).
 */
const fixture = path.join(packageRoot, "src", "gateway", "testing", "replica-fixture.mjs");
const bin = path.join(packageRoot, "bin", "switchyard.js");

interface Described {
  service: ServiceSummary;
  replicas: Array<{
    jobId: string;
    slot: string;
    state: string;
    url: string | null;
    node: string | null;
    restarts: number;
  }>;
}

function servicesYaml(count: number): string {
  return [
    "services:",
    "  - model: fixture-model",
    "    pools:",
    "      - name: unstable",
    "        replicas:",
    `          count: ${count}`,
    "          engine: vllm",
    `          command: ["${process.execPath}", "${fixture}", --port, "{port}", --ready-after-ms, "300"]`,
    "          port: 18300",
    "          readyTimeoutS: 30",
    "          drainSeconds: 3",
    "          recovery: { backoffSeconds: 0.2, maxBackoffSeconds: 1, strikesBeforeCordon: 5 }",
  ].join("\n");
}

const ready = (set: BackendSet): BackendSet["services"][number]["backends"] =>
  set.services.flatMap((s) => s.backends.filter((b) => b.state === "ready"));

describe("services in the server", () => {
  const home = tempHome("services");
  const server = new ServerProcess(home, writeCluster(home));
  let client: ApiClient;
  const file = path.join(home, "services.yaml");

  beforeAll(async () => {
    client = await server.start();
  }, 30_000);
  afterAll(async () => {
    await client.post(`/api/services/fixture-model/undeploy`).catch(() => undefined);
    await waitFor(
      "undeploy",
      async () => (await client.get<ServiceSummary[]>("/api/services")).length === 0,
      30_000,
    ).catch(() => undefined);
    await server.stop();
  }, 60_000);

  it("deploys replicas as supervised jobs, publishes them, restarts a killed one and is adopted by a restarted server", async () => {
    writeFileSync(file, servicesYaml(2));
    const deployed = await client.post<ServiceSummary[]>("/api/services", { yaml: servicesYaml(2), file });
    expect(deployed.map((s) => s.name)).toEqual(["fixture-model"]);
    const set = await waitFor(
      "two ready backends",
      async () => {
        const s = await client.get<BackendSet>("/api/services/backends");
        return ready(s).length === 2 ? s : null;
      },
      60_000,
    );
    // Every URL is a live engine.
    for (const b of ready(set)) expect((await fetch(`${b.url}/health`)).status).toBe(200);
    // The long poll answers at once for an old version, and waits for a change otherwise.
    const t0 = Date.now();
    const same = await client.get<BackendSet>(`/api/services/backends?since=${set.version}&epoch=${set.epoch}&wait=1`);
    expect(same.version).toBe(set.version);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);

    // Replicas are jobs of the supervisor (hidden from the job list unless asked).
    const described = await client.get<Described>("/api/services/fixture-model");
    expect(described.replicas).toHaveLength(2);
    const jobsList = await client.get<Array<{ id: string }>>("/api/jobs");
    expect(jobsList.some((j) => described.replicas.some((r) => r.jobId === j.id))).toBe(false);

    // A replica killed: an incident like a training rank's (killed, culprit node), out of the set, restarted, back.
    const victim = described.replicas[0]!;
    const { ranks } = await client.get<{ ranks: Array<{ pid: number }> }>(`/api/jobs/${victim.jobId}/ranks`);
    process.kill(-ranks[0]!.pid, "SIGKILL");
    await waitFor(
      "the killed replica out of the set",
      async () =>
        !ready(await client.get<BackendSet>("/api/services/backends")).some((b) => b.id.endsWith(victim.jobId)),
      20_000,
    );
    const back = await waitFor(
      "the killed replica back",
      async () => {
        const s = await client.get<BackendSet>("/api/services/backends");
        return ready(s).length === 2 && ready(s).some((b) => b.id.endsWith(victim.jobId)) ? s : null;
      },
      30_000,
    );
    const j = await job(client, victim.jobId);
    expect(j.incidents.map((i) => i.cause)).toContain("killed");
    expect(j.incidents[0]!.culpritNode).toBe(victim.node);
    expect(j.restarts).toBeGreaterThanOrEqual(1);

    // The control plane dies and comes back: the replicas kept running and are adopted with the same URLs.
    server.kill9();
    await sleep(300);
    for (const b of ready(back)) expect((await fetch(`${b.url}/health`)).status).toBe(200);
    client = await server.start();
    // Its very first answer already has them (never an empty set of a new epoch that would empty the gateways).
    const firstAnswer = await client.get<BackendSet>("/api/services/backends");
    expect(
      ready(firstAnswer)
        .map((b) => b.url)
        .sort(),
    ).toEqual(
      ready(back)
        .map((b) => b.url)
        .sort(),
    );
    const adopted = await waitFor(
      "the adopted set",
      async () => {
        const s = await client.get<BackendSet>("/api/services/backends");
        return ready(s).length === 2 ? s : null;
      },
      20_000,
    );
    expect(adopted.epoch).not.toBe(back.epoch);
    expect(
      ready(adopted)
        .map((b) => `${b.id} ${b.url}`)
        .sort(),
    ).toEqual(
      ready(back)
        .map((b) => `${b.id} ${b.url}`)
        .sort(),
    );
    const adoptEvents = await events(client, victim.jobId);
    expect(adoptEvents.some((e) => e.kind === "supervisor.adopted")).toBe(true);
  }, 180_000);

  it.skipIf(noChromium)(
    "the dashboard shows the service, its replicas, which pool does what and the serving ledger",
    async () => {
      const browser = await chromium.launch({
        executablePath: chromiumPath,
        args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
      });
      try {
        const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
        const errors: string[] = [];
        page.on("pageerror", (e) => errors.push(e.message));
        await page.goto(server.dashboardUrl());
        const row = page.locator('#services tr[data-service="fixture-model"]');
        await row.waitFor();
        await expect
          .poll(async () => row.textContent(), { timeout: 10_000 })
          .toMatch(/fixture-model\s*ready\s*2\/2\s*unstable 2\/2/);
        await expect.poll(async () => page.locator("#replicas tbody tr").count(), { timeout: 10_000 }).toBe(2);
        const pool = page.locator('#pools tr[data-pool="unstable"]');
        await expect
          .poll(async () => pool.textContent(), { timeout: 10_000 })
          .toMatch(/fixture-model \(unstable-\d, unstable-\d\)/);
        expect(await page.locator('#pools tr[data-pool="reliable"]').textContent()).toMatch(/reliable \(nvidia\)1--/);
        const ledger = page.locator('#serving-ledger [data-pool="unstable"]');
        await expect.poll(async () => ledger.textContent(), { timeout: 10_000 }).toMatch(/serving \d+\.\d+s/);
        // A replica row opens its job's page (a replica is a job of the supervisor).
        await page.locator("#replicas tbody tr").first().click();
        await page.locator("#job-title", { hasText: "svc-fixture-model-unstable-" }).waitFor();
        expect(errors).toEqual([]);
      } finally {
        await browser.close();
      }
    },
    60_000,
  );

  it("services logs: every replica's log by slot, one with --replica and --tail, JSON lines, and --follow across a restart", async () => {
    const cli = (...args: string[]) =>
      spawnSync(process.execPath, [bin, "--home", home, "services", "logs", "fixture-model", ...args], {
        encoding: "utf8",
        env: { ...process.env, SWITCHYARD_HOME: home },
        timeout: 20_000,
      });
    const all = cli();
    expect(all.status, all.stderr).toBe(0);
    for (const slot of ["unstable-0", "unstable-1"]) {
      expect(all.stdout).toMatch(new RegExp(`^\\[${slot}\\] fixture replica listening on 127\\.0\\.0\\.1:\\d+$`, "m"));
    }
    const one = cli("--replica", "unstable-1", "--tail", "1");
    expect(one.stdout).toMatch(/^fixture replica listening on 127\.0\.0\.1:\d+\n$/);
    const json = cli("--replica", "1", "--json");
    const rec = JSON.parse(json.stdout.trim().split("\n")[0]!) as { replica: string; job: string; line: string };
    expect(rec).toMatchObject({ replica: "unstable-1", line: expect.stringMatching(/^fixture replica listening/) });
    const bad = cli("--replica", "nope");
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain(
      'service fixture-model has no replica "nope" (fix: --replica one of unstable-0, unstable-1)',
    );

    // --follow: a restart of a replica shows its next attempt's log.
    const follow = spawn(
      process.execPath,
      [bin, "--home", home, "services", "logs", "fixture-model", "-r", "unstable-1", "-f"],
      {
        env: { ...process.env, SWITCHYARD_HOME: home },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    follow.stdout.on("data", (c: Buffer) => (out += c.toString("utf8")));
    try {
      await waitFor("the first lines", async () => out.includes("fixture replica listening"), 10_000);
      const d = await client.get<Described>("/api/services/fixture-model");
      const target = d.replicas.find((r) => r.slot === "unstable-1" && r.state === "ready")!;
      const { ranks } = await client.get<{ ranks: Array<{ pid: number }> }>(`/api/jobs/${target.jobId}/ranks`);
      process.kill(-ranks[0]!.pid, "SIGKILL");
      await waitFor(
        "the next attempt's log",
        async () => /--- replica unstable-1: attempt \d+ ---\nfixture replica listening/.test(out),
        30_000,
      );
    } finally {
      follow.kill("SIGTERM");
    }
    await waitFor(
      "both replicas ready again",
      async () => ready(await client.get<BackendSet>("/api/services/backends")).length === 2,
      30_000,
    );
  }, 90_000);

  it("keeps a node that serves replicas from a training gang, scales down by draining, undeploys", async () => {
    // 2 replicas hold one device on each node of `unstable` (2 devices per node): a 2-node gang must wait.
    const training = [
      "name: gang",
      "pools: [unstable]",
      "nodes: 2",
      "command: [/bin/sleep, '60']",
      "recovery: { maxRestarts: 0 }",
    ].join("\n");
    const gangFile = path.join(home, "gang.yaml");
    writeFileSync(gangFile, training);
    const gang = await client.post<{ id: string }>("/api/jobs", { yaml: training, file: gangFile });
    await sleep(1500);
    const waiting = await client.get<{ state: string; waitingFor: string | null }>(`/api/jobs/${gang.id}`);
    expect(waiting.state).toBe("PENDING");

    const scaled = await client.post<ServiceSummary>("/api/services/fixture-model/scale", { replicas: 1 });
    expect(scaled.pools[0]!.desired).toBe(1);
    const drained = await waitFor(
      "one replica left",
      async () => {
        const d = await client.get<Described>("/api/services/fixture-model");
        return d.replicas.filter((r) => r.state !== "stopped").length === 1 ? d : null;
      },
      30_000,
    );
    const stopped = drained.replicas.find((r) => r.state === "stopped")!;
    // The replica's state can read "stopped" a moment before its event is written: wait for the events.
    const kinds = await waitFor(
      "the drain's events",
      async () => {
        const k = (await events(client, stopped.jobId)).map((e) => e.kind);
        return k.includes("replica.stopped") ? k : null;
      },
      10_000,
    );
    expect(kinds).toEqual(expect.arrayContaining(["replica.draining", "replica.stopped"]));
    // Still one replica: one node is free of it, the other has a free device beside it; the gang of two still waits.
    expect(new Set(drained.replicas.map((r) => r.node).filter((n) => n !== null)).size).toBe(1);
    await sleep(1500);
    expect((await client.get<{ state: string }>(`/api/jobs/${gang.id}`)).state).toBe("PENDING");

    await client.post("/api/services/fixture-model/undeploy");
    await waitFor(
      "the service gone",
      async () => (await client.get<ServiceSummary[]>("/api/services")).length === 0,
      30_000,
    );
    // Now the gang gets both nodes.
    await waitFor(
      "the gang running",
      async () => ["STARTING", "RUNNING"].includes((await client.get<{ state: string }>(`/api/jobs/${gang.id}`)).state),
      20_000,
    );
    await client.post(`/api/jobs/${gang.id}/cancel`);
  }, 180_000);

  it("refuses a services file naming a pool the cluster does not have, with the fix", async () => {
    const bad = servicesYaml(1).replace("name: unstable", "name: nowhere");
    const res = await fetch(`${server.info!.url}/api/services`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: `Bearer ${(await import("../../src/server/config.js")).readToken(home)}`,
      },
      body: JSON.stringify({ yaml: bad, file }),
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: string };
    expect(body.error).toMatch(/no pool nowhere.*fix: use one of unstable, reliable/s);
  });
});
