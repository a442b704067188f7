import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { makeClient } from "../client.js";
import { main } from "../main.js";
import { TRAFFIC_REPORT_VERSION } from "../../gateway/report.js";
import { readToken } from "../../server/config.js";
import { startServer, type RunningServer } from "../../server/main.js";
import type { TrafficView } from "../../server/traffic.js";
import { formatRequestsLedger, formatTrafficLine, lastMinuteTraffic } from "./traffic.js";

const view: TrafficView = {
  requests: 150,
  reqPerS: 2.5,
  answered: 146,
  failed: 3,
  clientError: 1,
  clientClosed: 0,
  cut: 2,
  caught: 4,
  saved: 4,
  retries: 5,
  failovers: 1,
  spillovers: 0,
  errors: { connect: 3, cut: 2 },
  ttftP50Ms: 12.4,
  ttftP99Ms: 1830,
};

describe("traffic in the CLI", () => {
  it("the describe line: req/s, TTFT p50/p99, failed and cut, errors by reason, failovers, saved", () => {
    expect(formatTrafficLine(view)).toBe(
      "traffic     last minute: 2.50 req/s (150 requests), TTFT p50 12 ms p99 1.83 s, 3 failed (2 cut mid-answer), " +
        "errors connect 3, cut 2, failovers 1, saved by failover 4",
    );
    expect(formatTrafficLine({ ...view, requests: 912.5, failed: 0, cut: 0 })).toContain("(913 requests)");
    expect(formatTrafficLine(null)).toMatch(/none reported by a gateway in the last minute/);
  });

  it("the ledger: answered / failed per service and pool, saved by failover per service", () => {
    const text = formatRequestsLedger({
      requests: [
        { service: "chat", pool: "ascend", answered: 90, failed: 2, incomplete: 1, clientError: 0, clientClosed: 3 },
        { service: "chat", pool: "nvidia", answered: 10, failed: 0, incomplete: 0, clientError: 0, clientClosed: 0 },
      ],
      saved: [{ service: "chat", saved: 4, retries: 5, failovers: 1 }],
    });
    expect(text).toMatch(/chat\s+ascend\s+90\s+2\s+1\s+0\s+3/);
    expect(text).toMatch(/chat\s+nvidia\s+10\s+0/);
    expect(text).toMatch(/chat\s+4\s+5\s+1/);
    expect(formatRequestsLedger({ requests: [], saved: [] })).toMatch(/none reported yet/);
  });

  it("gateway --name: a name fit for reports, and only with --control-plane (exit 2 with the fix)", async () => {
    const home = mkdtempSync(path.join(os.tmpdir(), "sy-cli-gwname-"));
    const run = async (args: string[]): Promise<{ code: number; err: string }> => {
      const err: string[] = [];
      const error = vi.spyOn(console, "error").mockImplementation((m: string) => void err.push(`${m}\n`));
      const stderr = vi.spyOn(process.stderr, "write").mockImplementation((m) => (err.push(String(m)), true));
      try {
        process.exitCode = undefined;
        return { code: await main(["node", "switchyard", "--home", home, ...args]), err: err.join("") };
      } finally {
        process.exitCode = undefined;
        error.mockRestore();
        stderr.mockRestore();
      }
    };
    const bad = await run(["gateway", "--control-plane", "http://127.0.0.1:1", "--name", "edge 1/eu"]);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--name.*1-128 characters of A-Z a-z 0-9/);
    const alone = await run(["gateway", "examples/gateway/local.yaml", "--name", "edge-1", "--check"]);
    expect(alone.code).toBe(2);
    expect(alone.err).toMatch(/--name is the gateway's name in its traffic reports.*fix: pass --control-plane URL/);
  });

  describe("against the real server", () => {
    let server: RunningServer | undefined;
    afterAll(async () => {
      await server?.close();
    });

    it("lastMinuteTraffic reads the service's last minute, null when nothing was reported", async () => {
      const home = mkdtempSync(path.join(os.tmpdir(), "sy-cli-traffic-"));
      server = await startServer({ home, host: "127.0.0.1", port: 0, version: "test" });
      const client = makeClient(server.info.url, readToken(home)!);
      expect(await lastMinuteTraffic(client, "chat")).toBeNull();
      const now = Date.now();
      const report = {
        v: TRAFFIC_REPORT_VERSION,
        gateway: "edge-1",
        instance: "instance-0001",
        startedAt: now - 10_000,
        at: now,
        ttftLe: [0.1],
        pools: [
          {
            service: "chat",
            pool: "ascend",
            answered: 30,
            clientError: 0,
            failed: 0,
            incomplete: 0,
            clientClosed: 0,
            errors: {},
            ttft: [30, 30],
          },
        ],
        services: [],
        rejected: {},
      };
      await client.post("/api/services/traffic", report);
      const t = await lastMinuteTraffic(client, "chat");
      expect(t?.answered).toBe(30);
      expect(t?.ttftP50Ms).toBeCloseTo(50, 3);
      expect(await lastMinuteTraffic(client, "other")).toBeNull();
    });
  });
});
