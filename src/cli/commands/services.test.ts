import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it, vi } from "vitest";
import type { ServiceSummary } from "../../supervisor/services.js";
import { main } from "../main.js";
import { formatDescribe, formatServices, formatServingLedger, type Described } from "./services.js";

const t0 = Date.UTC(2026, 0, 2, 3, 4, 5);

const summary: ServiceSummary = {
  name: "chargpt",
  aliases: ["char-gpt"],
  file: "/srv/services.yaml",
  fromJob: "chargpt",
  target: { path: "/h/checkpoints/chargpt/chargpt-abc/step-00000040", step: 40, jobId: "chargpt-abc" },
  pools: [
    { name: "local-ascend", desired: 2, ready: 1, engine: "vllm-ascend", backends: 0 },
    { name: "local-nvidia", desired: 0, ready: 0, engine: null, backends: 1 },
  ],
  desired: 2,
  ready: 1,
  state: "rolling",
  note: null,
  createdAt: t0,
  updatedAt: t0,
};

async function runCli(args: string[]): Promise<{ code: number; err: string }> {
  const home = mkdtempSync(path.join(tmpdir(), "sy-svc-cli-"));
  const err: string[] = [];
  const error = vi.spyOn(console, "error").mockImplementation((s: string) => void err.push(`${s}\n`));
  const stderr = vi.spyOn(process.stderr, "write").mockImplementation((s) => (err.push(String(s)), true));
  try {
    process.exitCode = undefined;
    return { code: await main(["node", "switchyard", "--home", home, ...args]), err: err.join("") };
  } finally {
    process.exitCode = undefined;
    error.mockRestore();
    stderr.mockRestore();
  }
}

describe("services CLI", () => {
  it("lists services with ready/desired per pool, external backends and the checkpoint served", () => {
    const lines = formatServices([summary]).split("\n");
    expect(lines[0]).toMatch(/^SERVICE\s+STATE\s+READY\s+POOLS\s+CHECKPOINT/);
    expect(lines[1]).toMatch(
      /chargpt\s+rolling\s+1\/2\s+local-ascend:1\/2 local-nvidia:0\/0\+1 ext\s+step 40 of chargpt-abc/,
    );
    expect(formatServices([])).toMatch(/no services \(deploy one: switchyard deploy services.yaml\)/);
  });

  it("describe shows each replica's job, pool, node, URL (only while it serves), step and restarts", () => {
    const d: Described = {
      service: summary,
      spec: {
        name: "chargpt",
        aliases: ["char-gpt"],
        file: "/srv/services.yaml",
        workdir: "/srv",
        pools: [
          {
            name: "local-ascend",
            priority: 0,
            queueThreshold: 16,
            backends: [],
            replicas: {
              count: 2,
              engine: "vllm-ascend",
              command: ["python3", "serve.py"],
              port: 8101,
              host: "127.0.0.1",
              env: {},
              readyTimeoutS: 120,
              fromJob: "chargpt",
              drainSeconds: 5,
            },
          },
        ],
      },
      replicas: [
        {
          jobId: "svc-chargpt-local-ascend-0-aaa",
          service: "chargpt",
          slot: "local-ascend-0",
          pool: "local-ascend",
          state: "draining",
          readyAttempt: 1,
          url: "http://127.0.0.1:8101",
          checkpoint: "/c/step-00000020",
          checkpointStep: 20,
          drainingSince: t0,
          createdAt: t0,
          updatedAt: t0,
          jobState: "RUNNING",
          restarts: 1,
          attempt: 2,
          node: "local-ascend-0",
          runningPool: "local-ascend",
          reason: null,
        },
        {
          jobId: "svc-chargpt-local-ascend-0-bbb",
          service: "chargpt",
          slot: "local-ascend-0",
          pool: "local-ascend",
          state: "starting",
          readyAttempt: null,
          url: "http://127.0.0.1:40001",
          checkpoint: null,
          checkpointStep: null,
          drainingSince: null,
          createdAt: t0,
          updatedAt: t0,
          jobState: "STARTING",
          restarts: 0,
          attempt: 1,
          node: "local-ascend-1",
          runningPool: "local-ascend",
          reason: null,
        },
      ],
    };
    const text = formatDescribe(d, t0 + 1000);
    expect(text).toContain(
      "model       newest verified checkpoint of job chargpt: /h/checkpoints/chargpt/chargpt-abc/step-00000040 (step 40)",
    );
    expect(text).toContain(
      "pool        local-ascend (priority 0): 2 replica(s), engine vllm-ascend, ready within 120 s, drain 5 s",
    );
    const rows = text.split("\n").filter((l) => l.startsWith("local-ascend-0"));
    expect(rows[0]).toMatch(
      /svc-chargpt-local-ascend-0-aaa\s+draining\s+local-ascend\s+local-ascend-0\s+http:\/\/127.0.0.1:8101\s+20\s+1/,
    );
    // A replica that is not ready shows no URL: nothing routes to it.
    expect(rows[1]).not.toContain("40001");
  });

  it("the serving ledger: replica-seconds by state per pool and the share serving", () => {
    const text = formatServingLedger([{ pool: "local-ascend", serving: 90, starting: 6, down: 4 }]);
    expect(text).toMatch(/local-ascend\s+90.0\s+6.0\s+4.0\s+90.0%/);
  });

  it("a bad replica count is exit 2 with the fix, before any server is asked", async () => {
    const r = await runCli(["scale", "chargpt", "two"]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/replica count must be a whole number \(fix: e.g. switchyard scale chargpt 2\)/);
  });

  it("report without a job asks for one or --serving (exit 2)", async () => {
    const r = await runCli(["report"]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/report needs a job id or name, or --serving \(fix: e.g. switchyard report chargpt\)/);
  });

  it("deploy of a file that does not exist is exit 2 naming it", async () => {
    const r = await runCli(["deploy", "/nonexistent/services.yaml"]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/cannot read services file \/nonexistent\/services.yaml/);
  });

  it("deploy --dry-run compares with the running server and never starts one: none running is exit 3", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "sy-svc-dry-"));
    const file = path.join(dir, "services.yaml");
    writeFileSync(file, "services: []\n");
    const r = await runCli(["deploy", file, "--dry-run"]);
    expect(r.code).toBe(3);
    expect(r.err).toMatch(/no switchyard server is running/);
  });

  it("services with no server running is exit 3 with the fix", async () => {
    const r = await runCli(["services"]);
    expect(r.code).toBe(3);
    expect(r.err).toMatch(/no switchyard server is running .*fix: start it with `switchyard up`/);
  });
});
