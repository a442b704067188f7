/**
 * Drills do not teach the checkpoint advisor (no PyTorch: /bin/sh ranks that print a step every 50 ms, on the default
 * local pool, through an in-process server). A job gets a `chaos kill-rank`, then a real SIGKILL of its rank from
 * outside (what a chip or the OOM killer does), then a `chaos hang-rank`: three incidents, two injected. The report's
 * MTBF is the running time over the one real failure and says two injected faults were left out; the ledger still
 * charges all three under their cause and marks the injected ones; every incident still struck the node.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeClient, type ApiClient } from "../../src/cli/client.js";
import { formatReport } from "../../src/cli/commands/report.js";
import { readToken } from "../../src/server/config.js";
import { startServer, type RunningServer } from "../../src/server/main.js";
import type { RankRecord } from "../../src/store/port.js";
import type { JobReport } from "../../src/supervisor/report.js";

const home = mkdtempSync(path.join(os.tmpdir(), "sy-injected-"));
let server: RunningServer;
let client: ApiClient;

beforeAll(async () => {
  server = await startServer({ home, host: "127.0.0.1", port: 0, version: "test" });
  client = makeClient(server.info.url, readToken(home) ?? "");
});
afterAll(async () => {
  await server.close();
  rmSync(home, { recursive: true, force: true });
});

interface View {
  state: string;
  attempts: Array<{ n: number }>;
  incidents: Array<{ cause: string }>;
  last: { attempt: number; step: number } | null;
}

async function waitFor<T>(what: string, probe: () => Promise<T | null | false>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("faults injected by chaos and the interval advisor", () => {
  it("MTBF from the real failure only; injected ones charged, marked, counted as left out, and still struck", async () => {
    const work = path.join(home, "work");
    mkdirSync(work, { recursive: true });
    const yaml = [
      "name: drill",
      `workdir: ${JSON.stringify(work)}`,
      `command: ["/bin/sh", "-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo step $i; sleep 0.05; done"]`,
      String.raw`progress: { regex: 'step (?<step>\d+)' }`,
      "detection: { hangMinSeconds: 2 }",
      "recovery: { maxRestarts: 10, backoffSeconds: 0.1, strikesBeforeCordon: 100, graceSeconds: 1 }",
    ].join("\n");
    const file = path.join(home, "drill.yaml");
    writeFileSync(file, yaml);
    const { id } = await client.post<{ id: string }>("/api/jobs", { yaml, file });
    const view = () => client.get<View>(`/api/jobs/${id}`);
    const stepping = (attempt: number) =>
      waitFor(`attempt ${attempt} stepping`, async () => {
        const j = await view();
        return j.last !== null && j.last.attempt === attempt && j.last.step >= 5 && j;
      });

    await stepping(1);
    await client.post(`/api/jobs/${id}/chaos`, { action: "kill-rank", rank: 0 });
    await stepping(2);
    // A real fault: the rank's process killed from outside, not through chaos.
    const { ranks } = await client.get<{ ranks: RankRecord[] }>(`/api/jobs/${id}/ranks`);
    const pid = ranks.find((r) => r.exitedAt === null)?.rankPid ?? ranks[0]?.pid;
    expect(pid).toBeGreaterThan(1);
    process.kill(pid!, "SIGKILL");
    await stepping(3);
    await client.post(`/api/jobs/${id}/chaos`, { action: "hang-rank", rank: 0 });
    await stepping(4);
    await client.post(`/api/jobs/${id}/cancel`, {});
    await waitFor("the job to end", async () => (await view()).state === "CANCELLED");

    expect((await view()).incidents.map((i) => i.cause)).toEqual(["killed", "killed", "hang"]);
    const report = await client.get<JobReport>(`/api/jobs/${id}/report`);
    const { ledger, advice } = report;
    expect(ledger.incidents.map((i) => [i.cause, i.injected])).toEqual([
      ["killed", "kill-rank"],
      ["killed", null],
      ["hang", "hang-rank"],
    ]);
    const running = ledger.totals.productive + ledger.totals.degraded + ledger.totals.lost + ledger.totals.checkpoint;
    expect(running).toBeGreaterThan(0);
    expect(advice.mtbfMs).toBe(running); // one real failure, not three
    expect(advice.injectedLeftOut).toBe(2);
    // The ledger still charges what the drills cost, under their cause.
    for (const i of ledger.incidents) expect(i.costMs).toBeGreaterThan(0);
    const cost = (cause: string) => ledger.incidents.filter((i) => i.cause === cause).reduce((a, i) => a + i.costMs, 0);
    expect(ledger.byCause).toEqual({ killed: cost("killed"), hang: cost("hang") });
    const text = formatReport(report);
    expect(text).toMatch(/#1 +killed \(injected\) /);
    expect(text).toMatch(/#2 +killed +rank/);
    expect(text).toMatch(/#3 +hang \(injected\) /);
    expect(text).toMatch(/^advisor: measured MTBF .* \(2 injected faults not counted\)/m);

    // Strikes are not the advisor's business: every incident struck the node, drills included.
    const nodes = await client.get<Array<{ name: string; strikes: number }>>("/api/nodes");
    expect(nodes.reduce((a, n) => a + n.strikes, 0)).toBe(3);
  }, 90_000);
});
