import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/cli/client.js";
import { listNodes, nodeUnusable } from "../../src/executors/slurm/slurm-cli.js";
import { degradeLink, healLink } from "../../src/executors/slurm/testbed.js";
import { packageRoot } from "../../src/paths.js";
import type { JobReport } from "../../src/supervisor/report.js";
import {
  events,
  exampleDir,
  hasTorch,
  job,
  ServerProcess,
  submit,
  tempHome,
  waitFor,
  waitForEnd,
  waitForStep,
  type JobView,
} from "./harness.js";
import { noTestbed, slurmConf, slurmEnv, useTestbed } from "./testbed.js";

/**
 * Gray failures supervised end to end on the multi-host testbed: the char-GPT example across three hosts, one host's
 * link collapsed (chaos degrade-link, through the CLI and the API) after warm-up. The supervisor sees the slowdown
 * from progress alone, probes the attempt's hosts in the background, names the host, drains it in Slurm with the
 * measured table as reason, and the job finishes on the other hosts; the ledger charges the slow share as degraded
 * time. The same job on healthy hosts opens no slowdown at all.
 */

process.env.SLURM_CONF = slurmConf;

const cluster = `
strikeWindowSeconds: 3600
pools:
  - name: ascend
    executor: slurm
    accelerator: { vendor: ascend, model: 910B }
    devicesPerNode: 1
    slurm: { partition: ascend, agentPython: /usr/bin/python3, env: { GLOO_SOCKET_IFNAME: eth0 } }
`;

function spec(name: string, home: string, steps: number): string {
  return [
    `name: ${name}`,
    "pools: [ascend]",
    "nodes: 3",
    "procsPerNode: 1",
    `command: ${JSON.stringify(["{python}", path.join(exampleDir, "train.py"), "--steps", String(steps), "--ckpt-every", "20", "--batch", "8"])}`,
    `workdir: ${JSON.stringify(home)}`,
    `steps: ${steps}`,
    "recovery: { maxRestarts: 3, backoffSeconds: 0.5 }",
  ].join("\n");
}

const current = (v: JobView) => v.attempts[v.attempts.length - 1]!;
const hosts = ["a1", "a2", "a3", "a4"];

function resumeAll(): void {
  for (const n of hosts) {
    spawnSync("scontrol", ["update", `NodeName=${n}`, "State=RESUME"], { env: { ...process.env, ...slurmEnv } });
  }
}

describe.skipIf(noTestbed || !hasTorch)("gray failures supervised on the testbed", () => {
  const home = tempHome("gray-sup");
  const clusterFile = path.join(home, "cluster.yaml");
  writeFileSync(clusterFile, cluster);
  const server = new ServerProcess(home, clusterFile);
  let client: ApiClient;
  let down: () => void = () => {};
  let culprit: string | null = null;

  beforeAll(async () => {
    down = useTestbed();
    resumeAll();
    client = await server.start();
  }, 120_000);

  afterAll(async () => {
    await server.stop();
    for (const n of hosts) await healLink(n, { env: slurmEnv }).catch(() => undefined);
    resumeAll();
    down();
  }, 120_000);

  it("a healthy run of the job opens no slowdown", async () => {
    // 150 steps with a checkpoint every 20 (about a minute here): the 30-minute healthy soak (bench/gray/soak.mjs) is
    // the long version, outside CI's time budget.
    const id = await submit(client, home, "gray-healthy", spec("gray-healthy", home, 150));
    const end = await waitForEnd(client, id, 400_000);
    expect(end.state, server.output.slice(-3000)).toBe("SUCCEEDED");
    const kinds = (await events(client, id)).map((e) => e.kind);
    expect(kinds).not.toContain("slowdown.detected");
    expect(end.incidents).toEqual([]);
    const report = await client.get<JobReport>(`/api/jobs/${id}/report`);
    expect(report.ledger.totals.degraded).toBe(0);
  }, 450_000);

  it("a host's link collapsed mid-run: detected, the host named from the probe and drained, the job finishes on the others, degraded time in the ledger", async () => {
    const id = await submit(client, home, "gray-slow", spec("gray-slow", home, 240));
    await waitForStep(client, id, 90);
    const first = current(await job(client, id));
    expect(first.nodes).toHaveLength(3);
    culprit = first.nodes.includes("a2") ? "a2" : first.nodes[1]!;

    // The collapse, through the CLI (and the API behind it): 5 Mbit/s both ways, far below what the gradients need.
    const collapsedAt = Date.now();
    const cli = spawnSync(
      process.execPath,
      [
        path.join(packageRoot, "bin", "switchyard.js"),
        "chaos",
        id,
        "degrade-link",
        "--node",
        culprit,
        "--rate",
        "5mbit",
      ],
      { encoding: "utf8", env: { ...process.env, SWITCHYARD_HOME: home, ...slurmEnv } },
    );
    expect(cli.status, `${cli.stdout}${cli.stderr}`).toBe(0);
    expect(cli.stdout).toContain(`${culprit}'s link shaped to 5mbit`);

    const detected = await waitFor(
      "the slowdown to be detected",
      async () => (await events(client, id)).find((e) => e.kind === "slowdown.detected"),
      120_000,
    );
    const incident = await waitFor("the slowdown incident", async () => (await job(client, id)).incidents[0], 150_000);
    const namedAt = Date.now();
    if (process.env.GRAY_VERBOSE) {
      console.log(
        `detected ${((detected.t - collapsedAt) / 1000).toFixed(1)} s after the collapse, named after ${((namedAt - collapsedAt) / 1000).toFixed(1)} s: ${incident.summary}`,
      );
    }
    expect(incident, JSON.stringify(incident)).toMatchObject({ cause: "network", culpritNode: culprit });
    const evidence = (incident as unknown as { evidence: Record<string, unknown> }).evidence;
    expect(evidence).toMatchObject({ endedAttempt: true, network: { kind: "host", culprits: [culprit] } });
    expect((evidence.decision as { sentence: string }).sentence).toMatch(/: evict$/);
    const degraded = evidence.degraded as { from: number; speed: number };
    expect(degraded.speed).toBeLessThan(0.55); // at least 2x slower
    expect(Math.abs(degraded.from - collapsedAt)).toBeLessThan(20_000);

    // Drained in Slurm with switchyard's reason (the measured figures).
    const drained = await waitFor("Slurm to drain the culprit", async () => {
      const n = (await listNodes({ env: slurmEnv })).find((x) => x.name === culprit);
      return n?.reason?.startsWith("switchyard:") ? n : undefined;
    });
    expect(drained.reason).toMatch(/network/);

    const end = await waitForEnd(client, id, 480_000);
    expect(end.state, server.output.slice(-3000)).toBe("SUCCEEDED");
    const attempts = end.attempts;
    expect(attempts.length).toBeGreaterThanOrEqual(2);
    expect(attempts[attempts.length - 1]!.nodes).not.toContain(culprit);
    expect(attempts[1]!.resumeStep).toBeGreaterThanOrEqual(20);
    const report = await client.get<JobReport>(`/api/jobs/${id}/report`);
    expect(report.ledger.totals.degraded).toBeGreaterThan(0);
    const cost = report.ledger.incidents.find((i) => i.cause === "network")!;
    expect(cost.degradedMs).toBeGreaterThan(0);
    expect(cost.endedAttempt).toBe(true);
  }, 700_000);

  it("pre-flight: a host whose link is already collapsed is drained and left out before the attempt launches", async () => {
    // The first server holds a2 cordoned from the test before (and would drain it again): a fresh one over a new home.
    await server.stop();
    for (const n of hosts) await healLink(n, { env: slurmEnv }).catch(() => undefined);
    resumeAll();
    await waitFor("Slurm to resume the hosts", async () => {
      const nodes = await listNodes({ env: slurmEnv });
      // Not drained by us any more, and back in service: right after RESUME Slurm shows "idle*" (not responding) until
      // the host's slurmd answers, and a server starting then would take the host for unusable.
      return hosts.every((h) => {
        const n = nodes.find((x) => x.name === h);
        return n !== undefined && !n.reason?.startsWith("switchyard:") && !nodeUnusable(n);
      });
    });
    await degradeLink("a2", "5mbit", { env: slurmEnv });
    try {
      const home2 = tempHome("gray-pre");
      const clusterFile2 = path.join(home2, "cluster.yaml");
      writeFileSync(clusterFile2, cluster);
      const second = new ServerProcess(home2, clusterFile2);
      const client2 = await second.start();
      try {
        const id = await submit(client2, home2, "gray-pre", spec("gray-pre", home2, 40));
        const first = await waitFor("the first attempt", async () => (await job(client2, id)).attempts[0], 120_000);
        expect(first.nodes).toHaveLength(3);
        expect(first.nodes).not.toContain("a2");
        const all = await events(client2, id);
        const pre = all.find((e) => e.kind === "preflight.network");
        if (!pre) console.log(all.map((e) => `${e.kind}: ${e.message}`).join("\n"));
        expect(pre?.data.excluded).toEqual(["a2"]);
        expect(pre?.message).toMatch(/a2->|->a2/);
        const a2 = (await listNodes({ env: slurmEnv })).find((n) => n.name === "a2");
        expect(a2?.reason).toMatch(/^switchyard:.*network pre-flight/);
        const end = await waitForEnd(client2, id, 300_000);
        expect(end.state, second.output.slice(-3000)).toBe("SUCCEEDED");
      } finally {
        await second.stop();
      }
    } finally {
      await healLink("a2", { env: slurmEnv }).catch(() => undefined);
    }
  }, 500_000);
});
