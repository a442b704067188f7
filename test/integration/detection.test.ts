import path from "node:path";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import type { JobReport } from "../../src/supervisor/report.js";
import { packageRoot } from "../../src/paths.js";
import { chargptJob, events, hasTorch, ranks, submit, waitForEnd, waitForStep, useServer } from "./harness.js";

const fixtures = path.join(packageRoot, "test", "fixtures", "ranks");
const ledgerSum = (r: JobReport) => Object.values(r.ledger.totals).reduce((a, b) => a + b, 0);

describe.skipIf(!hasTorch)("crash loops stop the job instead of burning the restart budget", () => {
  const ctx = useServer("crashloop");
  const home = ctx.home;

  it("the same Python exception at the same step on two nodes ends as a deterministic software error", async () => {
    const yaml = [
      "name: buggy",
      "pools: [unstable, reliable]",
      "nodes: 1",
      "procsPerNode: 2",
      `command: ["{python}", ${JSON.stringify(path.join(fixtures, "crash.py"))}, --steps, "8", --at-step, "5", --ckpt-every, "2", --rank-only, "0"]`,
      `workdir: ${JSON.stringify(home)}`,
      "checkpoint: { dir: ckpt-buggy }",
      "recovery: { maxRestarts: 5, backoffSeconds: 0.1, crashLoopAttempts: 2 }",
    ].join("\n");
    const id = await submit(ctx.client, home, "buggy", yaml);
    const end = await waitForEnd(ctx.client, id, 60_000);
    expect(end.state).toBe("FAILED");
    expect(end.reason).toMatch(
      /^deterministic software error: "RuntimeError: fixture crash at step <n>" at step 4 on 2 attempts/,
    );
    expect(end.attempts).toHaveLength(2);
    expect(end.restarts).toBe(1);
    expect(new Set(end.attempts.map((a) => a.nodes.join(",")))).toEqual(new Set(["unstable-0", "unstable-1"]));
    expect(end.incidents.map((i) => [i.cause, i.culpritRank])).toEqual([
      ["software", 0],
      ["software", 0],
    ]);
    // A bug is not the node's fault: no strikes, no cordon.
    const nodes = await ctx.client.get<Array<{ name: string; strikes: number; cordoned: boolean }>>("/api/nodes");
    expect(nodes.every((n) => n.strikes === 0 && !n.cordoned)).toBe(true);
  }, 90_000);
});

describe.skipIf(!hasTorch)("errors no restart can fix", () => {
  const ctx = useServer("fatal");
  it("a script that cannot import its module fails at once, with the evidence", async () => {
    const yaml = [
      "name: noimport",
      `command: ["{python}", "-c", "import switchyard_no_such_module"]`,
      `workdir: ${JSON.stringify(ctx.home)}`,
      "recovery: { maxRestarts: 5, backoffSeconds: 0.1 }",
    ].join("\n");
    const id = await submit(ctx.client, ctx.home, "noimport", yaml);
    const end = await waitForEnd(ctx.client, id, 30_000);
    expect(end.state).toBe("FAILED");
    expect(end.attempts).toHaveLength(1);
    expect(end.reason).toContain("no restart can fix");
    expect(end.reason).toContain("ModuleNotFoundError");
  }, 60_000);
});

describe.skipIf(!hasTorch)("hangs and the goodput ledger, on the real PyTorch example", () => {
  const ctx = useServer("hang");
  const home = ctx.home;

  it("a SIGSTOPped rank is detected as a hang, its stack is in its log, and the job resumes and finishes", async () => {
    const dir = path.join(home, "job");
    const yaml =
      chargptJob({ name: "hung", home: dir, steps: 20, ckptEvery: 5, extra: ["--step-sleep", "0.1"] }) +
      "\ndetection: { hangMinSeconds: 4, hangMultiple: 3, stackDumpSeconds: 1.5 }";
    const id = await submit(ctx.client, home, "hung", yaml);
    await waitForStep(ctx.client, id, 7);
    const result = await ctx.client.post<{ rank: number }>(`/api/jobs/${id}/chaos`, { action: "hang-rank", rank: 1 });
    expect(result.rank).toBe(1);
    const stoppedAt = Date.now();
    const hungLog = (await ranks(ctx.client, id)).find((r) => r.rank === 1)!.logPath;

    const end = await waitForEnd(ctx.client, id);
    expect(end.state).toBe("SUCCEEDED");
    expect(end.last?.step).toBe(20);
    expect(end.incidents).toHaveLength(1);
    const incident = end.incidents[0]!;
    expect(incident).toMatchObject({ cause: "hang", culpritRank: 1 });
    expect(incident.summary).toContain("rank 1's process is stopped");
    expect(readFileSync(hungLog, "utf8")).toMatch(/(Thread|Current thread) 0x[0-9a-f]+ \(most recent call first\):/);
    const detail = await ctx.client.get<{
      incidents: Array<{ detectedAt: number; evidence: { stack: string[]; timeoutMs: number } }>;
    }>(`/api/jobs/${id}`);
    expect(detail.incidents[0]!.evidence.stack.join("\n")).toContain("train.py");
    // Detected by the progress timeout, not by gloo's 30-minute one.
    expect(detail.incidents[0]!.detectedAt - stoppedAt).toBeLessThan(detail.incidents[0]!.evidence.timeoutMs + 10_000);

    const report = await ctx.client.get<JobReport>(`/api/jobs/${id}/report`);
    expect(Math.abs(ledgerSum(report) - report.ledger.wallMs)).toBeLessThan(1000);
    expect(report.ledger.incidents[0]!.cause).toBe("hang");
    expect(report.ledger.totals.detection).toBeGreaterThan(3000);
  }, 240_000);

  it("the ledger adds up to the wall time and counts exactly the steps recomputed after a kill", async () => {
    const dir = path.join(home, "ledger");
    const id = await submit(
      ctx.client,
      home,
      "ledger",
      chargptJob({ name: "ledger", home: dir, steps: 20, ckptEvery: 5, extra: ["--step-sleep", "0.1"] }),
    );
    await waitForStep(ctx.client, id, 8);
    await ctx.client.post(`/api/jobs/${id}/chaos`, { action: "kill-rank", rank: 0 });
    const end = await waitForEnd(ctx.client, id);
    expect(end.state).toBe("SUCCEEDED");
    expect(end.incidents[0]!.cause).toBe("killed");

    // Independently of the ledger: the steps attempt 2 ran again are those it reported at or below attempt 1's last.
    const steps = await ctx.client.get<Array<{ attempt: number; step: number }>>(`/api/jobs/${id}/steps?rank=0`);
    const reachedBefore = Math.max(...steps.filter((s) => s.attempt === 1).map((s) => s.step));
    const recomputed = steps.filter((s) => s.attempt === 2 && s.step <= reachedBefore).length;
    expect(recomputed).toBe(reachedBefore - end.attempts[1]!.resumeStep!);

    const report = await ctx.client.get<JobReport>(`/api/jobs/${id}/report`);
    expect(report.ledger.stepsLost).toBe(recomputed);
    expect(report.ledger.incidents[0]!.stepsLost).toBe(recomputed);
    expect(Math.abs(ledgerSum(report) - report.ledger.wallMs)).toBeLessThan(1000);
    expect(report.ledger.totals.productive).toBeGreaterThan(0);
    expect(report.ledger.incidents[0]!.detectionMs).toBeLessThan(1000);
    // The only failure was a drill (chaos kill-rank): charged above, no sample of the fleet's failure rate.
    expect(report.ledger.incidents[0]!.injected).toBe("kill-rank");
    expect(report.advice).toMatchObject({ mtbfMs: null, injectedLeftOut: 1 });
    expect((await events(ctx.client, id)).some((e) => e.kind === "chaos")).toBe(true);
  }, 240_000);
});
