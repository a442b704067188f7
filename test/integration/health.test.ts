import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { installFakeHost, removeFakeHost, type FakeScenario } from "../fixtures/devices/fake-hosts.js";
import type { ApiClient } from "../../src/cli/client.js";
import { gradeProbeRun, parseProbeReport } from "../../src/core/health.js";
import type { PoolSpec } from "../../src/core/spec.js";
import { LocalExecutor } from "../../src/executors/local/local.js";
import { listNodes, nodeUnusable } from "../../src/executors/slurm/slurm-cli.js";
import { healthProbePath } from "../../src/supervisor/health.js";
import type { IncidentRecord, NodeHealthRecord } from "../../src/store/port.js";
import { packageRoot } from "../../src/paths.js";
import { events, job, ServerProcess, submit, tempHome, waitFor, waitForEnd } from "./harness.js";
import { noTestbed, slurmConf, slurmEnv, useTestbed } from "./testbed.js";
import { chromium } from "playwright-core";
import { chromiumPath, noChromium } from "../requirements.js";

/**
 * Node health probes end to end. Local executor: the CPU-pool probe (free disk of the checkpoint folder and the home,
 * free memory) on virtual nodes. The Slurm testbed: fake nvidia-smi / dmesg / npu-smi / hccn_tool replaying fixtures
 * on chosen hosts (SWITCHYARD_HOST_TOOLS, put first on PATH by the probe on the host itself): pre-flight keeps each
 * faulty host out of the attempt with the finding in the event and the Slurm drain reason, a healthy fake host stays
 * in, a periodic probe finds a link going down on an idle host, and a post-incident probe puts the device's word in
 * the incident. The testbed is shared: every host this file drains is resumed whatever happens.
 */

describe("the CPU-pool probe on the local executor", () => {
  const pool: PoolSpec = {
    name: "cpu",
    executor: "local",
    accelerator: { vendor: "cpu" },
    nodes: 2,
    devicesPerNode: 1,
  } as PoolSpec;

  it("reports free disk of the checkpoint folder and the home, and free memory, per virtual node", async () => {
    const home = mkdtempSync(path.join(os.tmpdir(), "hlth-cpu-"));
    const ckpt = path.join(home, "ckpt", "not-yet-made");
    const runs = await new LocalExecutor().runOnNodes(
      pool,
      ["cpu-0", "cpu-1"],
      ["/usr/bin/python3", healthProbePath, "--home", home, "--checkpoint-dir", ckpt],
      { timeoutMs: 30_000, env: { PATH: "/usr/bin:/bin" } },
    );
    expect(runs.map((r) => r.code)).toEqual([0, 0]);
    const df = spawnSync("df", ["-B1", "--output=avail", home], { encoding: "utf8" });
    const avail = Number(df.stdout.trim().split("\n")[1]);
    for (const run of runs) {
      const v = gradeProbeRun(run, { minFreeDiskMiB: 1, minFreeMemoryMiB: 1 });
      expect(v.status, JSON.stringify(v.findings)).toBe("ok");
      expect(v.findings.map((f) => [f.grade, f.cause, f.source])).toEqual([
        ["info", "host", "disk"],
        ["info", "host", "disk"],
        ["info", "host", "memory"],
      ]);
      expect(v.findings[0]!.message).toMatch(new RegExp(`^checkpoint ${ckpt}: \\d+ (GiB|MiB) free of \\d+ (GiB|MiB)$`));
      const report = parseProbeReport(run.stdout);
      // Every line short enough that srun --label never cuts it.
      expect(Math.max(...run.stdout.split("\n").map((l) => l.length))).toBeLessThanOrEqual(76);
      expect(report.node).toBe(run.node);
      // What df says about the same filesystem, within what other writers changed meanwhile (64 MiB).
      expect(Math.abs(report.disk[1]!.free! - avail)).toBeLessThan(64 << 20);
      // The same host with a floor above what it has: degraded (a strike), never fatal.
      const low = gradeProbeRun(run, { minFreeDiskMiB: 1e9, minFreeMemoryMiB: 1e9 });
      expect(low.status).toBe("degraded");
      expect(low.findings.filter((f) => f.grade === "degraded")).toHaveLength(3);
    }
  }, 60_000);
});

describe.skipIf(noChromium)("the dashboard's nodes view", () => {
  it("shows each node's health and age, and the finding of a host a periodic probe cordoned", async () => {
    const home = tempHome("hlth-web");
    const tools = mkdtempSync(path.join(os.tmpdir(), "hlth-web-tools-"));
    installFakeHost(tools, "gpu-0", "nvidia-healthy");
    installFakeHost(tools, "gpu-1", "nvidia-ecc");
    const file = path.join(home, "cluster.yaml");
    writeFileSync(
      file,
      [
        "pools:",
        "  - name: gpu",
        "    accelerator: { vendor: nvidia, model: H100 }",
        "    nodes: 2",
        "    health: { intervalSeconds: 60, minFreeDiskMiB: 1, minFreeMemoryMiB: 1 }",
      ].join("\n"),
    );
    const before = process.env.SWITCHYARD_HOST_TOOLS;
    process.env.SWITCHYARD_HOST_TOOLS = tools;
    const server = new ServerProcess(home, file);
    const client = await server.start();
    if (before === undefined) delete process.env.SWITCHYARD_HOST_TOOLS;
    else process.env.SWITCHYARD_HOST_TOOLS = before;
    const browser = await chromium.launch({ executablePath: chromiumPath, args: ["--no-sandbox", "--disable-gpu"] });
    try {
      await waitFor(
        "both probed",
        async () => {
          const nodes = await client.get<Array<{ health: { status: string } | null }>>("/api/nodes");
          return nodes.every((n) => n.health) ? nodes : null;
        },
        30_000,
      );
      const page = await browser.newPage();
      await page.goto(server.dashboardUrl());
      const rows = page.locator("#nodes tbody tr");
      await rows.nth(1).waitFor();
      const cells = async (i: number) => rows.nth(i).locator("td").allTextContents();
      const [healthy, faulty] = [await cells(0), await cells(1)];
      expect(healthy.slice(0, 3)).toEqual(["gpu-0", "gpu", "ready"]);
      expect(healthy[3]).toMatch(/^ok \(\d+s ago\)$/);
      expect(faulty.slice(0, 3)).toEqual(["gpu-1", "gpu", "cordoned"]);
      expect(faulty[3]).toMatch(/^fatal \(\d+s ago\)$/);
      expect(faulty[5]).toBe("GPU 1 (GPU-9a1d7e22-31c4-4b8e-a6d2-5b7f0c9e1a23): 2 uncorrected ECC error(s) since boot");
      expect(await rows.nth(1).locator("td").nth(3).getAttribute("title")).toMatch(/^periodic probe\nfatal device/);
    } finally {
      await browser.close();
      await server.stop();
    }
  }, 60_000);
});

const cluster = `
strikeWindowSeconds: 3600
pools:
  - name: ascend
    executor: slurm
    accelerator: { vendor: ascend, model: 910B }
    devicesPerNode: 1
    slurm: { partition: ascend, agentPython: /usr/bin/python3 }
    health: { preflight: true, afterIncident: true, intervalSeconds: 0, timeoutSeconds: 30 }
  - name: nvidia
    executor: slurm
    accelerator: { vendor: nvidia, model: H20 }
    devicesPerNode: 1
    slurm: { partition: nvidia, agentPython: /usr/bin/python3 }
    health: { preflight: true, afterIncident: true, intervalSeconds: 0, timeoutSeconds: 30 }
`;

const quickJob = (name: string, pool: string, seconds = 0) =>
  [
    `name: ${name}`,
    `pools: [${pool}]`,
    "nodes: 1",
    "procsPerNode: 1",
    `command: ["/bin/sh", "-c", "sleep ${seconds}"]`,
    "recovery: { backoffSeconds: 1 }",
  ].join("\n");

/** Slurm's word on a node: state and reason. */
async function slurmNode(name: string): Promise<{ state: string; reason: string | null }> {
  const n = (await listNodes({ env: slurmEnv })).find((x) => x.name === name);
  return { state: n?.state.join("+") ?? "?", reason: n?.reason ?? null };
}

function cli(home: string, ...args: string[]): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [path.join(packageRoot, "bin", "switchyard.js"), "--home", home, ...args], {
    encoding: "utf8",
    env: { ...process.env, SWITCHYARD_HOME: home },
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe.skipIf(noTestbed)("node health on the Slurm testbed", () => {
  const home = tempHome("hlth");
  const tools = mkdtempSync(path.join(os.tmpdir(), "hlth-hosts-"));
  const clusterFile = path.join(home, "cluster.yaml");
  writeFileSync(clusterFile, cluster);
  const before = process.env.SWITCHYARD_HOST_TOOLS;
  process.env.SWITCHYARD_HOST_TOOLS = tools;
  process.env.SLURM_CONF = slurmConf;
  const server = new ServerProcess(home, clusterFile);
  let client: ApiClient;
  let down: () => void = () => {};
  const drained = new Set<string>();

  const uncordon = async (node: string) => {
    await client.post(`/api/nodes/${node}/uncordon`, { reason: "test over" });
    drained.delete(node);
    // Back in service before the next case: right after RESUME Slurm shows the host "idle*" (not responding) until its
    // slurmd answers, and the server's inventory takes it for unusable ("workload manager: idle+not_responding").
    await waitFor(
      `${node} back in service`,
      async () => {
        const n = (await listNodes({ env: slurmEnv })).find((x) => x.name === node);
        if (!n || nodeUnusable(n)) return false;
        const view = await client.get<Array<{ name: string; cordoned: boolean }>>("/api/nodes");
        return view.find((x) => x.name === node)?.cordoned === false;
      },
      60_000,
    );
  };

  beforeAll(async () => {
    down = useTestbed();
    for (const n of ["n1", "n2"]) installFakeHost(tools, n, "nvidia-healthy");
    for (const n of ["a1", "a2", "a3", "a4"]) installFakeHost(tools, n, "ascend-healthy");
    client = await server.start();
  }, 120_000);

  afterAll(async () => {
    for (const n of [...drained]) await uncordon(n).catch(() => undefined);
    await server.stop();
    // Whatever happened, no host stays drained by this file.
    for (const n of ["a1", "a2", "a3", "a4", "n1", "n2"]) {
      const st = await slurmNode(n).catch(() => null);
      if (st?.reason?.startsWith("switchyard")) {
        spawnSync("scontrol", ["update", `NodeName=${n}`, "State=RESUME"], { env: { ...process.env, ...slurmEnv } });
      }
    }
    if (before === undefined) delete process.env.SWITCHYARD_HOST_TOOLS;
    else process.env.SWITCHYARD_HOST_TOOLS = before;
    down();
  }, 120_000);

  /** The host placement tries first on this pool: the first one Slurm lists that is usable and not cordoned. */
  const firstHost = async (pool: string): Promise<string> => {
    const nodes = await client.get<Array<{ name: string; pool: string; cordoned: boolean }>>("/api/nodes");
    const first = nodes.find((n) => n.pool === pool && !n.cordoned);
    if (!first) throw new Error(`no usable host in ${pool}: ${JSON.stringify(nodes)}`);
    return first.name;
  };

  const cases: Array<{ scenario: FakeScenario; pool: string; finding: RegExp; cause: string }> = [
    {
      scenario: "nvidia-ecc",
      pool: "nvidia",
      finding: /GPU 1 \(GPU-9a1d.*\): 2 uncorrected ECC error\(s\) since boot/,
      cause: "device",
    },
    { scenario: "nvidia-xid79", pool: "nvidia", finding: /Xid 79: GPU fallen off the bus/, cause: "device" },
    { scenario: "nvidia-xid48", pool: "nvidia", finding: /Xid 48: double-bit ECC error/, cause: "device" },
    { scenario: "ascend-alarm", pool: "ascend", finding: /NPU 1 \(0000:01:00\.0\): health Alarm/, cause: "device" },
    { scenario: "ascend-link-down", pool: "ascend", finding: /NPU 1 port: link DOWN/, cause: "network" },
  ];

  for (const c of cases) {
    it(`pre-flight: ${c.scenario} keeps its host out of the attempt, with the finding in the event and the drain reason`, async () => {
      const bad = await firstHost(c.pool);
      installFakeHost(tools, bad, c.scenario);
      try {
        const id = await submit(client, home, c.scenario, quickJob(c.scenario, c.pool));
        drained.add(bad);
        const view = await waitForEnd(client, id, 120_000);
        expect(view.state).toBe("SUCCEEDED");
        expect(view.attempts).toHaveLength(1);
        const ran = view.attempts[0]!.nodes;
        expect(ran).not.toContain(bad);
        const evs = await events(client, id);
        const excluded = evs.find((e) => e.kind === "preflight.excluded");
        expect(excluded?.message).toMatch(new RegExp(`^pre-flight left out ${bad} \\(${c.cause}: `));
        expect(excluded?.message).toMatch(c.finding);
        const launched = evs.find((e) => e.kind === "attempt.launched")!;
        expect(launched.message).toContain(`pre-flight left out ${bad} (${c.cause}: `);
        expect(launched.message).toMatch(/pre-flight ok on 1 of 1 host\(s\)$/);
        // The healthy fake host it ran on stays in, probed ok.
        const health = await client.get<{ health: NodeHealthRecord | null }>(`/api/nodes/${ran[0]}`);
        expect(health.health).toMatchObject({ status: "ok", trigger: "preflight" });
        expect(health.health!.excerpt).toContain("$ ");
        // The cordon carries the finding as reason, and so does Slurm's drain.
        const node = await client.get<{ cordoned: boolean; reason: string; health: NodeHealthRecord }>(
          `/api/nodes/${bad}`,
        );
        expect(node.cordoned).toBe(true);
        expect(node.reason).toMatch(new RegExp(`^health probe: ${c.cause}: `));
        expect(node.reason).toMatch(c.finding);
        expect(node.health.status).toBe("fatal");
        const slurm = await waitFor(
          "the drain in Slurm",
          async () => {
            const s = await slurmNode(bad);
            return s.state.includes("drain") ? s : null;
          },
          20_000,
        );
        expect(slurm.reason).toMatch(/^switchyard: health probe: /);
      } finally {
        installFakeHost(tools, bad, c.pool === "nvidia" ? "nvidia-healthy" : "ascend-healthy");
        await uncordon(bad);
      }
    }, 180_000);
  }

  it("a healthy fake host stays in; `switchyard nodes` shows HEALTH from the probes and `nodes describe` the findings", async () => {
    const good = await firstHost("ascend");
    const id = await submit(client, home, "healthy", quickJob("healthy", "ascend"));
    const view = await waitForEnd(client, id, 120_000);
    expect(view.state).toBe("SUCCEEDED");
    expect(view.attempts[0]!.nodes).toEqual([good]);
    expect((await events(client, id)).some((e) => e.kind === "preflight.excluded")).toBe(false);
    const nodes = cli(home, "nodes");
    expect(nodes.status, nodes.out).toBe(0);
    expect(nodes.out.split("\n")[0]).toMatch(/^NODE\s+POOL\s+DEVICES\s+STATE\s+HEALTH\s+STRIKES/);
    expect(nodes.out).toMatch(new RegExp(`^${good}\\s+ascend\\s+1\\s+ready\\s+ok \\(\\d+s ago\\)`, "m"));
    const described = cli(home, "nodes", "describe", good);
    expect(described.status, described.out).toBe(0);
    expect(described.out).toMatch(/^health {3}ok, probed \d+s ago at \d\d:\d\d:\d\d \(preflight probe\)$/m);
    expect(described.out).toMatch(/^info\s+device\s+npu-smi\s+2 NPU chip\(s\) healthy$/m);
    expect(described.out).toContain("raw output (excerpt):");
    expect(described.out).toContain("| 0     910B3               | OK");
    const unknown = cli(home, "nodes", "describe", "nope");
    expect(unknown.status).toBe(2);
    expect(unknown.out).toMatch(/no node named "nope" \(fix: use one of: .*a1/);
  }, 180_000);

  it("post-incident: the culprit's host is probed, the incident says what the device said, the host is drained with it", async () => {
    const host = await firstHost("nvidia");
    const id = await submit(client, home, "incident", quickJob("incident", "nvidia", 120));
    await waitFor(
      "the rank runs",
      async () => {
        const v = await client.get<{ attempts: Array<{ state: string }> }>(`/api/jobs/${id}`);
        return v.attempts[0]?.state === "RUNNING" ? v : null;
      },
      60_000,
    );
    expect((await job(client, id)).attempts[0]!.nodes).toEqual([host]);
    // The GPU falls off the bus under the running rank, which is killed by it.
    installFakeHost(tools, host, "nvidia-xid79");
    drained.add(host);
    try {
      // The rank's agent reports it running within a second or two of the step's start.
      await waitFor(
        "the rank killed",
        () => client.post(`/api/jobs/${id}/chaos`, { action: "kill-rank", rank: 0 }).catch(() => null),
        30_000,
      );
      const [incident] = await waitFor(
        "the incident",
        async () => {
          const v = await client.get<{ incidents: IncidentRecord[] }>(`/api/jobs/${id}`);
          return v.incidents.length > 0 ? v.incidents : null;
        },
        60_000,
      );
      expect(incident!.culpritNode).toBe(host);
      expect(incident!.summary).toMatch(
        new RegExp(`; ${host}'s probe: device: GPU 1 .*Xid 79: GPU fallen off the bus$`),
      );
      expect(incident!.evidence).toMatchObject({ hard: true, health: { status: "fatal" } });
      const node = await client.get<{ cordoned: boolean; reason: string }>(`/api/nodes/${host}`);
      expect(node).toMatchObject({ cordoned: true });
      expect(node.reason).toMatch(/^health probe: device: .*Xid 79/);
      const evs = await events(client, id);
      expect(evs.find((e) => e.kind === "node.health" && e.message.includes("incident probe"))?.message).toMatch(
        new RegExp(`^${host} fatal \\(incident probe\\): device: .*Xid 79`),
      );
      await client.post(`/api/jobs/${id}/cancel`, {});
    } finally {
      installFakeHost(tools, host, "nvidia-healthy");
      await uncordon(host);
    }
  }, 180_000);

  it("periodic: an idle host's link going down is found by the next probe, drained, and shown by `switchyard nodes`", async () => {
    // A server of its own whose ascend pool is probed every 3 s, nothing else running.
    const home2 = tempHome("hlth-periodic");
    const file2 = path.join(home2, "cluster.yaml");
    writeFileSync(
      file2,
      cluster.replace(
        "health: { preflight: true, afterIncident: true, intervalSeconds: 0, timeoutSeconds: 30 }",
        "health: { preflight: false, intervalSeconds: 3, timeoutSeconds: 30 }",
      ),
    );
    const server2 = new ServerProcess(home2, file2);
    await server.stop();
    const c2 = await server2.start();
    const victim = "a3";
    try {
      await waitFor(
        "a first periodic probe of every ascend host",
        async () => {
          const nodes =
            await c2.get<Array<{ name: string; pool: string; health: { status: string } | null }>>("/api/nodes");
          return nodes.filter((n) => n.pool === "ascend" && n.health?.status === "ok").length >= 3 ? nodes : null;
        },
        60_000,
      );
      installFakeHost(tools, victim, "ascend-link-down");
      const node = await waitFor(
        "a3 fatal",
        async () => {
          const n = await c2.get<{ cordoned: boolean; reason: string | null; health: NodeHealthRecord | null }>(
            `/api/nodes/${victim}`,
          );
          return n.health?.status === "fatal" && n.cordoned ? n : null;
        },
        60_000,
      );
      expect(node.health!.trigger).toBe("periodic");
      expect(node.reason).toBe("health probe: network: NPU 1 port: link DOWN");
      const slurm = await waitFor(
        "the drain in Slurm",
        async () => {
          const s = await slurmNode(victim);
          return s.state.includes("drain") ? s : null;
        },
        20_000,
      );
      expect(slurm.reason).toBe("switchyard: health probe: network: NPU 1 port: link DOWN");
      const out = cli(home2, "nodes");
      expect(out.out).toMatch(
        /^a3\s+ascend\s+1\s+cordoned\s+fatal \(\d+s ago\)\s+\d+\s+\S+\s+health probe: network: NPU 1 port: link DOWN$/m,
      );
      const evs = await c2.get<Array<{ kind: string; message: string }>>("/api/events");
      expect(evs.filter((e) => e.kind === "node.health").map((e) => e.message)).toContain(
        "a3 fatal (periodic probe): network: NPU 1 port: link DOWN",
      );
    } finally {
      installFakeHost(tools, victim, "ascend-healthy");
      await c2.post(`/api/nodes/${victim}/uncordon`, { reason: "test over" }).catch(() => undefined);
      await server2.stop();
      removeFakeHost(tools, victim);
      client = await server.start();
    }
  }, 180_000);
});
