import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { MemoryStore } from "./memory.js";
import type { Store } from "./port.js";
import { SqliteStore, type StepRetention } from "./sqlite.js";
import type { CompiledJobSpec } from "../core/spec.js";

const require = createRequire(import.meta.url);
const spec = { name: "j", steps: 10 } as unknown as CompiledJobSpec;
const file = () => path.join(mkdtempSync(path.join(os.tmpdir(), "sy-store-")), "db.sqlite");

/**
 * The adapters of the Store port, each run through the same suite. `reopen` opens a second store over the same
 * contents, as a restarted server does (SQLite: the same file; memory: the same tables).
 */
interface Adapter {
  name: string;
  open(opts?: { stepRetention?: Partial<StepRetention> }): { store: Store; reopen: () => Store };
}

const adapters: Adapter[] = [
  {
    name: "SQLite",
    open: (opts) => {
      const f = file();
      return { store: new SqliteStore(f, opts), reopen: () => new SqliteStore(f, opts) };
    },
  },
  {
    name: "memory",
    open: (opts) => {
      const store = new MemoryStore(opts);
      return { store, reopen: () => store.reopen() };
    },
  },
];

describe.each(adapters)("Store conformance: $name", (adapter) => {
  it("keeps jobs, attempts, ranks and steps across a reopen", async () => {
    const { store: a, reopen } = adapter.open();
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

    const b = reopen();
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
    const s = adapter.open().store;
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

  it("keeps each node's latest health probe, replaced by the next, across a reopen", async () => {
    const { store: s, reopen } = adapter.open();
    expect(await s.listNodeHealth()).toEqual([]);
    const finding = {
      grade: "fatal",
      cause: "device",
      source: "nvidia-smi",
      message: "GPU 1: 2 uncorrected ECC",
    } as const;
    await s.setNodeHealth({ node: "n1", probedAt: 5, status: "ok", trigger: "periodic", findings: [], excerpt: "" });
    await s.setNodeHealth({ node: "n0", probedAt: 7, status: "ok", trigger: "periodic", findings: [], excerpt: "$ a" });
    await s.setNodeHealth({
      node: "n1",
      probedAt: 9,
      status: "fatal",
      trigger: "preflight",
      findings: [finding],
      excerpt: "$ nvidia-smi\n1, 2\n",
    });
    await s.close();
    const b = reopen();
    expect((await b.listNodeHealth()).map((h) => [h.node, h.status, h.probedAt])).toEqual([
      ["n0", "ok", 7],
      ["n1", "fatal", 9],
    ]);
    expect(await b.listNodeHealth({ node: "n1" })).toEqual([
      {
        node: "n1",
        probedAt: 9,
        status: "fatal",
        trigger: "preflight",
        findings: [finding],
        excerpt: "$ nvidia-smi\n1, 2\n",
      },
    ]);
    await b.close();
  });

  it("counts strikes within a window, names their incidents, and clears them on uncordon", async () => {
    const s = adapter.open().store;
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
    const s = adapter.open({ stepRetention: { minSpacingMs: 100, maxRowsPerRank: 40 } }).store;
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
    const calm = adapter.open().store;
    await calm.createJob({ id: "j-2", name: "j", spec, state: "RUNNING", createdAt: 0 });
    for (let step = 1; step <= 30; step++) {
      const sample = { jobId: "j-2", attempt: 1, rank: 0, step, t: step * 10, loss: 1, tokens: null, computeS: null };
      await calm.ingestReports("j-2", 1, 0, { reportOffset: step * 100 }, [sample]);
    }
    expect((await calm.listSteps("j-2")).map((r) => r.step)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    await calm.close();
  });

  it("ingests one pass over many ranks in one batch, as if rank by rank", async () => {
    const s = adapter.open().store;
    await s.createJob({ id: "j-3", name: "j", spec, state: "RUNNING", createdAt: 0 });
    for (const rank of [0, 1, 2]) {
      await s.upsertRank({
        jobId: "j-3",
        attempt: 1,
        rank,
        node: "n",
        pid: null,
        startTicks: null,
        logPath: `/l${rank}`,
        reportPath: `/r${rank}`,
        reportOffset: 0,
        exitCode: null,
        exitSignal: null,
        exitedAt: null,
      });
    }
    const sample = (rank: number, step: number) => ({
      jobId: "j-3",
      attempt: 1,
      rank,
      step,
      t: step * 1000 + rank,
      loss: 1 / step,
      tokens: null,
      computeS: null,
    });
    await s.ingestReportsBatch("j-3", 1, [
      { rank: 0, cursor: { reportOffset: 100 }, samples: [sample(0, 1), sample(0, 2)] },
      { rank: 1, cursor: { reportOffset: 50 }, samples: [sample(1, 1)] },
      { rank: 2, cursor: { badReports: 3 }, samples: [] },
    ]);
    expect((await s.listSteps("j-3")).map((r) => [r.rank, r.step])).toEqual(
      expect.arrayContaining([
        [0, 1],
        [0, 2],
        [1, 1],
      ]),
    );
    expect(await s.rankProgress("j-3", 1)).toEqual(
      expect.arrayContaining([
        { rank: 0, lastT: 2000, lastStep: 2 },
        { rank: 1, lastT: 1001, lastStep: 1 },
      ]),
    );
    const ranks = await s.listRanks("j-3", 1);
    expect(ranks.map((r) => [r.reportOffset, r.badReports ?? 0])).toEqual([
      [100, 0],
      [50, 0],
      [0, 3],
    ]);
    await s.close();
  });

  it("lists one rank's steps across attempts in time order, and every rank's without a rank", async () => {
    const s = adapter.open().store;
    await s.createJob({ id: "j-4", name: "j", spec, state: "RUNNING", createdAt: 0 });
    for (const n of [1, 2]) {
      await s.createAttempt({
        jobId: "j-4",
        n,
        state: n === 1 ? "FAILED" : "RUNNING",
        pool: "p",
        nodes: ["p-0"],
        masterPort: 1,
        dir: "/d",
        resumeFrom: null,
        resumeStep: null,
        startedAt: n * 100,
        endedAt: null,
        reason: null,
      });
    }
    const sample = (attempt: number, rank: number, step: number) => ({
      jobId: "j-4",
      attempt,
      rank,
      step,
      t: attempt * 100 + step + rank / 10,
      loss: 1,
      tokens: null,
      computeS: null,
    });
    for (const attempt of [1, 2]) {
      await s.ingestReportsBatch(
        "j-4",
        attempt,
        [0, 1, 2].map((rank) => ({
          rank,
          cursor: { reportOffset: 1 },
          samples: [sample(attempt, rank, 1), sample(attempt, rank, 2)],
        })),
      );
    }
    expect((await s.listSteps("j-4", { rank: 1 })).map((x) => [x.attempt, x.rank, x.step])).toEqual([
      [1, 1, 1],
      [1, 1, 2],
      [2, 1, 1],
      [2, 1, 2],
    ]);
    expect((await s.listSteps("j-4", { rank: 2, afterT: 201.5 })).map((x) => [x.attempt, x.step])).toEqual([[2, 2]]);
    expect(await s.listSteps("j-4", { rank: 7 })).toEqual([]);
    expect((await s.listSteps("j-4")).map((x) => x.t)).toEqual([
      101, 101.1, 101.2, 102, 102.1, 102.2, 201, 201.1, 201.2, 202, 202.1, 202.2,
    ]);
    await s.close();
  });

  it("finds jobs by id or newest name, lists the active ones newest first, and patches only what a patch names", async () => {
    const s = adapter.open().store;
    await s.createJob({ id: "a-1", name: "a", spec, state: "RUNNING", createdAt: 10 });
    await s.createJob({ id: "a-2", name: "a", spec, state: "PENDING", createdAt: 20 });
    await s.createJob({ id: "b-1", name: "b", spec, state: "SUCCEEDED", createdAt: 30 });
    await expect(s.createJob({ id: "a-1", name: "a", spec, state: "PENDING", createdAt: 40 })).rejects.toThrow();
    expect((await s.getJob("a"))?.id).toBe("a-2");
    expect((await s.getJob("a-1"))?.id).toBe("a-1");
    expect(await s.getJob("nope")).toBeNull();
    expect((await s.listJobs()).map((j) => j.id)).toEqual(["b-1", "a-2", "a-1"]);
    expect((await s.listJobs({ activeOnly: true })).map((j) => j.id)).toEqual(["a-2", "a-1"]);
    await s.updateJob("a-1", { state: "FAILED", reason: "boom", endedAt: 50 });
    await s.updateJob("a-1", { restarts: 2 });
    expect(await s.getJob("a-1")).toMatchObject({
      state: "FAILED",
      reason: "boom",
      restarts: 2,
      endedAt: 50,
      createdAt: 10,
      spec: { name: "j", steps: 10 },
    });
    expect((await s.listJobs({ activeOnly: true })).map((j) => j.id)).toEqual(["a-2"]);
    await s.close();
  });

  it("hands out copies: changing a record read changes nothing stored", async () => {
    const s = adapter.open().store;
    await s.createJob({ id: "j-1", name: "j", spec, state: "PENDING", createdAt: 1 });
    const job = (await s.getJob("j-1"))!;
    job.state = "RUNNING";
    (job.spec as unknown as { steps: number }).steps = 99;
    expect(await s.getJob("j-1")).toMatchObject({ state: "PENDING", spec: { steps: 10 } });
    await s.addEvent({ jobId: "j-1", t: 1, kind: "k", message: "m", data: { list: [1] } });
    const [event] = await s.listEvents({});
    (event!.data.list as number[]).push(2);
    expect((await s.listEvents({}))[0]!.data).toEqual({ list: [1] });
    await s.close();
  });

  it("orders attempts, keeps a rank's cursors and paths over an upsert, and reads a NaN loss back as null", async () => {
    const s = adapter.open().store;
    await s.createJob({ id: "j-1", name: "j", spec, state: "RUNNING", createdAt: 1 });
    const attempt = (n: number) => ({
      jobId: "j-1",
      n,
      state: "RUNNING" as const,
      pool: "p",
      nodes: [`p-${n}`],
      masterPort: 1000 + n,
      dir: `/d/${n}`,
      resumeFrom: null,
      resumeStep: null,
      startedAt: n,
      endedAt: null,
      reason: null,
    });
    await s.createAttempt(attempt(2));
    await s.createAttempt(attempt(1));
    await s.updateAttempt("j-1", 1, { state: "FAILED", endedAt: 5, reason: "crash" });
    expect((await s.listAttempts("j-1")).map((a) => [a.n, a.state, a.endedAt, a.reason, a.nodes])).toEqual([
      [1, "FAILED", 5, "crash", ["p-1"]],
      [2, "RUNNING", null, null, ["p-2"]],
    ]);
    const rank = {
      jobId: "j-1",
      attempt: 2,
      rank: 0,
      node: "p-2",
      pid: 7,
      startTicks: 8,
      logPath: "/l",
      reportPath: "/r",
      reportOffset: 0,
      exitCode: null,
      exitSignal: null,
      exitedAt: null,
    };
    await s.upsertRank(rank);
    await s.ingestReports("j-1", 2, 0, { reportOffset: 300, badReports: 1 }, [
      { jobId: "j-1", attempt: 2, rank: 0, step: 4, t: 40, loss: Number.NaN, tokens: null, computeS: null },
      { jobId: "j-1", attempt: 2, rank: 0, step: 5, t: 50, loss: Number.POSITIVE_INFINITY, tokens: 3, computeS: 0.5 },
    ]);
    await s.upsertRank({ ...rank, rankPid: 9 });
    await s.upsertRank({ ...rank, logPath: "/other", reportOffset: 0, exitCode: 1, exitSignal: null, exitedAt: 60 });
    expect((await s.listRanks("j-1", 2))[0]).toMatchObject({
      logPath: "/l",
      reportOffset: 300,
      badReports: 1,
      rankPid: 9,
      exitCode: 1,
      exitedAt: 60,
      lastStep: 5,
      lastT: 50,
    });
    expect((await s.recentSteps("j-1", 2, 0, 10)).map((x) => [x.step, x.loss])).toEqual([
      [4, null],
      [5, Number.POSITIVE_INFINITY],
    ]);
    expect((await s.recentSteps("j-1", 2, 0, 1)).map((x) => x.step)).toEqual([5]);
    expect((await s.listSteps("j-1", { afterT: 40 })).map((x) => x.step)).toEqual([5]);
    expect(await s.rankProgress("j-1", 1)).toEqual([]);
    await s.close();
  });

  it("numbers incidents and events across jobs, pages events, and upserts and deletes checkpoints", async () => {
    const s = adapter.open().store;
    const incident = (jobId: string) => ({
      jobId,
      attempt: 1,
      cause: "killed",
      culpritRank: 0,
      culpritNode: "n",
      detectedAt: 5,
      summary: "s",
      evidence: { tail: ["x"], nan: Number.NaN },
    });
    const first = await s.addIncident(incident("a"));
    const second = await s.addIncident(incident("b"));
    const third = await s.addIncident(incident("a"));
    expect(second).toBe(first + 1);
    expect((await s.listIncidents("a")).map((i) => i.id)).toEqual([first, third]);
    expect((await s.listIncidents("a"))[0]!.evidence).toEqual({ tail: ["x"], nan: null });
    const ids: number[] = [];
    for (const jobId of ["a", null, "a", "b", "a"]) {
      ids.push(await s.addEvent({ jobId, t: 1, kind: "k", message: "m", data: {} }));
    }
    expect((await s.listEvents({ jobId: "a" })).map((e) => e.id)).toEqual([ids[0], ids[2], ids[4]]);
    expect((await s.listEvents({ afterId: ids[1]!, limit: 2 })).map((e) => e.id)).toEqual([ids[2], ids[3]]);
    await s.upsertCheckpoint({ jobId: "a", step: 20, path: "/c/20", verified: false, reason: "torn", seenAt: 1 });
    await s.upsertCheckpoint({ jobId: "a", step: 10, path: "/c/10", verified: true, reason: null, seenAt: 1 });
    await s.upsertCheckpoint({ jobId: "a", step: 20, path: "/c/20", verified: true, reason: null, seenAt: 2 });
    expect((await s.listCheckpoints("a")).map((c) => [c.step, c.verified, c.reason, c.seenAt])).toEqual([
      [10, true, null, 1],
      [20, true, null, 2],
    ]);
    await s.deleteCheckpoint("a", 10);
    expect((await s.listCheckpoints("a")).map((c) => c.step)).toEqual([20]);
    expect(await s.listCheckpoints("b")).toEqual([]);
    await s.close();
  });

  it("remembers idempotency keys until they are older than their keep time", async () => {
    const s = adapter.open().store;
    await s.recordIdempotencyKey("k1", "j-1", "sha1", 1_000, 10_000);
    expect(await s.findIdempotencyKey("k1")).toEqual({ jobId: "j-1", requestSha256: "sha1" });
    await expect(s.recordIdempotencyKey("k1", "j-2", "sha2", 2_000, 10_000)).rejects.toThrow();
    await s.recordIdempotencyKey("k2", "j-3", "sha3", 20_000, 10_000);
    expect(await s.findIdempotencyKey("k1")).toBeNull();
    expect(await s.findIdempotencyKey("k2")).toEqual({ jobId: "j-3", requestSha256: "sha3" });
    await s.close();
  });

  it("keeps services and their replicas across a reopen; an update keeps the creation time", async () => {
    const { store: a, reopen } = adapter.open();
    await a.putService({ name: "m", spec: { pools: [1] }, createdAt: 1, updatedAt: 1 });
    await a.putService({ name: "m", spec: { pools: [2] }, createdAt: 5, updatedAt: 5 });
    await a.putService({ name: "n", spec: {}, createdAt: 2, updatedAt: 2 });
    const replica = {
      jobId: "svc-m-p-0-aaa",
      service: "m",
      slot: "p-0",
      pool: "p",
      state: "starting" as const,
      readyAttempt: null,
      url: null,
      checkpoint: null,
      checkpointStep: null,
      drainingSince: null,
      createdAt: 3,
      updatedAt: 3,
    };
    await a.putReplica(replica);
    await a.putReplica({ ...replica, state: "ready", readyAttempt: 1, url: "http://h:1", updatedAt: 4 });
    await a.putReplica({ ...replica, jobId: "svc-n-p-0-bbb", service: "n", createdAt: 4 });
    const b = reopen();
    expect((await b.listServices()).map((s) => [s.name, s.spec, s.createdAt, s.updatedAt])).toEqual([
      ["m", { pools: [2] }, 1, 5],
      ["n", {}, 2, 2],
    ]);
    expect(await b.listReplicas({ service: "m" })).toEqual([
      { ...replica, state: "ready", readyAttempt: 1, url: "http://h:1", updatedAt: 4 },
    ]);
    expect((await b.listReplicas()).map((r) => r.jobId)).toEqual(["svc-m-p-0-aaa", "svc-n-p-0-bbb"]);
    await b.deleteReplica("svc-m-p-0-aaa");
    await b.deleteService("m");
    expect((await b.listServices()).map((s) => s.name)).toEqual(["n"]);
    expect((await b.listReplicas()).map((r) => r.jobId)).toEqual(["svc-n-p-0-bbb"]);
    await a.close();
    await b.close();
  });
});

describe("SQLite store", () => {
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

  it("reads one rank's steps through the primary key per attempt, not by scanning every rank's rows", async () => {
    const s = new SqliteStore(file());
    await s.listSteps("j", { rank: 3 });
    // The statement listSteps really ran (the store keeps it prepared), explained with its parameters.
    const inner = s as unknown as {
      statements: Map<string, unknown>;
      db: { prepare(q: string): { all(p: Record<string, unknown>): Array<{ detail: string }> } };
    };
    const sql = [...inner.statements.keys()].find((q) => q.includes("FROM steps") && q.includes("rank = @rank"));
    expect(sql).toBeDefined();
    const plan = inner.db
      .prepare(`EXPLAIN QUERY PLAN ${sql!}`)
      .all({ jobId: "j", rank: 3, afterT: -1 })
      .map((r) => r.detail)
      .join("; ");
    expect(plan).toMatch(/SEARCH steps USING INDEX sqlite_autoindex_steps_1 \(job_id=\? AND attempt=\? AND rank=\?/);
    await s.close();
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

describe.each(adapters)("Store conformance, gateway traffic: $name", (adapter) => {
  const retention = { keepMs: 10_000, maxRows: 3, maxGateways: 2 };
  const gateway = (name: string, t: number) => ({ gateway: name, instance: "i-1", t, counters: { [`k${t}`]: t } });
  const sample = (service: string, t: number) => ({ gateway: "g", service, fromT: t - 5, t, data: { n: t } });

  it("records samples, adds totals, replaces a gateway's counters, and prunes by age, rows and gateways", async () => {
    const { store, reopen } = adapter.open();
    await store.recordTraffic(
      {
        gateway: gateway("g", 100),
        samples: [sample("a", 100), sample("b", 100)],
        totals: [{ service: "a", pool: "p", counts: { answered: 2 } }],
      },
      retention,
    );
    await store.recordTraffic(
      {
        gateway: gateway("g", 200),
        samples: [sample("a", 200)],
        totals: [
          { service: "a", pool: "p", counts: { answered: 3, failed: 1 } },
          { service: "a", pool: "", counts: { saved: 1 } },
        ],
      },
      retention,
    );
    const s = reopen();
    expect(await s.getTrafficGateway("g")).toEqual({ gateway: "g", instance: "i-1", t: 200, counters: { k200: 200 } });
    expect(await s.getTrafficGateway("nope")).toBeNull();
    expect((await s.listTrafficSamples({ since: 0, service: "a" })).map((r) => [r.t, r.data])).toEqual([
      [100, { n: 100 }],
      [200, { n: 200 }],
    ]);
    expect((await s.listTrafficSamples({ since: 100 })).map((r) => r.t)).toEqual([200]);
    expect((await s.listTrafficSamples({ since: 0, until: 150 })).map((r) => r.service)).toEqual(["a", "b"]);
    expect(await s.listTrafficTotals()).toEqual([
      { service: "a", pool: "", counts: { saved: 1 } },
      { service: "a", pool: "p", counts: { answered: 5, failed: 1 } },
    ]);
    // Rows: at most 3 (the oldest go first).
    await s.recordTraffic({ gateway: gateway("g", 300), samples: [sample("a", 300)], totals: [] }, retention);
    expect((await s.listTrafficSamples({ since: 0 })).map((r) => r.t)).toEqual([100, 200, 300]);
    await s.recordTraffic({ gateway: gateway("h", 400), samples: [sample("a", 400)], totals: [] }, retention);
    expect((await s.listTrafficSamples({ since: 0 })).map((r) => r.t)).toEqual([200, 300, 400]);
    // Gateways: at most 2, the longest silent go first; age: older than keepMs go.
    await s.recordTraffic({ gateway: gateway("k", 500), samples: [], totals: [] }, retention);
    expect((await s.listTrafficGateways()).map((g) => g.gateway)).toEqual(["k", "h"]);
    await s.recordTraffic({ gateway: gateway("k", 20_000), samples: [sample("a", 20_000)], totals: [] }, retention);
    expect((await s.listTrafficSamples({ since: 0 })).map((r) => r.t)).toEqual([20_000]);
    expect((await s.listTrafficGateways()).map((g) => g.gateway)).toEqual(["k"]);
    await s.close();
  });
});
