import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeClient } from "../../src/cli/client.js";
import { packageRoot } from "../../src/paths.js";
import type { IncidentRecord } from "../../src/store/port.js";
import type { NodeView } from "../../src/supervisor/supervisor.js";
import {
  hasTorch,
  ranks,
  ServerProcess,
  sleep,
  submit,
  tempHome,
  useServer,
  waitFor,
  waitForEnd,
  waitForStep,
  writeCluster,
} from "./harness.js";

/** Strikes: who made them, and that they decay; victims of a culprit with real gloo wording. */

const fixtures = path.join(packageRoot, "test", "fixtures", "ranks");
const q = (s: string) => JSON.stringify(s);

interface JobWithEvidence {
  state: string;
  incidents: Array<IncidentRecord>;
}

describe("strikes name their incidents and decay", () => {
  const home = tempHome("strikes");
  const cluster = ["strikeWindowSeconds: 6", "pools:", "  - name: unstable", "    nodes: 2"].join("\n");
  const ctx = { home, server: new ServerProcess(home, writeCluster(home, cluster)), client: makeClient("", null) };
  beforeAll(async () => {
    ctx.client = await ctx.server.start();
  }, 60_000);
  afterAll(() => ctx.server.stop());

  it("a killed rank strikes its node for strikeWindowSeconds; a software bug strikes nothing", async () => {
    const yaml = (name: string, script: string, extra: string[] = []) =>
      [
        `name: ${name}`,
        "pools: [unstable]",
        `command: ["{python}", ${q(path.join(fixtures, script))}, --steps, "400", --step-sleep, "0.05", ${extra.join(", ")}]`.replace(
          ", ]",
          "]",
        ),
        `workdir: ${q(ctx.home)}`,
        "recovery: { maxRestarts: 1, backoffSeconds: 0.1, strikesBeforeCordon: 2, graceSeconds: 1 }",
      ].join("\n");

    // A bug: no strike anywhere.
    const buggy = await submit(ctx.client, ctx.home, "buggy", yaml("buggy", "crash.py", ['"--at-step"', '"2"']));
    await waitForEnd(ctx.client, buggy, 60_000);
    let nodes = await ctx.client.get<NodeView[]>("/api/nodes");
    expect(nodes.every((n) => n.strikes === 0 && n.strikeLog.length === 0)).toBe(true);

    // An infrastructure failure: a rank killed from outside.
    const id = await submit(ctx.client, ctx.home, "victim", yaml("victim", "ok.py"));
    await waitForStep(ctx.client, id, 3);
    const [r0] = await ranks(ctx.client, id);
    await ctx.client.post(`/api/jobs/${id}/chaos`, { action: "kill-rank", rank: 0 });
    const struck = await waitFor("a strike", async () => {
      const list = await ctx.client.get<NodeView[]>("/api/nodes");
      return list.find((n) => n.strikes > 0);
    });
    expect(struck.name).toBe(r0!.node);
    expect(struck.strikeWindowSeconds).toBe(6);
    expect(struck.strikeLog).toEqual([{ jobId: id, incident: 1, cause: "killed", t: expect.any(Number) }]);
    await ctx.client.post(`/api/jobs/${id}/cancel`);

    // After the window the strike no longer counts, and no longer shows.
    await sleep(Math.max(0, struck.strikeLog[0]!.t + 6_500 - Date.now()));
    nodes = await ctx.client.get<NodeView[]>("/api/nodes");
    expect(nodes.find((n) => n.name === struck.name)).toMatchObject({ strikes: 0, strikeLog: [] });
  }, 120_000);
});

describe.skipIf(!hasTorch)("victims with real gloo wording", () => {
  const ctx = useServer("victims");

  it("a peer that loses its gloo connection after the culprit is killed is listed as a victim", async () => {
    const yaml = [
      "name: pair",
      "pools: [unstable]",
      "procsPerNode: 2",
      `command: ["{python}", ${q(path.join(fixtures, "gloo_pair.py"))}, --steps, "2000"]`,
      `workdir: ${q(ctx.home)}`,
      "recovery: { maxRestarts: 0, graceSeconds: 2 }",
    ].join("\n");
    const id = await submit(ctx.client, ctx.home, "pair", yaml);
    await waitForStep(ctx.client, id, 5);
    await ctx.client.post(`/api/jobs/${id}/chaos`, { action: "kill-rank", rank: 1 });
    const end = await waitForEnd(ctx.client, id, 60_000);
    const job = await ctx.client.get<JobWithEvidence>(`/api/jobs/${id}`);
    expect(end.state).toBe("FAILED");
    const [incident] = job.incidents;
    expect(incident).toMatchObject({ culpritRank: 1, cause: "killed" });
    expect(incident!.evidence.victims).toEqual([0]);
    const { text } = await ctx.client.get<{ text: string }>(`/api/jobs/${id}/logs?rank=0`);
    const [detail] = incident!.evidence.victimDetail as Array<{ rank: number; how: string }>;
    if (/Connection (reset|closed) by peer/.test(text)) expect(detail!.how).toContain("reported a lost peer");
    expect(incident!.summary).not.toContain("only rank to fail");
  }, 120_000);
});
