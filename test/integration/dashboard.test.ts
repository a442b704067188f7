import path from "node:path";
import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/cli/client.js";
import { packageRoot } from "../../src/paths.js";
import { chromiumPath, noChromium } from "../requirements.js";
import { hasTorch, ServerProcess, submit, tempHome, waitForEnd, writeCluster } from "./harness.js";

const fixtures = path.join(packageRoot, "test", "fixtures", "ranks");

describe.skipIf(noChromium || !hasTorch)("web dashboard in a real browser", () => {
  const home = tempHome("web");
  const server = new ServerProcess(home, writeCluster(home));
  let client: ApiClient;
  let browser: Browser;
  let jobId: string;
  let secondId: string;

  const crashing = (name: string) =>
    [
      `name: ${name}`,
      "procsPerNode: 2",
      `command: ["{python}", ${JSON.stringify(path.join(fixtures, "crash.py"))}, --steps, "12", --at-step, "7", --ckpt-every, "3", --rank-only, "0", --only-attempt, "1"]`,
      `workdir: ${JSON.stringify(home)}`,
      "steps: 12",
      "recovery: { backoffSeconds: 0.1 }",
    ].join("\n");

  beforeAll(async () => {
    client = await server.start();
    jobId = await submit(client, home, "webjob", crashing("webjob"));
    const end = await waitForEnd(client, jobId, 60_000);
    expect(end.state).toBe("SUCCEEDED");
    // A second job with an incident: the store's incident id is 2, the job's own number #1.
    secondId = await submit(client, home, "webjob2", crashing("webjob2"));
    expect((await waitForEnd(client, secondId, 60_000)).state).toBe("SUCCEEDED");
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
      ],
    });
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await server.stop();
  });

  it("lists the job, and its page shows progress, the loss chart, the ledger and the incident", async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(server.dashboardUrl());
    // Lands on the latest job's page without a click.
    await page.locator("#job-title", { hasText: secondId }).waitFor();
    await page.locator("#incidents tbody tr").first().waitFor();
    expect(await page.locator("#incidents tbody tr td").first().textContent()).toBe("#1");
    expect(await page.locator("#events").textContent()).toContain("#1 software");
    const row = page.locator(`#jobs tr[data-job="${jobId}"]`);
    await row.waitFor();
    await expect(row.locator("td").nth(1).textContent()).resolves.toBe("SUCCEEDED");
    await expect(row.locator("td").nth(2).textContent()).resolves.toBe("12/12");
    await row.click();
    await page.locator("#job-title", { hasText: jobId }).waitFor();
    await page.locator("#loss-chart canvas").waitFor();
    await page.locator("#incidents tbody tr").first().waitFor();
    const incident = await page.locator("#incidents tbody tr").first().textContent();
    expect(incident).toContain("software");
    expect(incident).toContain("rank 0");
    const ledgerParts = await page.locator("#ledger div").count();
    expect(ledgerParts).toBeGreaterThanOrEqual(3);
    expect(await page.locator(".legend").textContent()).toContain("productive");
    expect(await page.locator("#job-summary").textContent()).toContain("1 restart(s)");
    expect(await page.locator("#nodes tbody tr").count()).toBe(3);
    expect(await page.locator("#incidents tbody tr td").first().textContent()).toBe("#1");
    expect(errors).toEqual([]);
  }, 60_000);

  it("lands on the running job's page, and follows a new one until the user picks a job", async () => {
    const slow = (name: string) =>
      [
        `name: ${name}`,
        "procsPerNode: 2",
        `command: ["{python}", ${JSON.stringify(path.join(fixtures, "ok.py"))}, --steps, "2000", --step-sleep, "0.05"]`,
        `workdir: ${JSON.stringify(home)}`,
      ].join("\n");
    const running = await submit(client, home, "webrun", slow("webrun"));
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    try {
      await page.goto(server.dashboardUrl());
      await page.locator("#job-title", { hasText: running }).waitFor();
      // A newer finished job does not take the landing view from the running one.
      const finished = await submit(client, home, "webjob3", crashing("webjob3"));
      expect((await waitForEnd(client, finished, 60_000)).state).toBe("SUCCEEDED");
      await page.locator(`#jobs tr[data-job="${finished}"]`).waitFor();
      expect(await page.locator("#job-title").textContent()).toBe(running);
      // A pick pins the view: it stays on the finished job while the other runs.
      await page.locator(`#jobs tr[data-job="${finished}"]`).click();
      await page.locator("#job-title", { hasText: finished }).waitFor();
      await page.waitForTimeout(2500);
      expect(await page.locator("#job-title").textContent()).toBe(finished);
    } finally {
      await page.close();
      await client.post(`/api/jobs/${running}/cancel`);
    }
  }, 90_000);
});
