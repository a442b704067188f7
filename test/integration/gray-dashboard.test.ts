import path from "node:path";
import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/cli/client.js";
import { packageRoot } from "../../src/paths.js";
import type { JobReport } from "../../src/supervisor/report.js";
import { chromiumPath, noChromium } from "../requirements.js";
import { job, ServerProcess, submit, tempHome, waitForEnd, writeCluster } from "./harness.js";

/**
 * The dashboard's view of a gray failure, in a real browser over a real server: a straggler (the slow.py fixture:
 * rank 1 computes 5x slower from step 60 of the first attempt) on a local pool whose network probe is switched on, so
 * the incident carries both tables: the probe's pairs (loopback, healthy) and the ranks' compute time per step. The
 * incident row is followed by its evidence, and the job's summary says how much time the ledger charged as degraded.
 */

const fixtures = path.join(packageRoot, "test", "fixtures", "ranks");

describe.skipIf(noChromium)("gray failures in the dashboard", () => {
  const home = tempHome("gray-web");
  const server = new ServerProcess(
    home,
    writeCluster(
      home,
      [
        "pools:",
        "  - name: p",
        "    accelerator: { vendor: cpu }",
        "    nodes: 3",
        "    devicesPerNode: 1",
        "    health: { networkProbe: true }",
        "",
      ].join("\n"),
    ),
  );
  let client: ApiClient;
  let browser: Browser;
  let id: string;

  beforeAll(async () => {
    client = await server.start();
    id = await submit(
      client,
      home,
      "gray-web",
      [
        "name: gray-web",
        "nodes: 2",
        "procsPerNode: 1",
        `command: ["{python}", ${JSON.stringify(path.join(fixtures, "slow.py"))}, --steps, "160", --step-sleep, "0.1", --at-step, "60", --slow-rank, "1", --factor, "5", --only-attempt, "1", --ckpt-every, "20"]`,
        `workdir: ${JSON.stringify(home)}`,
        "steps: 160",
        "recovery: { backoffSeconds: 0.5 }",
        "detection: { slowdown: { windowSeconds: 4, sustainSeconds: 2, warmupSteps: 5 } }",
      ].join("\n"),
    );
    const end = await waitForEnd(client, id, 240_000);
    expect(end.state, server.output.slice(-3000)).toBe("SUCCEEDED");
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
    });
  }, 300_000);

  afterAll(async () => {
    await browser?.close();
    await server.stop();
  });

  it("the incident shows the probe's pair table, the ranks' compute table with the expected time, and the degraded time", async () => {
    const view = await job(client, id);
    const incident = view.incidents[0] as unknown as {
      cause: string;
      culpritNode: string;
      evidence: { network: { table: unknown[] } };
    };
    expect(incident.cause, JSON.stringify(incident)).toBe("straggler");
    const report = await client.get<JobReport>(`/api/jobs/${id}/report`);
    expect(report.ledger.totals.degraded).toBeGreaterThan(0);

    const page = await browser.newPage({ viewport: { width: 1280, height: 1200 } });
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`${server.dashboardUrl()}#${id}`);
    await page.locator("#job-title", { hasText: id }).waitFor();
    await page.locator(".gray-evidence").waitFor();
    expect(await page.locator("#job-summary").textContent()).toMatch(/degraded \d+\.\ds \(\d+\.\d% of the wall time\)/);
    const box = page.locator(".gray-evidence").first();
    const text = (await box.textContent()) ?? "";
    expect(text).toMatch(/slowdown \d+\.\d\dx: step \d+\.\d\ds against a baseline of \d+\.\d\ds/);
    expect(text).toMatch(/degraded time charged: \d+\.\ds/);
    expect(text).toMatch(/decision: continuing costs .*: evict/);
    // The probe's table: every pair of the attempt's hosts (plus the spare the probe adds to a pair), in Gbit/s.
    const pairs = box.locator("table.gray-network tbody tr");
    expect(await pairs.count()).toBe(incident.evidence.network.table.length);
    expect(await pairs.first().locator("td").first().textContent()).toMatch(/^p-\d -> p-\d$/);
    expect(await pairs.first().locator("td").nth(1).textContent()).toMatch(/^\d+\.\d{3}$/);
    // The compute table: rank 1 (the straggler) marked, on the host the incident names, against the expected time.
    expect(text).toMatch(/compute time per step \(expected 0\.\d{3}s\)/);
    const slowRow = box.locator("table.gray-compute tbody tr.gray-slow");
    expect(await slowRow.count()).toBe(1);
    expect(await slowRow.locator("td").first().textContent()).toBe("1");
    expect(await slowRow.locator("td").nth(1).textContent()).toBe(incident.culpritNode);
    expect(Number(await slowRow.locator("td").nth(2).textContent())).toBeGreaterThan(0.3);
    expect(await box.locator("table.gray-compute tbody tr").count()).toBe(2);
    expect(errors).toEqual([]);
    await page.close();
  }, 60_000);
});
