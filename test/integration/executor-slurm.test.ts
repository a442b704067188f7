import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import type { PoolSpec } from "../../src/core/spec.js";
import { drainNode, listNodes, nodeUnusable, resumeNode } from "../../src/executors/slurm/slurm-cli.js";
import { SlurmExecutor } from "../../src/executors/slurm/slurm.js";
import { packageRoot } from "../../src/paths.js";
import { executorConformance } from "./executor-conformance.js";
import { noTestbed, slurmEnv, testbed, useTestbed } from "./testbed.js";
import { tempHome } from "./harness.js";

const pool: PoolSpec = {
  name: "ascend",
  executor: "local",
  accelerator: { vendor: "ascend", model: "910B" },
  nodes: 4,
  devicesPerNode: 2,
};

function executor(lostAfterSeconds = 5): SlurmExecutor {
  return new SlurmExecutor({
    env: slurmEnv,
    agentPython: "/usr/bin/python3",
    // Tasks live in their host's network namespace: gloo must use the host's own interface.
    rankEnv: { GLOO_SOCKET_IFNAME: "eth0" },
    lostAfterSeconds,
  });
}

describe.skipIf(noTestbed)("Slurm executor on the multi-host testbed", () => {
  let down: () => void = () => {};
  beforeAll(() => {
    down = useTestbed();
  }, 120_000);
  afterAll(() => {
    testbed("revive", "a4");
    down();
  }, 120_000);

  executorConformance({
    name: "slurm",
    executor: () => executor(),
    pool,
    nodes: ["a1", "a2"],
    python: "/usr/bin/python3",
    startMs: 15_000,
  });

  it("runs every attempt of a job as a step of one allocation, and records the Slurm job and step ids", async () => {
    const ex = executor();
    const jobDir = path.join(tempHome("slurm-alloc"), "job");
    const fixture = path.join(packageRoot, "test", "fixtures", "ranks", "env_sleep.py");
    const ids: Array<{ slurmJobId: string; stepId: string | null; nodes: string[] }> = [];
    onTestFinished(() => ex.release(jobDir));
    for (const attempt of [1, 2]) {
      const dir = path.join(jobDir, `attempt-${attempt}`);
      const ranks = await ex.launch({
        jobId: "alloc1",
        jobName: "alloc",
        attempt,
        dir,
        pool,
        nodes: ["a3", "a1"],
        procsPerNode: 1,
        command: ["/usr/bin/python3", fixture, "0"],
        env: {},
        workdir: jobDir,
        masterPort: 29_600 + attempt,
        checkpointDir: path.join(jobDir, "ckpt"),
        resumeFrom: null,
      });
      // Slurm's order of the hosts, not the order asked for: rank 0 is on a1.
      expect(ranks.map((r) => r.node)).toEqual(["a1", "a3"]);
      for (;;) {
        const s = await ex.poll(dir, ranks);
        if (s.every((x) => x.state === "exited")) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      ids.push(JSON.parse(readFileSync(path.join(dir, "slurm-step.json"), "utf8")) as (typeof ids)[number]);
      const env = JSON.parse(readFileSync(ranks[1]!.logPath, "utf8").split("\n")[0]!) as Record<string, string>;
      expect(env.SLURMD_NODENAME).toBe("a3");
      expect(env.MASTER_ADDR).toBe("10.77.0.11");
    }
    expect(ids[0]!.slurmJobId).toMatch(/^\d+$/);
    expect(ids[1]!.slurmJobId).toBe(ids[0]!.slurmJobId);
    expect(ids[0]!.stepId).toMatch(new RegExp(`^${ids[0]!.slurmJobId}\\.\\d+$`));
    expect(ids[1]!.stepId).not.toBe(ids[0]!.stepId);
  }, 90_000);

  it("finds a lost host from its silent agents in seconds, while the other host's rank runs on", async () => {
    const ex = executor(3);
    const jobDir = path.join(tempHome("slurm-lost"), "job");
    const dir = path.join(jobDir, "attempt-1");
    const fixture = path.join(packageRoot, "test", "fixtures", "ranks", "env_sleep.py");
    const ranks = await ex.launch({
      jobId: "lost1",
      jobName: "lost",
      attempt: 1,
      dir,
      pool,
      nodes: ["a3", "a4"],
      procsPerNode: 1,
      command: ["/usr/bin/python3", fixture, "120"],
      env: {},
      workdir: jobDir,
      masterPort: 29_700,
      checkpointDir: path.join(jobDir, "ckpt"),
      resumeFrom: null,
    });
    onTestFinished(async () => {
      testbed("revive", "a4");
      await ex.stop(ranks, 1000);
      await ex.release(jobDir);
    });
    const until = async (want: (s: string[]) => boolean, ms: number) => {
      const deadline = Date.now() + ms;
      for (;;) {
        const s = (await ex.poll(dir, ranks)).map((x) => x.state);
        if (want(s)) return s;
        if (Date.now() > deadline) throw new Error(`statuses stayed ${s.join(",")}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await until((s) => s.every((x) => x === "running"), 20_000);
    // Wait for both heartbeats, so that "running" is not the start-up grace.
    for (;;) {
      if (ex.processState(ranks[0]!) && ex.processState(ranks[1]!)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const killedAt = Date.now();
    expect(testbed("kill-node", "a4").status).toBe(0);
    const s = await until((x) => x[1] === "vanished", 15_000);
    const foundInMs = Date.now() - killedAt;
    expect(s[0]).toBe("running");
    expect(foundInMs).toBeLessThan(10_000); // Slurm itself would take SlurmdTimeout (300 s)
  }, 90_000);

  it("cordon is Slurm's drain, with switchyard's reason; uncordon resumes the node", async () => {
    await drainNode("n2", "switchyard: incident #3 (xid 79 on n2)", { env: slurmEnv });
    const drained = (await listNodes({ env: slurmEnv })).find((n) => n.name === "n2")!;
    expect(nodeUnusable(drained)).toBe(true);
    expect(drained.reason).toBe("switchyard: incident #3 (xid 79 on n2)");
    await resumeNode("n2", { env: slurmEnv });
    // Right after RESUME Slurm shows the node "idle*" (not responding) until its slurmd answers the next ping.
    let back = (await listNodes({ env: slurmEnv })).find((n) => n.name === "n2")!;
    for (let i = 0; i < 100 && nodeUnusable(back); i++) {
      await new Promise((r) => setTimeout(r, 200));
      back = (await listNodes({ env: slurmEnv })).find((n) => n.name === "n2")!;
    }
    expect(back.state).toEqual(["idle"]);
    expect(back.features).toEqual(["h20"]);
    expect(back.address).toBe("10.77.0.22");
    expect(back.partitions).toEqual(["nvidia"]);
  }, 30_000);
});
