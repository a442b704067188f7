import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { childPids } from "../../src/executors/local/procfs.js";
import { packageRoot } from "../../src/paths.js";
import type { StepSample } from "../../src/store/port.js";
import type { JobReport } from "../../src/supervisor/report.js";
import { events, job, ranks, sleep, submit, useServer, waitFor, waitForEnd, waitForStep } from "./harness.js";

/** Progress ingestion: log-regex times across a server restart, hostile report lines, floods. No torch needed. */

const fixtures = path.join(packageRoot, "test", "fixtures", "ranks");
const q = (s: string) => JSON.stringify(s);

function plainJob(name: string, home: string): string {
  return [
    `name: ${name}`,
    "pools: [unstable]",
    `command: ["{python}", ${q(path.join(fixtures, "plain_log.py"))}, --steps, "40", --first, "0", --step-sleep, "0.15"]`,
    `workdir: ${q(home)}`,
    String.raw`progress: { regex: 'step (?<step>\d+)/\d+ loss (?<loss>\S+)' }`,
  ].join("\n");
}

/** Printed time of each step in rank 0's log (the fixture prints `t=<unix seconds>`). */
function printedTimes(logText: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const m of logText.matchAll(/^step (\d+)\/\d+ loss \S+ t=(\S+)$/gm)) out.set(Number(m[1]), Number(m[2]) * 1000);
  return out;
}

describe("log-regex progress across a server restart", () => {
  const ctx = useServer("ingest-regex");

  it("dates each step by when its line was written, so the goodput of a fault-free run survives a restart", async () => {
    const calm = await submit(ctx.client, ctx.home, "calm", plainJob("calm", ctx.home));
    // While it runs: the API gives the rank process's own pid beside the wrapper's.
    await waitForStep(ctx.client, calm, 3);
    const [r0] = await waitFor("rank pid", async () => {
      const rs = await ranks(ctx.client, calm);
      return rs[0]?.rankPid ? rs : null;
    });
    expect(r0!.rankPid).toBe(childPids(r0!.pid!)[0]);
    expect(readFileSync(`/proc/${r0!.rankPid}/cmdline`, "utf8")).toContain("plain_log.py");
    const calmEnd = await waitForEnd(ctx.client, calm, 60_000);
    expect(calmEnd.state).toBe("SUCCEEDED");

    const bumpy = await submit(ctx.client, ctx.home, "bumpy", plainJob("bumpy", ctx.home));
    await waitForStep(ctx.client, bumpy, 5);
    ctx.server.kill9();
    await sleep(3_000); // the rank goes on writing; nobody reads
    ctx.client = await ctx.server.start();
    const bumpyEnd = await waitForEnd(ctx.client, bumpy, 60_000);
    expect(bumpyEnd.state).toBe("SUCCEEDED");

    // Every stored step's time is within the wrapper's stamp interval of when the rank printed it.
    const { text } = await ctx.client.get<{ text: string }>(`/api/jobs/${bumpy}/logs?rank=0`);
    const printed = printedTimes(text);
    const steps = await ctx.client.get<StepSample[]>(`/api/jobs/${bumpy}/steps?rank=0`);
    expect(steps.length).toBeGreaterThan(3);
    for (const s of steps) expect(Math.abs(s.t - printed.get(s.step)!)).toBeLessThan(1_500);

    const [a, b] = await Promise.all([calm, bumpy].map((id) => ctx.client.get<JobReport>(`/api/jobs/${id}/report`)));
    // Numbered from 0 and fault-free: nothing was recomputed.
    expect(a!.ledger.stepsLost).toBe(0);
    expect(b!.ledger.stepsLost).toBe(0);
    expect(Math.abs(a!.ledger.goodput - b!.ledger.goodput)).toBeLessThan(0.1);
    expect(b!.ledger.goodput).toBeGreaterThan(0.4);
  }, 150_000);
});

describe("hostile report lines", () => {
  const ctx = useServer("ingest-hostile");

  it("null, a 4 MiB line, non-JSON and a step without a step are skipped and counted; 1e999 is the NaN incident", async () => {
    const yaml = [
      "name: hostile",
      "pools: [unstable]",
      `command: ["{python}", ${q(path.join(fixtures, "bad_reports.py"))}, --steps, "30", --at-step, "20"]`,
      `workdir: ${q(ctx.home)}`,
      "detection: { hangMinSeconds: 3 }",
      "recovery: { maxRestarts: 2, backoffSeconds: 0.1 }",
    ].join("\n");
    const id = await submit(ctx.client, ctx.home, "hostile", yaml);
    const end = await waitForEnd(ctx.client, id, 90_000);
    expect(end.state).toBe("SUCCEEDED");
    expect(end.last?.step).toBe(30);
    // No false hang behind the 4 MiB line: the only incident is the non-finite loss, at its step.
    expect(end.incidents.map((i) => i.cause)).toEqual(["numerical"]);
    expect(end.incidents[0]!.summary).toContain("non-finite loss at step 20");
    const malformed = (await events(ctx.client, id)).filter((e) => e.kind === "report.malformed");
    expect(malformed).toHaveLength(1);
    expect(malformed[0]!.message).toContain("not a JSON object");
    expect(malformed[0]!.data.count).toBeGreaterThanOrEqual(1);
  }, 120_000);

  it("a step time far in the future is clamped: the rank that then goes silent is found hung", async () => {
    const yaml = [
      "name: future",
      "pools: [unstable]",
      `command: ["{python}", ${q(path.join(fixtures, "bad_reports.py"))}, --mode, future, --steps, "10"]`,
      `workdir: ${q(ctx.home)}`,
      "detection: { hangMinSeconds: 3, stackDumpSeconds: 0.2 }",
      "recovery: { maxRestarts: 2, backoffSeconds: 0.1, graceSeconds: 1 }",
    ].join("\n");
    const id = await submit(ctx.client, ctx.home, "future", yaml);
    const end = await waitForEnd(ctx.client, id, 90_000);
    expect(end.state).toBe("SUCCEEDED");
    expect(end.incidents.map((i) => i.cause)).toEqual(["hang"]);
  }, 120_000);
});

describe("report floods", () => {
  const ctx = useServer("ingest-flood");

  it("a million reports are ingested with bounded rows, the right last step and no false hang", async () => {
    const yaml = [
      "name: flood",
      "pools: [unstable]",
      `command: ["{python}", ${q(path.join(fixtures, "flood.py"))}, --lines, "1000000", --idle, "1"]`,
      `workdir: ${q(ctx.home)}`,
      "detection: { hangMinSeconds: 2 }",
      "recovery: { maxRestarts: 0 }",
    ].join("\n");
    const id = await submit(ctx.client, ctx.home, "flood", yaml);
    const end = await waitForEnd(ctx.client, id, 120_000);
    expect(end.incidents).toEqual([]);
    expect(end.state).toBe("SUCCEEDED");
    expect(end.last?.step).toBe(1_000_000);
    const steps = await ctx.client.get<StepSample[]>(`/api/jobs/${id}/steps`);
    expect(steps.length).toBeLessThanOrEqual(2_001);
    const list = await ctx.client.get<Array<{ id: string; last: StepSample | null }>>("/api/jobs");
    expect(list.find((j) => j.id === id)?.last?.step).toBe(1_000_000);
    expect((await job(ctx.client, id)).state).toBe("SUCCEEDED");
  }, 150_000);
});
