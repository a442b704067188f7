import { spawn } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { packageRoot } from "../../src/paths.js";
import { hasTorch, rankProcessPid, ranks, submit, useServer, waitFor, waitForEnd, waitForStep } from "./harness.js";

/**
 * `switchyard plan --from-job` on a real run: a supervised job (2 ranks of the fixture rank, checkpoints every 5 steps)
 * loses rank 1 to a SIGKILL, resumes and finishes; the planner then calibrates a plan from the first part of the job's
 * ledger, read through the server's API like any CLI command, and sets its prediction against what followed.
 */
const fixtures = path.join(packageRoot, "test", "fixtures", "ranks");
const bin = path.join(packageRoot, "bin", "switchyard.js");
const STEPS = 60;

function cli(home: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, "--home", home, ...args], { cwd: packageRoot });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.once("close", (code) => resolve({ code: code ?? -1, out, err }));
  });
}

describe.skipIf(!hasTorch)("plan --from-job on a real run", () => {
  const ctx = useServer("plan-from-job");

  it("calibrates from the job's first part, predicts the rest, and shows what really happened", async () => {
    const id = await submit(
      ctx.client,
      ctx.home,
      "calibrated",
      [
        "name: calibrated",
        "pools: [unstable]",
        "procsPerNode: 2",
        `command: ${JSON.stringify(["{python}", path.join(fixtures, "ok.py"), "--steps", String(STEPS), "--ckpt-every", "5", "--step-sleep", "0.1"])}`,
        `workdir: ${JSON.stringify(ctx.home)}`,
        `steps: ${STEPS}`,
        "recovery: { maxRestarts: 4, backoffSeconds: 0.2, strikesBeforeCordon: 100 }",
      ].join("\n"),
    );
    await waitForStep(ctx.client, id, 17);
    const [victim] = (await ranks(ctx.client, id)).filter((r) => r.rank === 1);
    process.kill(rankProcessPid(victim!), "SIGKILL");
    // A few steps of the second attempt, so that its restart is measured.
    await waitFor(
      "a few steps of the second attempt",
      async () => {
        const job = await ctx.client.get<{ attempts: unknown[]; last: { attempt: number; step: number } | null }>(
          `/api/jobs/${id}`,
        );
        return job.attempts.length === 2 && (job.last?.attempt ?? 0) === 2 && (job.last?.step ?? 0) >= 30;
      },
      60_000,
    );
    const detail = await ctx.client.get<{ createdAt: number }>(`/api/jobs/${id}`);
    const asOf = (Date.now() - detail.createdAt) / 1000;
    const end = await waitForEnd(ctx.client, id);
    expect(end.state).toBe("SUCCEEDED");

    const run = await cli(ctx.home, [
      "plan",
      "--from-job",
      id,
      "--as-of",
      asOf.toFixed(1),
      "--trials",
      "200",
      "--json",
    ]);
    expect(run.code, run.err).toBe(0);
    const result = JSON.parse(run.out) as {
      calibration: {
        stepNow: number;
        stepTimeS: number;
        causes: Array<{ cause: string; count: number; perNodeDay: number }>;
        restartsMeasured: number;
        intervalS: number;
      };
      plan: { scenarios: Array<{ workload: { steps: number } }> };
      predicted: { totalP10S: number; totalP50S: number; totalP90S: number };
      actual: { state: string; totalS: number };
    };
    const c = result.calibration;
    expect(c.causes).toEqual([expect.objectContaining({ cause: "killed", count: 1 })]);
    expect(c.restartsMeasured).toBe(1);
    expect(c.stepTimeS).toBeGreaterThan(0.05);
    // Checkpoints every 5 steps, at the measured pace.
    expect(c.intervalS / c.stepTimeS).toBeCloseTo(5, 6);
    expect(result.plan.scenarios[0]?.workload.steps).toBe(STEPS - c.stepNow);
    expect(result.actual).toMatchObject({ state: "SUCCEEDED" });
    // The prediction is of the same run: the whole run's p50 lies between the history and many times the actual.
    expect(result.predicted.totalP50S).toBeGreaterThan(asOf);
    expect(result.predicted.totalP10S).toBeLessThanOrEqual(result.predicted.totalP90S);
    expect(result.predicted.totalP50S).toBeLessThan(3 * result.actual.totalS);

    // The table says the same, in words.
    const table = await cli(ctx.home, ["plan", "--from-job", id, "--as-of", asOf.toFixed(1), "--trials", "50"]);
    expect(table.code, table.err).toBe(0);
    expect(table.out).toMatch(/^calibrated from job calibrated-\w+: its first /m);
    expect(table.out).toMatch(/^ {2}killed: 1 failure\(s\)/m);
    expect(table.out).toMatch(/^actual: SUCCEEDED after /m);

    // A finished job without --as-of, and a cut before 10 steps of history: exit 2 with the fix.
    const finished = await cli(ctx.home, ["plan", "--from-job", id]);
    expect(finished.code).toBe(2);
    expect(finished.err).toMatch(/nothing left to predict \(fix: pass --as-of SECONDS/);
    const early = await cli(ctx.home, ["plan", "--from-job", id, "--as-of", "0.5", "--json"]);
    expect(early.code).toBe(2);
    expect(JSON.parse(early.err)).toMatchObject({
      error: expect.stringMatching(/too little history/),
      fix: "give a later --as-of",
      exitCode: 2,
    });
    const unknown = await cli(ctx.home, ["plan", "--from-job", "no-such-job"]);
    expect(unknown.code).toBe(2);
  }, 180_000);
});
