import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { compileJobSpec, type ClusterSpec, type PoolSpec } from "../core/spec.js";
import { MemoryStore } from "../store/memory.js";
import { FakeClock, FakeExecutor, launchError } from "./testing/fakes.js";
import { Supervisor } from "./supervisor.js";

/**
 * Every verdict the supervisor's loop can reach, on a fake clock, an in-memory store and a fake executor: ticks run
 * when a test calls them and time moves when a test says so; no process runs and nothing sleeps.
 */

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

const pool = (name: string, nodes: number, extra: Partial<PoolSpec> = {}): PoolSpec => ({
  name,
  executor: "local",
  accelerator: { vendor: "nvidia" },
  nodes,
  devicesPerNode: 1,
  ...extra,
});

async function setup(cluster: ClusterSpec = { pools: [pool("p", 3)] }, opts: { remote?: boolean } = {}) {
  const home = mkdtempSync(path.join(os.tmpdir(), "sy-verdicts-"));
  const store = new MemoryStore();
  const clock = new FakeClock();
  const executor = new FakeExecutor(clock, opts.remote ?? false);
  const log: string[] = [];
  const supervisor = new Supervisor({
    store,
    executor,
    clock,
    cluster,
    home,
    pollMs: 1e9,
    watchPacing: false,
    log: (m) => log.push(m),
  });
  await supervisor.start();
  cleanups.push(async () => {
    await supervisor.stop();
    await store.close();
    rmSync(home, { recursive: true, force: true });
  });
  const submit = async (name: string, lines: string[] = []) => {
    mkdirSync(path.join(home, "work"), { recursive: true });
    const yaml = [
      `name: ${name}`,
      `workdir: ${JSON.stringify(path.join(home, "work"))}`,
      'command: ["/bin/sh", "-c", "true"]',
      ...lines,
    ].join("\n");
    const file = path.join(home, `${name}.yaml`);
    writeFileSync(file, yaml);
    return (
      await supervisor.submit(compileJobSpec(yaml, { file, cluster, defaultCheckpointRoot: path.join(home, "ckpt") }))
    ).id;
  };
  const job = async (id: string) => (await store.getJob(id))!;
  const attempts = (id: string) => store.listAttempts(id);
  const incidents = (id: string) => store.listIncidents(id);
  const kinds = async (id: string | null) =>
    (await store.listEvents({ limit: 10_000 })).filter((e) => id === null || e.jobId === id).map((e) => e.kind);
  /** A tick after `ms` of virtual time. */
  const tick = async (ms = 0) => {
    clock.advance(ms);
    await supervisor.tick();
  };
  return { home, store, clock, executor, supervisor, submit, job, attempts, incidents, kinds, tick, log };
}

/** A checkpoint folder with a manifest that verifies. */
function writeCheckpoint(root: string, step: number): string {
  const dir = path.join(root, `step-${String(step).padStart(8, "0")}`);
  mkdirSync(dir, { recursive: true });
  const content = `weights at ${step}`;
  writeFileSync(path.join(dir, "model.pt"), content);
  const sha256 = createHash("sha256").update(content).digest("hex");
  const files = [{ path: "model.pt", size: Buffer.byteLength(content), sha256 }];
  writeFileSync(
    path.join(dir, "MANIFEST.json"),
    JSON.stringify({ format: "switchyard-checkpoint/1", step, shards: 1, created: 1, files }),
  );
  return dir;
}

const traceback = [
  "Traceback (most recent call last):",
  '  File "train.py", line 12, in <module>',
  "ValueError: the batch has the wrong shape",
];

describe("the supervisor's verdicts", () => {
  it("success: every rank exits 0, the job succeeds at its last reported step", async () => {
    const s = await setup();
    const id = await s.submit("ok", ["nodes: 2"]);
    expect((await s.job(id)).state).toBe("STARTING");
    s.executor.step(id, 1);
    await s.tick(100);
    expect((await s.job(id)).state).toBe("RUNNING");
    s.executor.step(id, 2);
    for (const r of s.executor.ranks(id)) s.executor.exit(id, r.rank, { code: 0 });
    await s.tick(100);
    const end = await s.job(id);
    expect(end.state).toBe("SUCCEEDED");
    expect((await s.attempts(id)).map((a) => a.state)).toEqual(["SUCCEEDED"]);
    const done = (await s.store.listEvents({ jobId: id })).find((e) => e.kind === "job.succeeded")!;
    expect(done.message).toBe("job finished at step 2 after 0 restart(s)");
    expect(await s.incidents(id)).toEqual([]);
    expect(s.executor.stops).toEqual([]);
  });

  it("success with no step ever reported says so, not 'at step ?'", async () => {
    const s = await setup();
    const id = await s.submit("quiet", ["nodes: 1"]);
    for (const r of s.executor.ranks(id)) s.executor.exit(id, r.rank, { code: 0 });
    await s.tick(100);
    expect((await s.job(id)).state).toBe("SUCCEEDED");
    const done = (await s.store.listEvents({ jobId: id })).find((e) => e.kind === "job.succeeded")!;
    expect(done.message).toBe("job finished (no step reported: no progress source matched) after 0 restart(s)");
  });

  it("crash with culprit: the first rank to fail is named, a peer that failed after it is a victim", async () => {
    const s = await setup();
    const id = await s.submit("crash", ["nodes: 2", "recovery: { backoffSeconds: 5 }"]);
    s.executor.step(id, 7);
    await s.tick(100);
    const [first] = await s.attempts(id);
    s.executor.exit(id, 1, { signal: "SIGKILL" });
    s.clock.advance(50);
    s.executor.log(id, 0, "RuntimeError: [gloo] Connection reset by peer");
    s.executor.exit(id, 0, { code: 1 });
    await s.tick(50);
    const [incident] = await s.incidents(id);
    expect(incident).toMatchObject({ cause: "killed", culpritRank: 1, culpritNode: first!.nodes[1] });
    expect(incident!.evidence).toMatchObject({ signal: "SIGKILL", victims: [0], lastStep: 7, pool: "p" });
    expect(incident!.summary).toMatch(/^rank 1 killed by SIGKILL first; 1 peer\(s\) failed after it/);
    expect((await s.job(id)).state).toBe("RECOVERING");
    expect(s.executor.stops).toHaveLength(1);
    expect((await s.store.listNodes()).find((n) => n.name === first!.nodes[1])!.strikes).toBe(1);
    // Before the backoff has passed nothing launches; after it, the next attempt leaves the culprit's node out.
    await s.tick(4_000);
    expect(await s.attempts(id)).toHaveLength(1);
    await s.tick(1_000);
    const second = (await s.attempts(id))[1]!;
    expect(second.nodes).not.toContain(first!.nodes[1]);
    expect(second.nodes).toHaveLength(2);
    expect((await s.job(id)).restarts).toBe(1);
  });

  it("hang on hosts the server cannot see (no pids, as on Slurm): the stopped rank is still found and continued", async () => {
    const s = await setup({ pools: [pool("p", 3)] }, { remote: true });
    const id = await s.submit("hang-remote", ["nodes: 2", "detection: { hangMinSeconds: 10, stackDumpSeconds: 5 }"]);
    for (let step = 1; step <= 5; step++) {
      s.executor.step(id, step);
      await s.tick(1_000);
    }
    s.executor.setProcessState(id, 0, "T");
    await s.tick(10_500);
    // Without the process state of pid-less ranks the stopped rank got no SIGCONT and could never write its stacks.
    expect(s.executor.ranks(id).map((r) => r.signals)).toEqual([["SIGUSR1", "SIGCONT"], ["SIGUSR1"]]);
    await s.tick(5_000);
    const [incident] = await s.incidents(id);
    expect(incident).toMatchObject({ cause: "hang", culpritRank: 0 });
  });

  it("hang: a silent gang is asked for its stacks, and the incident (with the stacks) comes at the dump deadline", async () => {
    const s = await setup();
    const id = await s.submit("hang", [
      "nodes: 2",
      "detection: { startupSeconds: 30, hangMinSeconds: 10, stackDumpSeconds: 5 }",
    ]);
    for (let step = 1; step <= 5; step++) {
      s.executor.step(id, step);
      await s.tick(1_000);
    }
    s.executor.setProcessState(id, 1, "T");
    await s.tick(10_500);
    expect(await s.incidents(id)).toEqual([]);
    const ranks = s.executor.ranks(id);
    expect(ranks.map((r) => r.signals)).toEqual([["SIGUSR1"], ["SIGUSR1", "SIGCONT"]]);
    s.executor.log(id, 1, "Thread 0x00007f (most recent call first):", '  File "train.py", line 40 in all_reduce');
    // The dump wait is a deadline: ticks before it judge nothing (no second request, no incident).
    await s.tick(2_000);
    expect(s.executor.ranks(id)[0]!.signals).toEqual(["SIGUSR1"]);
    expect(await s.incidents(id)).toEqual([]);
    await s.tick(3_000);
    const [incident] = await s.incidents(id);
    expect(incident).toMatchObject({ cause: "hang", culpritRank: 1 });
    expect(incident!.summary).toMatch(/^no progress for 1\d\.\ds \(timeout 10s\); rank 1's process is stopped/);
    expect(incident!.evidence.stack).toEqual([
      "Thread 0x00007f (most recent call first):",
      '  File "train.py", line 40 in all_reduce',
    ]);
    expect((await s.job(id)).state).toBe("RECOVERING");
    expect(s.executor.stops).toHaveLength(1);
  });

  it("NaN: a non-finite loss is an incident that rolls back to the newest verified checkpoint, with no strike", async () => {
    const s = await setup();
    const id = await s.submit("nan", ["recovery: { backoffSeconds: 0 }"]);
    const ckpt = (await s.job(id)).spec.checkpoint.dir;
    s.executor.step(id, 10);
    const dir = writeCheckpoint(ckpt, 10);
    s.executor.report(id, 0, { kind: "checkpoint", step: 10, path: dir });
    await s.tick(100);
    expect((await s.store.listCheckpoints(id)).map((c) => [c.step, c.verified])).toEqual([[10, true]]);
    s.executor.step(id, 14, { loss: "nan" });
    await s.tick(100);
    const [incident] = await s.incidents(id);
    expect(incident).toMatchObject({ cause: "numerical", culpritRank: 0 });
    expect(incident!.summary).toBe("rank 0 reported a non-finite loss at step 14; rolling back to the last checkpoint");
    expect((await s.store.listNodes()).every((n) => n.strikes === 0)).toBe(true);
    await s.tick(100);
    const second = (await s.attempts(id))[1]!;
    expect(second).toMatchObject({ resumeFrom: dir, resumeStep: 10 });
    expect(s.executor.launches[1]!.resumeFrom).toBe(dir);
  });

  it("crash loop: the same software error at the same step on different nodes stops the job", async () => {
    const s = await setup();
    const id = await s.submit("loop", ["recovery: { backoffSeconds: 0 }"]);
    for (let n = 1; n <= 2; n++) {
      if (n > 1) await s.tick(100); // the relaunch
      expect(await s.attempts(id)).toHaveLength(n);
      s.executor.step(id, 3);
      await s.tick(100);
      s.executor.log(id, 0, ...traceback);
      s.executor.exit(id, 0, { code: 1 });
      await s.tick(100);
    }
    const end = await s.job(id);
    expect(end.state).toBe("FAILED");
    expect(end.reason).toMatch(
      /^deterministic software error: "ValueError: the batch has the wrong shape".* at step 3 on 2 attempts/,
    );
    const nodes = (await s.attempts(id)).map((a) => a.nodes[0]);
    expect(new Set(nodes).size).toBe(2);
    expect((await s.incidents(id)).map((i) => i.cause)).toEqual(["software", "software"]);
    expect((await s.store.listNodes()).every((n) => n.strikes === 0)).toBe(true);
  });

  it("non-retryable launch error: the job fails at once, naming the error, without a node strike", async () => {
    const s = await setup();
    s.executor.launchErrors.push(launchError("EACCES", "spawn /bin/sh EACCES"));
    const id = await s.submit("denied");
    await s.tick(100);
    const end = await s.job(id);
    expect(end.state).toBe("FAILED");
    expect(end.reason).toContain("error that no restart can fix: launch failed: spawn /bin/sh EACCES");
    expect((await s.incidents(id)).map((i) => [i.cause, i.culpritNode])).toEqual([["software", null]]);
    expect(await s.attempts(id)).toHaveLength(1);
    expect((await s.store.listNodes()).every((n) => n.strikes === 0)).toBe(true);
  });

  it("pool fallback: after poolFailures infrastructure failures on a pool the job moves to the next pool", async () => {
    const s = await setup({ pools: [pool("a", 3), pool("b", 1)] });
    const id = await s.submit("move", [
      "pools: [a, b]",
      "recovery: { backoffSeconds: 0, poolFailures: { count: 2, windowSeconds: 600 }, strikesBeforeCordon: 5 }",
    ]);
    for (let n = 1; n <= 2; n++) {
      if (n > 1) await s.tick(100); // the relaunch
      expect(await s.attempts(id)).toHaveLength(n);
      s.executor.step(id, n);
      await s.tick(100);
      s.executor.exit(id, 0, { signal: "SIGKILL" });
      await s.tick(100);
    }
    await s.tick(100);
    expect((await s.attempts(id)).map((a) => a.pool)).toEqual(["a", "a", "b"]);
    expect(s.executor.launches.map((l) => l.pool.name)).toEqual(["a", "a", "b"]);
    const moved = (await s.store.listEvents({ jobId: id })).find((e) => e.kind === "job.moved")!;
    expect(moved.message).toBe("moving from pool a to b: a failed 2 times within 600s");
  });

  it("shrink: with fewer healthy nodes than asked and minNodes allowing it, the job runs on fewer", async () => {
    const s = await setup({ pools: [pool("p", 2)] });
    await s.supervisor.setCordon("p-1", true, "under repair");
    const id = await s.submit("elastic", ["nodes: 2", "minNodes: 1"]);
    const [attempt] = await s.attempts(id);
    expect(attempt!.nodes).toEqual(["p-0"]);
    const shrunk = (await s.store.listEvents({ jobId: id })).find((e) => e.kind === "job.shrunk")!;
    expect(shrunk.message).toBe("running on 1 of 2 node(s): no pool has enough free, healthy nodes");
    expect(s.executor.launches[0]!.nodes).toEqual(["p-0"]);
  });

  it("restart budget exhausted: the failure after maxRestarts restarts fails the job", async () => {
    const s = await setup();
    const id = await s.submit("budget", ["recovery: { maxRestarts: 1, backoffSeconds: 0, strikesBeforeCordon: 9 }"]);
    for (let n = 1; n <= 2; n++) {
      if (n > 1) await s.tick(100); // the relaunch
      expect(await s.attempts(id)).toHaveLength(n);
      s.executor.step(id, n);
      await s.tick(100);
      s.executor.exit(id, 0, { signal: "SIGKILL" });
      await s.tick(100);
    }
    const end = await s.job(id);
    expect(end.state).toBe("FAILED");
    expect(end.reason).toBe("gave up after 1 restart(s): recovery.maxRestarts is 1");
    expect(await s.incidents(id)).toHaveLength(2);
    expect(await s.kinds(id)).toContain("job.failed");
  });

  it("cancel: the running gang is stopped with the job's grace and the job ends CANCELLED", async () => {
    const s = await setup();
    const id = await s.submit("stopme", ["nodes: 2", "recovery: { graceSeconds: 3 }"]);
    s.executor.step(id, 1);
    await s.tick(100);
    const end = await s.supervisor.cancel(id);
    expect(end.state).toBe("CANCELLED");
    expect(s.executor.stops).toEqual([{ ranks: [0, 1], graceMs: 3000 }]);
    expect((await s.attempts(id)).map((a) => [a.state, a.reason])).toEqual([["CANCELLED", "cancelled by user"]]);
    await s.tick(100);
    expect(await s.incidents(id)).toEqual([]);
    expect(s.executor.launches).toHaveLength(1);
  });

  it("disk full: an ENOSPC launch pauses launches (no incident, no restart) until 10 s later, then resumes", async () => {
    const s = await setup();
    s.executor.launchErrors.push(launchError("ENOSPC", "ENOSPC: no space left on device, open 'rank-0.log'"));
    const id = await s.submit("full");
    expect(await s.job(id)).toMatchObject({ state: "RECOVERING", restarts: 0 });
    expect((await s.job(id)).reason).toMatch(/^launch paused: disk full \(ENOSPC/);
    expect(await s.incidents(id)).toEqual([]);
    await s.tick(5_000);
    expect(s.executor.launches).toHaveLength(1);
    expect(s.supervisor.queueInfo(id)).toEqual({
      queuePosition: null,
      waitingFor: "disk full: a launch failed with ENOSPC (fix: free space; launches resume by themselves)",
    });
    await s.tick(5_000);
    expect(s.executor.launches).toHaveLength(2);
    expect((await s.job(id)).state).toBe("STARTING");
    const kinds = await s.kinds(null);
    expect(kinds.filter((k) => k === "disk.full").length).toBeGreaterThanOrEqual(1);
    expect(kinds).toContain("disk.ok");
    expect((await s.job(id)).restarts).toBe(0);
  });

  it("host lost: the executor's lost host is the culprit, cordoned at once, and the job goes on without it", async () => {
    const s = await setup();
    const id = await s.submit("host", ["nodes: 2", "recovery: { backoffSeconds: 0 }"]);
    s.executor.step(id, 4);
    await s.tick(100);
    const [first] = await s.attempts(id);
    const lostNode = first!.nodes[1]!;
    s.executor.vanish(id, 1, `host ${lostNode} stopped answering`);
    await s.tick(100);
    const [incident] = await s.incidents(id);
    expect(incident).toMatchObject({ cause: "host", culpritRank: 1, culpritNode: lostNode });
    expect(incident!.evidence.hard).toBe(true);
    const node = (await s.store.listNodes()).find((n) => n.name === lostNode)!;
    expect(node.cordoned).toBe(true);
    expect(node.reason).toMatch(/^1 strike\(s\) within 24h; last: host:/);
    expect(await s.kinds(id)).toContain("node.cordoned");
    await s.tick(100);
    expect((await s.attempts(id))[1]!.nodes).not.toContain(lostNode);
  });
});
