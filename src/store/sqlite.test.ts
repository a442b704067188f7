import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { SqliteStore } from "./sqlite.js";
import type { CompiledJobSpec } from "../core/spec.js";

const require = createRequire(import.meta.url);
const spec = { name: "j", steps: 10 } as unknown as CompiledJobSpec;
const file = () => path.join(mkdtempSync(path.join(os.tmpdir(), "sy-store-")), "db.sqlite");

describe("SQLite store", () => {
  it("keeps jobs, attempts, ranks and steps across a reopen", async () => {
    const f = file();
    const a = new SqliteStore(f);
    await a.createJob({ id: "j-1", name: "j", spec, state: "PENDING", createdAt: 1 });
    await a.createAttempt({
      jobId: "j-1",
      n: 1,
      state: "RUNNING",
      pool: "p",
      nodes: ["p-0"],
      masterPort: 1234,
      dir: "/d",
      resumeFrom: null,
      resumeStep: null,
      startedAt: 2,
      endedAt: null,
      reason: null,
    });
    await a.upsertRank({
      jobId: "j-1",
      attempt: 1,
      rank: 0,
      node: "p-0",
      pid: 42,
      startTicks: 7,
      logPath: "/l",
      reportPath: "/r",
      reportOffset: 0,
      exitCode: null,
      exitSignal: null,
      exitedAt: null,
    });
    await a.ingestReports("j-1", 1, 0, 120, [
      { jobId: "j-1", attempt: 1, rank: 0, step: 1, t: 10, loss: 3.5, tokens: 64, computeS: 0.1 },
      { jobId: "j-1", attempt: 1, rank: 0, step: 2, t: 11, loss: 3.1, tokens: 64, computeS: 0.1 },
    ]);
    await a.close();

    const b = new SqliteStore(f);
    expect((await b.getJob("j"))?.id).toBe("j-1");
    expect((await b.listRanks("j-1", 1))[0]).toMatchObject({ pid: 42, startTicks: 7, reportOffset: 120 });
    expect(await b.lastStep("j-1")).toMatchObject({ step: 2, loss: 3.1 });
    // Re-ingesting the same lines (a server that died before saving its offset) does not duplicate steps.
    await b.ingestReports("j-1", 1, 0, 120, [
      { jobId: "j-1", attempt: 1, rank: 0, step: 2, t: 11, loss: 3.1, tokens: 64, computeS: 0.1 },
    ]);
    expect(await b.listSteps("j-1")).toHaveLength(2);
    await b.close();
  });

  it("keeps strikes and cordons when the cluster is synced again, and drops nodes it no longer declares", async () => {
    const s = new SqliteStore(file());
    await s.syncNodes([{ name: "n0", pool: "p", devices: 2 }]);
    await s.addStrike({ node: "n0", t: 1, jobId: "j-1", incidentId: 1, cause: "device" });
    await s.addStrike({ node: "n0", t: 2, jobId: "j-2", incidentId: 5, cause: "hang" });
    await s.updateNode("n0", { cordoned: true, reason: "ECC" });
    await s.syncNodes([{ name: "n0", pool: "p", devices: 4 }]);
    expect(await s.listNodes()).toEqual([
      { name: "n0", pool: "p", devices: 4, cordoned: true, strikes: 2, reason: "ECC" },
    ]);
    await s.close();
  });

  it("survives a SIGKILL of a writer mid-transaction: committed rows stay, the torn one is gone", async () => {
    const f = file();
    await new SqliteStore(f).close();
    // A child process commits 50 events, then dies by SIGKILL inside an open transaction.
    const script = `
      const Database = require(${JSON.stringify(require.resolve("better-sqlite3"))});
      const db = new Database(${JSON.stringify(f)});
      db.pragma("journal_mode = WAL"); db.pragma("synchronous = FULL");
      const ins = db.prepare("INSERT INTO events (job_id, t, kind, message, data) VALUES ('j', 1, 'k', 'm', '{}')");
      for (let i = 0; i < 50; i++) ins.run();
      db.exec("BEGIN"); for (let i = 0; i < 50; i++) ins.run();
      process.kill(process.pid, "SIGKILL");`;
    try {
      execFileSync(process.execPath, ["-e", script], { stdio: "ignore" });
    } catch {
      // killed, as intended
    }
    const s = new SqliteStore(f);
    expect(await s.listEvents({ jobId: "j" })).toHaveLength(50);
    await s.close();
  });

  it("counts strikes within a window, names their incidents, and clears them on uncordon", async () => {
    const s = new SqliteStore(file());
    await s.syncNodes([
      { name: "n0", pool: "p", devices: 1 },
      { name: "n1", pool: "p", devices: 1 },
    ]);
    await s.addStrike({ node: "n0", t: 1_000, jobId: "a", incidentId: 3, cause: "killed" });
    await s.addStrike({ node: "n0", t: 90_000, jobId: "b", incidentId: 9, cause: "hang" });
    const strikes = async (since: number) =>
      Object.fromEntries((await s.listNodes({ strikesSince: since })).map((n) => [n.name, n.strikes]));
    expect(await strikes(0)).toEqual({ n0: 2, n1: 0 });
    expect(await strikes(50_000)).toEqual({ n0: 1, n1: 0 });
    expect(await s.listStrikes({ since: 50_000 })).toEqual([
      { id: 2, node: "n0", t: 90_000, jobId: "b", incidentId: 9, cause: "hang" },
    ]);
    await s.updateNode("n0", { cordoned: false, strikes: 0, reason: null });
    expect(await strikes(0)).toEqual({ n0: 0, n1: 0 });
    await expect(s.updateNode("n0", { strikes: 3 })).rejects.toThrow(/addStrike/);
    await s.close();
  });

  it("bounds stored steps per rank while the rank's newest step stays exact, and keeps cursors", async () => {
    const s = new SqliteStore(file(), { stepRetention: { minSpacingMs: 100, maxRowsPerRank: 40 } });
    await s.createJob({ id: "j-1", name: "j", spec, state: "RUNNING", createdAt: 0 });
    await s.upsertRank({
      jobId: "j-1",
      attempt: 1,
      rank: 0,
      node: "n",
      pid: 1,
      startTicks: null,
      logPath: "/l",
      reportPath: "/r",
      reportOffset: 0,
      exitCode: null,
      exitSignal: null,
      exitedAt: null,
    });
    // 10,000 steps 10 ms apart, ingested in chunks of 250 (a flood).
    for (let c = 0; c < 40; c++) {
      const samples = Array.from({ length: 250 }, (_, i) => {
        const step = c * 250 + i + 1;
        return { jobId: "j-1", attempt: 1, rank: 0, step, t: step * 10, loss: 1, tokens: null, computeS: null };
      });
      await s.ingestReports("j-1", 1, 0, { reportOffset: (c + 1) * 1000, logOffset: c, logT: c * 5 }, samples);
    }
    const rows = await s.listSteps("j-1");
    expect(rows.length).toBeLessThanOrEqual(40 + 1);
    expect(rows[0]).toMatchObject({ step: 1, t: 10 });
    expect(rows[rows.length - 1]).toMatchObject({ step: 10_000, t: 100_000 });
    expect(await s.lastStep("j-1")).toMatchObject({ step: 10_000 });
    expect(await s.rankProgress("j-1", 1)).toEqual([{ rank: 0, lastT: 100_000, lastStep: 10_000 }]);
    expect((await s.listRanks("j-1", 1))[0]).toMatchObject({ reportOffset: 40_000, logOffset: 39, logT: 195 });
    await s.close();

    // At an ordinary pace (a pass holds at most `burst` samples) every step is kept, however close in time.
    const calm = new SqliteStore(file());
    await calm.createJob({ id: "j-2", name: "j", spec, state: "RUNNING", createdAt: 0 });
    for (let step = 1; step <= 30; step++) {
      const sample = { jobId: "j-2", attempt: 1, rank: 0, step, t: step * 10, loss: 1, tokens: null, computeS: null };
      await calm.ingestReports("j-2", 1, 0, { reportOffset: step * 100 }, [sample]);
    }
    expect((await calm.listSteps("j-2")).map((r) => r.step)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    await calm.close();
  });

  it("answers a job's newest step from an index, not by scanning its steps", async () => {
    const s = new SqliteStore(file());
    const plan = (
      s as unknown as { db: { prepare(q: string): { all(...a: unknown[]): Array<{ detail: string }> } } }
    ).db
      .prepare("EXPLAIN QUERY PLAN SELECT * FROM steps WHERE job_id = ? ORDER BY attempt DESC, step DESC, rank LIMIT 1")
      .all("j")
      .map((r) => r.detail)
      .join("; ");
    expect(plan).toContain("steps_newest");
    expect(plan).not.toContain("TEMP B-TREE");
    await s.close();
  });
});
