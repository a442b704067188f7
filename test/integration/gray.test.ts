import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { localizeNetwork, parseProbeOutput, type NetworkVerdict } from "../../src/core/netlocalize.js";
import type { PoolSpec } from "../../src/core/spec.js";
import { LocalExecutor } from "../../src/executors/local/local.js";
import { networkProbeArgv, type NodeRunResult } from "../../src/executors/port.js";
import { PoolExecutors } from "../../src/executors/router.js";
import { SlurmExecutor } from "../../src/executors/slurm/slurm.js";
import { degradeLink, healLink } from "../../src/executors/slurm/testbed.js";
import { tempHome } from "./harness.js";
import { noTestbed, slurmEnv, useTestbed } from "./testbed.js";

/**
 * Gray failures on the multi-host testbed: switchyard's network probe (agent/netprobe.py) launched on a1..a4 through
 * the Slurm executor (one srun step, one task per host) and localized. A link shaped to 100 Mbit/s is named; a healthy
 * set names nobody; a link that collapses only under load (a 40 MB token-bucket burst) is named by the full probe,
 * which sends for 2 s per pair and counts the receiver's rate over the second half. The testbed is shared with other
 * test files: the shaped link is healed whatever happens.
 */

const pool: PoolSpec = {
  name: "ascend",
  executor: "slurm",
  accelerator: { vendor: "ascend", model: "910B" },
  nodes: 4,
  devicesPerNode: 2,
};
const hosts = ["a1", "a2", "a3", "a4"];
const router = new PoolExecutors({
  local: new LocalExecutor(),
  slurm: new SlurmExecutor({ env: slurmEnv, agentPython: "/usr/bin/python3" }),
});

async function probe(
  mode: "full" | "preflight",
  opts: { jobDir?: string } = {},
): Promise<{ verdict: NetworkVerdict; runs: NodeRunResult[] }> {
  const portBase = 20_000 + Math.floor(Math.random() * 20_000);
  const argv = networkProbeArgv({ python: "/usr/bin/python3", mode, portBase, timeoutS: 90 });
  const runs = await router.runOnNodes(pool, hosts, argv, { timeoutMs: 100_000, jobDir: opts.jobDir });
  const { pairs, problems } = parseProbeOutput(runs.map((r) => r.stdout));
  expect(problems, JSON.stringify(runs)).toEqual([]);
  expect(
    runs.map((r) => r.code),
    JSON.stringify(runs),
  ).toEqual([0, 0, 0, 0]);
  expect(pairs).toHaveLength(6); // every pair of the four hosts, one at a time
  const verdict = localizeNetwork(pairs);
  if (process.env.GRAY_VERBOSE)
    console.log(`${mode}: ${verdict.kind} ${verdict.culprits.join(",")}: ${verdict.evidence}`);
  return { verdict, runs };
}

describe.skipIf(noTestbed)("gray failures on the testbed: network probe and localization", () => {
  let down: () => void = () => {};
  beforeAll(() => {
    down = useTestbed();
  }, 120_000);
  afterAll(async () => {
    await healLink("a2", { env: slurmEnv }).catch(() => undefined);
    down();
  }, 120_000);

  it("a healthy set of hosts: every pair fast, nobody named", async () => {
    const { verdict } = await probe("full");
    expect(verdict.kind, verdict.evidence).toBe("healthy");
    expect(verdict.culprits).toEqual([]);
  }, 120_000);

  it("a2's link at 100 Mbit/s: the full probe and the pre-flight both name a2, with the table as evidence", async () => {
    await degradeLink("a2", "100mbit", { env: slurmEnv });
    try {
      for (const mode of ["full", "preflight"] as const) {
        const { verdict } = await probe(mode);
        expect(verdict.kind, `${mode}: ${verdict.evidence}`).toBe("host");
        expect(verdict.culprits).toEqual(["a2"]);
        expect(verdict.slowPairs.every((p) => (p.from === "a2" || p.to === "a2") && p.gbitS! < 0.15)).toBe(true);
        expect(verdict.evidence).toMatch(/a2->|->a2/);
      }
    } finally {
      await healLink("a2", { env: slurmEnv });
    }
  }, 240_000);

  it("a2 collapsing only under load (40 MB burst): the full probe names a2, and so does the pre-flight", async () => {
    await degradeLink("a2", "100mbit", { env: slurmEnv, burst: "40mb" });
    try {
      // The full probe sends for 2 s per pair: the burst runs dry in its first tens of milliseconds.
      const { verdict } = await probe("full");
      expect(verdict.kind, verdict.evidence).toBe("host");
      expect(verdict.culprits).toEqual(["a2"]);
      // The pre-flight sends for 0.25 s per pair: a healthy link moves ~125-250 MB in that time on this machine (4-8 Gbit/s), so a
      // 40 MB burst runs dry in its first half too and a2 is named. Its blind spot is a burst larger than what it
      // moves in its second half's start (hundreds of MB here): such a link still looks fast to it, only the full
      // probe sees it collapse. (A byte-capped pre-flight of 8 MiB, tried first, was both blind to the 40 MB burst
      // and too noisy to trust: 8 MiB crosses in 3-30 ms on a loaded host.)
      const pre = await probe("preflight");
      expect(pre.verdict.kind, pre.verdict.evidence).toBe("host");
      expect(pre.verdict.culprits).toEqual(["a2"]);
    } finally {
      await healLink("a2", { env: slurmEnv });
    }
  }, 240_000);

  it("runs inside the job's allocation when the job holds the hosts, as a step of it", async () => {
    const jobDir = path.join(tempHome("gray-alloc"), "job");
    mkdirSync(jobDir, { recursive: true });
    const sb = spawnSync(
      "sbatch",
      [
        "--parsable",
        "--partition=ascend",
        "--nodes=4",
        `--nodelist=${hosts.join(",")}`,
        "--job-name=sy-gray-test",
        `--output=${path.join(jobDir, "slurm-%j.out")}`,
        "--wrap=exec sleep 600",
      ],
      { encoding: "utf8", env: { ...process.env, ...slurmEnv } },
    );
    expect(sb.status, sb.stderr).toBe(0);
    const slurmJobId = sb.stdout.trim().split(";")[0]!;
    try {
      writeFileSync(
        path.join(jobDir, "slurm-allocation.json"),
        JSON.stringify({ slurmJobId, partition: "ascend", nodes: hosts, createdAt: Date.now() }),
      );
      for (let i = 0; i < 100; i++) {
        const st = spawnSync("squeue", ["-h", "-j", slurmJobId, "-o", "%T"], {
          encoding: "utf8",
          env: { ...process.env, ...slurmEnv },
        });
        if (st.stdout.trim() === "RUNNING") break;
        await new Promise((r) => setTimeout(r, 200));
      }
      const runs = await router.runOnNodes(
        pool,
        ["a3", "a1"],
        ["/bin/sh", "-c", 'echo "$SLURM_JOB_ID $SWITCHYARD_NODE $SWITCHYARD_NODE_ADDRS"'],
        { timeoutMs: 30_000, jobDir },
      );
      expect(runs).toEqual([
        { node: "a3", code: 0, stdout: `${slurmJobId} a3 a3=10.77.0.13,a1=10.77.0.11\n`, stderr: "" },
        { node: "a1", code: 0, stdout: `${slurmJobId} a1 a3=10.77.0.13,a1=10.77.0.11\n`, stderr: "" },
      ]);
      // Without the job folder: an allocation of its own, not the job's.
      const [own] = await router.runOnNodes(pool, ["a4"], ["/bin/sh", "-c", 'echo "$SLURM_JOB_ID"'], {
        timeoutMs: 30_000,
      });
      expect(own!.code).toBe(0);
      expect(own!.stdout.trim()).toMatch(/^\d+$/);
      expect(own!.stdout.trim()).not.toBe(slurmJobId);
    } finally {
      spawnSync("scancel", [slurmJobId], { env: { ...process.env, ...slurmEnv } });
    }
  }, 120_000);
});

// The live run slowed by a collapsed link (detected from progress, the host named by the probe, drained, the job
// finishing on the others) is test/integration/gray-supervised.test.ts, end to end through the server.
