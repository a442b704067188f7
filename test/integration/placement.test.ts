import { mkdirSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { packageRoot } from "../../src/paths.js";
import { events, ranks, submit, hasTorch, waitForEnd, waitForStep, useServer } from "./harness.js";

const okRank = path.join(packageRoot, "test", "fixtures", "ranks", "ok.py");

/** Placement across pools with the fast fixture rank (no torch): falling back, leaving a failing pool, shrinking. */
describe.skipIf(!hasTorch)("placement when a pool fails", () => {
  const ctx = useServer("placement");
  const home = ctx.home;

  const job = (name: string, extra: string[]) => {
    mkdirSync(path.join(home, name), { recursive: true }); // the server refuses a workdir that does not exist
    return [
      `name: ${name}`,
      "pools: [unstable, reliable]",
      `command: ["{python}", ${JSON.stringify(okRank)}, --steps, "40", --step-sleep, "0.05", --ckpt-every, "5"]`,
      `workdir: ${JSON.stringify(path.join(home, name))}`,
      "checkpoint: { dir: ckpt }",
      ...extra,
    ].join("\n");
  };

  async function killRank0(id: string, atStep: number): Promise<void> {
    await waitForStep(ctx.client, id, atStep);
    await ctx.client.post(`/api/jobs/${id}/chaos`, { action: "kill-rank", rank: 0 });
  }

  it("leaves a pool that keeps failing and finishes on the next one, from its checkpoint", async () => {
    const id = await submit(
      ctx.client,
      home,
      "leave",
      job("leave", [
        "procsPerNode: 2",
        "recovery: { backoffSeconds: 0.1, strikesBeforeCordon: 5, poolFailures: { count: 2, windowSeconds: 600 } }",
      ]),
    );
    await killRank0(id, 8);
    await waitFor2ndAttempt(id);
    await killRank0(id, 16);
    const end = await waitForEnd(ctx.client, id, 90_000);
    expect(end.state).toBe("SUCCEEDED");
    expect(end.attempts.map((a) => a.pool)).toEqual(["unstable", "unstable", "reliable"]);
    expect(end.attempts[2]!.resumeStep).toBeGreaterThanOrEqual(15);
    const moved = (await events(ctx.client, id)).find((e) => e.kind === "job.moved");
    expect(moved?.message).toBe("moving from pool unstable to reliable: unstable failed 2 times within 600s");
  }, 120_000);

  it("shrinks to the healthy nodes when the job allows it", async () => {
    await ctx.client.post("/api/nodes/unstable-1/cordon", { reason: "test" });
    try {
      const id = await submit(
        ctx.client,
        home,
        "shrink",
        job("shrink", ["pools: [unstable]", "nodes: 2", "minNodes: 1", "procsPerNode: 2"]).replace(
          "pools: [unstable, reliable]\n",
          "",
        ),
      );
      await waitForStep(ctx.client, id, 2);
      expect((await ranks(ctx.client, id)).map((r) => r.node)).toEqual(["unstable-0", "unstable-0"]);
      const end = await waitForEnd(ctx.client, id, 60_000);
      expect(end.state).toBe("SUCCEEDED");
      expect(
        (await events(ctx.client, id)).some(
          (e) => e.kind === "job.shrunk" && e.message.startsWith("running on 1 of 2 node(s)"),
        ),
      ).toBe(true);
    } finally {
      await ctx.client.post("/api/nodes/unstable-1/uncordon", {});
    }
  }, 90_000);

  async function waitFor2ndAttempt(id: string): Promise<void> {
    await waitForStep(ctx.client, id, 1);
    for (let i = 0; i < 200; i++) {
      const j = await ctx.client.get<{ attempts: unknown[]; state: string }>(`/api/jobs/${id}`);
      if (j.attempts.length >= 2 && j.state === "RUNNING") return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error("no second attempt");
  }
});
