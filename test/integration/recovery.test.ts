import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/cli/client.js";
import { verifyCheckpoint } from "../../src/supervisor/checkpoint-scan.js";
import {
  chargptJob,
  events,
  finalLoss,
  hasTorch,
  rankProcessPid,
  ranks,
  ServerProcess,
  submit,
  tempHome,
  waitFor,
  waitForEnd,
  waitForStep,
  writeCluster,
} from "./harness.js";

/**
 * The real PyTorch example (2 ranks, gloo on CPU) under a real server process. Every scenario must end SUCCEEDED at
 * the planned final step with the same held-out loss as an uninterrupted run of the same seed: batches are a
 * function of (seed, step, rank) and resume restores model and optimizer state, so the only allowed difference is
 * float noise. Tolerance: 1e-4 absolute on a loss of about 2.
 */
const STEPS = 24;
const CKPT_EVERY = 6;
const TOLERANCE = 1e-4;
const SLOW = ["--step-sleep", "0.15"];

describe.skipIf(!hasTorch)("supervised PyTorch training recovers without restarting from scratch", () => {
  const home = tempHome("recovery");
  const server = new ServerProcess(home, writeCluster(home));
  let client: ApiClient;
  let baseline: number;

  beforeAll(async () => {
    client = await server.start();
    const dir = path.join(home, "baseline");
    const id = await submit(
      client,
      home,
      "baseline",
      chargptJob({ name: "baseline", home: dir, steps: STEPS, ckptEvery: CKPT_EVERY }),
    );
    const end = await waitForEnd(client, id);
    expect(end.state).toBe("SUCCEEDED");
    expect(end.restarts).toBe(0);
    baseline = await finalLoss(client, id);
  }, 240_000);

  afterAll(async () => {
    await server.stop();
  });

  it("(a) SIGKILL of one rank mid-run: the culprit is named, the job resumes from a checkpoint and matches", async () => {
    const dir = path.join(home, "kill");
    const id = await submit(
      client,
      home,
      "kill",
      chargptJob({ name: "kill", home: dir, steps: STEPS, ckptEvery: CKPT_EVERY, extra: SLOW }),
    );
    await waitForStep(client, id, CKPT_EVERY + 2);
    const [victim] = (await ranks(client, id)).filter((r) => r.rank === 1);
    process.kill(rankProcessPid(victim!), "SIGKILL");

    const end = await waitForEnd(client, id);
    expect(end.state).toBe("SUCCEEDED");
    expect(end.last?.step).toBe(STEPS);
    expect(end.restarts).toBe(1);
    expect(end.incidents).toHaveLength(1);
    expect(end.incidents[0]).toMatchObject({ culpritRank: 1, culpritNode: "unstable-0" });
    expect(end.incidents[0]!.summary).toContain("SIGKILL");
    const resumed = end.attempts[1]!;
    expect(resumed.resumeStep).toBeGreaterThanOrEqual(CKPT_EVERY);
    expect(Math.abs((await finalLoss(client, id)) - baseline)).toBeLessThan(TOLERANCE);
  }, 240_000);

  it("(b) a corrupted newest checkpoint is skipped with an event and the previous one is used", async () => {
    const dir = path.join(home, "corrupt");
    const id = await submit(
      client,
      home,
      "corrupt",
      chargptJob({ name: "corrupt", home: dir, steps: STEPS, ckptEvery: CKPT_EVERY, extra: SLOW }),
    );
    const ckptRoot = path.join(dir, "ckpt");
    await waitForStep(client, id, 2 * CKPT_EVERY + 1);
    const newest = readdirSync(ckptRoot)
      .filter((n) => n.startsWith("step-"))
      .sort()
      .at(-1)!;
    const stateFile = path.join(ckptRoot, newest, "state.pt");
    const bytes = readFileSync(stateFile);
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff; // flip one byte
    writeFileSync(stateFile, bytes);
    const [victim] = (await ranks(client, id)).filter((r) => r.rank === 0);
    process.kill(rankProcessPid(victim!), "SIGKILL");

    const end = await waitForEnd(client, id);
    expect(end.state).toBe("SUCCEEDED");
    expect(end.last?.step).toBe(STEPS);
    const skipped = (await events(client, id)).filter((e) => e.kind === "checkpoint.skipped");
    expect(skipped.map((e) => e.data.path)).toContain(path.join(ckptRoot, newest));
    expect(skipped[0]!.message).toContain("SHA-256");
    const newestStep = Number(newest.slice("step-".length));
    expect(end.attempts[1]!.resumeStep).toBe(newestStep - CKPT_EVERY);
    expect(Math.abs((await finalLoss(client, id)) - baseline)).toBeLessThan(TOLERANCE);
  }, 240_000);

  it("(d) a crash during a checkpoint write leaves no checkpoint that verifies but is torn", async () => {
    const dir = path.join(home, "torn");
    const dieAt = 2 * CKPT_EVERY;
    const id = await submit(
      client,
      home,
      "torn",
      chargptJob({
        name: "torn",
        home: dir,
        steps: STEPS,
        ckptEvery: CKPT_EVERY,
        extra: ["--die-during-checkpoint", String(dieAt)],
      }),
    );
    const ckptRoot = path.join(dir, "ckpt");
    // Right after the crash, before the next attempt can rewrite it: the torn write never became a step folder.
    const afterCrash = await waitFor("the crash mid-checkpoint", async () => {
      const j = await client.get<{ incidents: unknown[] }>(`/api/jobs/${id}`);
      return j.incidents.length > 0 ? readdirSync(ckptRoot) : null;
    });
    expect(afterCrash.some((n) => n.startsWith(".tmp-step-"))).toBe(true);
    for (const name of afterCrash.filter((n) => n.startsWith("step-"))) {
      const v = await verifyCheckpoint(path.join(ckptRoot, name));
      expect(v.ok, `${name} must verify`).toBe(true);
    }

    const end = await waitForEnd(client, id);
    expect(end.state).toBe("SUCCEEDED");
    expect(end.last?.step).toBe(STEPS);
    expect(end.attempts[1]!.resumeStep).toBe(dieAt - CKPT_EVERY);
    expect((await events(client, id)).filter((e) => e.kind === "checkpoint.skipped")).toHaveLength(0);
    expect(Math.abs((await finalLoss(client, id)) - baseline)).toBeLessThan(TOLERANCE);
  }, 240_000);

  it("(c) SIGKILL of the server mid-run: training goes on, the new server re-adopts it, reports stay continuous", async () => {
    const dir = path.join(home, "server-kill");
    const id = await submit(
      client,
      home,
      "srvkill",
      chargptJob({ name: "srvkill", home: dir, steps: STEPS, ckptEvery: CKPT_EVERY, extra: SLOW }),
    );
    await waitForStep(client, id, 4);
    const before = await ranks(client, id);
    server.kill9();
    await new Promise((r) => setTimeout(r, 3000)); // the ranks train on with no control plane
    client = await server.start();
    const end = await waitForEnd(client, id);
    expect(end.state).toBe("SUCCEEDED");
    expect(end.restarts).toBe(0);
    expect(end.attempts).toHaveLength(1);
    expect((await ranks(client, id)).map((r) => r.pid)).toEqual(before.map((r) => r.pid));
    const steps = (await client.get<Array<{ step: number }>>(`/api/jobs/${id}/steps?rank=0`)).map((s) => s.step);
    expect(steps).toEqual(Array.from({ length: STEPS }, (_, i) => i + 1));
    expect((await events(client, id)).some((e) => e.kind === "supervisor.adopted")).toBe(true);
    expect(Math.abs((await finalLoss(client, id)) - baseline)).toBeLessThan(TOLERANCE);
  }, 240_000);
});
