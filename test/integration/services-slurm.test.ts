import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { readFileSync, readlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/cli/client.js";
import { listNodes } from "../../src/executors/slurm/slurm-cli.js";
import type { BackendSet } from "../../src/gateway/control-plane-source.js";
import { packageRoot } from "../../src/paths.js";
import type { ServiceSummary } from "../../src/supervisor/services.js";
import { job, ServerProcess, tempHome, waitFor } from "./harness.js";
import { noTestbed, slurmConf, slurmEnv, useTestbed } from "./testbed.js";

/**
 * Services on Slurm (issue 14): a replica is a job of the supervisor on a Slurm partition of the multi-host testbed,
 * so it runs in another host's network namespace. It must listen on, and be published at, that host's address (its
 * Slurm NodeAddr), never 127.0.0.1, which only the host itself reaches; a `switchyard gateway --control-plane` in this
 * machine's namespace routes to it; the replica SIGKILLed on its host is an incident, restarted, and serves again;
 * `undeploy` leaves no Slurm job behind.
 */
process.env.SLURM_CONF = slurmConf;

const fixture = path.join(packageRoot, "src", "gateway", "testing", "replica-fixture.mjs");
const bin = path.join(packageRoot, "bin", "switchyard.js");
const MODEL = "slurm-fixture";

const cluster = `
pools:
  - name: ascend
    executor: slurm
    accelerator: { vendor: ascend, model: 910B }
    devicesPerNode: 2
    slurm: { partition: ascend, agentPython: /usr/bin/python3, lostAfterSeconds: 4 }
`;

const servicesYaml = (label: string): string =>
  [
    "services:",
    `  - model: ${MODEL}`,
    "    pools:",
    "      - name: ascend",
    "        replicas:",
    "          count: 1",
    "          engine: vllm",
    `          env: { FIXTURE_LABEL: ${label} }`,
    // {host} is left at its default (127.0.0.1): on a Slurm node that must become the node's own address.
    `          command: ["${process.execPath}", "${fixture}", --port, "{port}", --host, "{host}", --ready-after-ms, "200"]`,
    "          port: 18900",
    "          readyTimeoutS: 30",
    "          drainSeconds: 2",
    "          recovery: { backoffSeconds: 0.2, maxBackoffSeconds: 1, strikesBeforeCordon: 5 }",
  ].join("\n");

interface Described {
  replicas: Array<{ jobId: string; slot: string; state: string; url: string | null; node: string | null }>;
}

const readyBackends = (set: BackendSet): BackendSet["services"][number]["backends"] =>
  set.services.flatMap((s) => s.backends.filter((b) => b.state === "ready"));

/** A streaming completion through the gateway: its status, the backend that answered and the whole stream. */
async function complete(gateway: string): Promise<{ status: number; backend: string | null; body: string }> {
  const res = await fetch(`${gateway}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: MODEL, prompt: "x", max_tokens: 4, stream: true }),
  });
  return { status: res.status, backend: res.headers.get("x-switchyard-backend"), body: await res.text() };
}

/** Slurm job ids in the queue now (any state). */
function queuedSlurmJobs(): string[] {
  const r = spawnSync("squeue", ["-h", "-o", "%i"], { encoding: "utf8", env: { ...process.env, ...slurmEnv } });
  if (r.status !== 0) throw new Error(`squeue failed: ${r.stderr}`);
  return r.stdout
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
}

describe.skipIf(noTestbed)("services on the Slurm testbed", () => {
  const home = tempHome("services-slurm");
  const clusterFile = path.join(home, "cluster.yaml");
  writeFileSync(clusterFile, cluster);
  const server = new ServerProcess(home, clusterFile);
  let client: ApiClient;
  let gateway: ChildProcess | null = null;
  let gatewayOut = "";
  let down: () => void = () => {};

  beforeAll(async () => {
    down = useTestbed();
    client = await server.start();
  }, 60_000);

  afterAll(async () => {
    gateway?.kill("SIGTERM");
    await client?.post(`/api/services/${MODEL}/undeploy`).catch(() => undefined);
    await waitFor("undeploy", async () => (await client.get<unknown[]>("/api/services")).length === 0, 20_000).catch(
      () => undefined,
    );
    await server.stop();
    down();
  }, 60_000);

  it("a replica on a Slurm node is reached at the node's address through a gateway, restarted when killed on its host, and undeploy leaves no Slurm job", async () => {
    const file = path.join(home, "services.yaml");
    writeFileSync(file, servicesYaml("v1"));
    await client.post("/api/services", { yaml: servicesYaml("v1"), file });

    const first = await waitFor(
      "the replica ready",
      async () => readyBackends(await client.get<BackendSet>("/api/services/backends"))[0],
      30_000,
    );
    // Its URL is its node's address on the cluster network (Slurm's NodeAddr), never loopback.
    const addresses = new Map(
      (await listNodes({ env: slurmEnv, partition: "ascend" })).map((n) => [n.name, n.address]),
    );
    expect(first.node).toBeDefined();
    const address = addresses.get(first.node!);
    expect(address).toMatch(/^10\.77\.0\.\d+$/);
    expect(first.url).toBe(`http://${address}:${new URL(first.url).port}`);
    // Reachable from this machine's namespace, where the gateway runs.
    expect((await fetch(`${first.url}/health`)).status).toBe(200);

    // A gateway process that follows the server routes a request to it.
    gateway = spawn(
      process.execPath,
      [
        bin,
        "--home",
        home,
        "--json",
        "gateway",
        "--control-plane",
        server.info!.url,
        "--port",
        "0",
        "--log-level",
        "info",
      ],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, SWITCHYARD_HOME: home } },
    );
    gateway.stdout!.on("data", (c: Buffer) => (gatewayOut += c.toString("utf8")));
    gateway.stderr!.on("data", (c: Buffer) => (gatewayOut += c.toString("utf8")));
    const gatewayUrl = await waitFor(
      `the gateway to listen:\n${gatewayOut}`,
      async () => /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(gatewayOut)?.[1],
      15_000,
    );
    const answered = await waitFor(
      "an answer through the gateway",
      async () => {
        const r = await complete(gatewayUrl);
        return r.status === 200 ? r : null;
      },
      15_000,
    );
    expect(answered.backend).toBe(first.id);
    expect(answered.body).toContain("data: [DONE]");

    // A redeploy with another env rolls the replica. Its successor lands beside it (the first node with a free device
    // of 2), so it must take another port there: on the same one it could not listen, and its readiness probe would
    // be answered by its predecessor.
    await client.post("/api/services", { yaml: servicesYaml("v2"), file });
    const successor = await waitFor(
      "the successor ready and its predecessor stopped",
      async () => {
        const b = readyBackends(await client.get<BackendSet>("/api/services/backends"));
        const d = await client.get<Described>(`/api/services/${MODEL}`);
        return b.length === 1 && b[0]!.id !== first.id && d.replicas.filter((r) => r.state !== "stopped").length === 1
          ? b[0]!
          : null;
      },
      40_000,
    );
    expect(successor.url).not.toBe(first.url);
    const jobId = successor.id.split("/").pop()!;
    const successorJob = await job(client, jobId);
    expect(successorJob.restarts, JSON.stringify(successorJob.incidents)).toBe(0);
    expect(successor.url).toBe(`http://${addresses.get(successor.node!)}:${new URL(successor.url).port}`);
    const rolled = await waitFor(
      "an answer from the new spec",
      async () => {
        const r = await complete(gatewayUrl);
        return r.status === 200 && r.body.includes('"text":"v2"') ? r : null;
      },
      15_000,
    );
    expect(rolled.backend).toBe(successor.id);

    // The replica's own process is SIGKILLed on its host (it lives in that host's network namespace).
    const attempts = successorJob.attempts;
    const agentFile = path.join(home, "jobs", jobId, `attempt-${attempts[attempts.length - 1]!.n}`, "rank-0.agent");
    const agent = JSON.parse(readFileSync(agentFile, "utf8")) as { node: string; pid: number };
    expect(agent.node).toBe(successor.node);
    expect(readlinkSync(`/proc/${agent.pid}/ns/net`)).not.toBe(readlinkSync("/proc/self/ns/net"));
    process.kill(agent.pid, "SIGKILL");

    const back = await waitFor(
      "the replica restarted and ready again",
      async () => {
        const b = readyBackends(await client.get<BackendSet>("/api/services/backends"))[0];
        const j = await job(client, jobId);
        return b && j.attempts.length >= 2 && j.restarts >= 1 ? { b, j } : null;
      },
      30_000,
    );
    expect(back.j.incidents[0]).toMatchObject({ cause: "killed", culpritRank: 0, culpritNode: successor.node });
    expect(back.b.url).toBe(`http://${addresses.get(back.b.node!)}:${new URL(back.b.url).port}`);
    const again = await waitFor(
      "an answer from the restarted replica",
      async () => {
        const r = await complete(gatewayUrl);
        return r.status === 200 && r.body.includes("data: [DONE]") ? r : null;
      },
      15_000,
    );
    expect(again.backend).toBe(back.b.id);
    expect(again.body).toContain('"text":"v2"');

    // Undeploy: the replica drains and stops, and its Slurm allocation is released (as the rolled one's was).
    const described = await client.get<Described>(`/api/services/${MODEL}`);
    const allocationOf = (jobId: string): string =>
      (
        JSON.parse(readFileSync(path.join(home, "jobs", jobId, "slurm-allocation.json"), "utf8")) as {
          slurmJobId: string;
        }
      ).slurmJobId;
    const allocations = described.replicas.map((r) => allocationOf(r.jobId));
    expect(allocations).toHaveLength(2);
    expect(queuedSlurmJobs()).toContain(allocationOf(jobId));
    const rolledAway = allocationOf(first.id.split("/").pop()!);
    await waitFor(
      "the rolled replica's allocation released",
      async () => !queuedSlurmJobs().includes(rolledAway),
      10_000,
    );
    await client.post(`/api/services/${MODEL}/undeploy`);
    await waitFor(
      "the service gone",
      async () => (await client.get<ServiceSummary[]>("/api/services")).length === 0,
      20_000,
    );
    await waitFor(
      "no Slurm job of the service left",
      async () => !queuedSlurmJobs().some((id) => allocations.includes(id)),
      10_000,
    );
    expect(readyBackends(await client.get<BackendSet>("/api/services/backends"))).toEqual([]);
  }, 90_000);
});
