import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { Clock } from "../core/clock.js";
import { compileJobSpec, type ClusterSpec } from "../core/spec.js";
import { LocalExecutor } from "../executors/local/local.js";
import type { Executor, LaunchRequest } from "../executors/port.js";
import { SqliteStore } from "../store/sqlite.js";
import { Supervisor } from "./supervisor.js";

/**
 * The supervisor over real parts (SQLite store, local executor, /bin/sh ranks) on a manual clock: time moves only when
 * a test says so, and ticks run only when a test calls them, so every assertion is about order and counts, not speed.
 */
class ManualClock implements Clock {
  t = Date.now();
  private waiters: Array<{ at: number; resolve: () => void }> = [];
  now(): number {
    return this.t;
  }
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.waiters.push({ at: this.t + ms, resolve }));
  }
  advance(ms: number): void {
    this.t += ms;
    const due = this.waiters.filter((w) => w.at <= this.t);
    this.waiters = this.waiters.filter((w) => w.at > this.t);
    for (const w of due) w.resolve();
  }
}

const stops: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

async function setup(cluster: ClusterSpec, executor: Executor = new LocalExecutor()) {
  const home = mkdtempSync(path.join(os.tmpdir(), "sy-sup-"));
  const store = new SqliteStore(path.join(home, "state.db"));
  const clock = new ManualClock();
  const log: string[] = [];
  const supervisor = new Supervisor({ store, executor, clock, cluster, home, pollMs: 1e9, log: (m) => log.push(m) });
  await supervisor.start();
  stops.push(async () => {
    for (const j of await store.listJobs({ activeOnly: true })) await supervisor.cancel(j.id);
    await supervisor.stop();
    await store.close();
  });
  const submit = (name: string, lines: string[], opts: { workdir?: string } = {}) => {
    const workdir = opts.workdir ?? path.join(home, "work");
    mkdirSync(path.join(home, "work"), { recursive: true });
    const yaml = [`name: ${name}`, `workdir: ${JSON.stringify(workdir)}`, ...lines].join("\n");
    const file = path.join(home, `${name}.yaml`);
    writeFileSync(file, yaml);
    return supervisor.submit(compileJobSpec(yaml, { file, cluster, defaultCheckpointRoot: path.join(home, "ckpt") }));
  };
  /** Ticks until `done` holds (at most `max` ticks, a short real pause between them: ranks are real processes). */
  const tickUntil = async (what: string, done: () => Promise<boolean>, each?: () => Promise<void>, max = 600) => {
    for (let i = 0; i < max; i++) {
      await supervisor.tick();
      await each?.();
      if (await done()) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`not reached after ${max} ticks: ${what}\n${log.slice(-20).join("\n")}`);
  };
  return { home, store, clock, supervisor, submit, tickUntil, log };
}

const pool = (nodes: number, devicesPerNode: number): ClusterSpec => ({
  pools: [{ name: "p", executor: "local", accelerator: { vendor: "nvidia" }, nodes, devicesPerNode }],
});

const ended = (state: string) => ["SUCCEEDED", "FAILED", "CANCELLED"].includes(state);

describe("the queue", () => {
  it("never runs two ranks on one device, uses every node, shows queue places, and finishes every job", async () => {
    const { store, supervisor, submit, tickUntil } = await setup(pool(2, 1));
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push((await submit(`q${i}`, ['command: ["/bin/sh", "-c", "sleep 0.2"]'])).id);
    const live = async () =>
      (
        await Promise.all(ids.map(async (id) => (await store.listAttempts(id)).filter((a) => a.endedAt === null)))
      ).flat();

    expect((await live()).map((a) => a.nodes[0]).sort()).toEqual(["p-0", "p-1"]);
    expect(ids.slice(2).map((id) => supervisor.queueInfo(id))).toEqual(
      [1, 2, 3, 4].map((queuePosition) => ({ queuePosition, waitingFor: "waiting for 1 device(s) on p: 0 free" })),
    );
    expect(supervisor.queueInfo(ids[0]!)).toEqual({ queuePosition: null, waitingFor: null });

    let most = 0;
    await tickUntil(
      "every job ends",
      async () => (await Promise.all(ids.map((id) => store.getJob(id)))).every((j) => ended(j!.state)),
      async () => {
        const attempts = await live();
        most = Math.max(most, attempts.length);
        const held = attempts.map((a) => `${a.nodes[0]}:${readFileSync(path.join(a.dir, "devices.json"), "utf8")}`);
        expect(new Set(held).size).toBe(held.length); // no device twice
      },
    );
    expect(most).toBe(2);
    for (const id of ids) expect((await store.getJob(id))!.state).toBe("SUCCEEDED");
    const nodesUsed = new Set(
      (await Promise.all(ids.map((id) => store.listAttempts(id)))).flat().map((a) => a.nodes[0]),
    );
    expect([...nodesUsed].sort()).toEqual(["p-0", "p-1"]);
  }, 60_000);

  it("a higher priority goes first", async () => {
    const { store, submit, tickUntil } = await setup(pool(1, 1));
    const first = await submit("first", ['command: ["/bin/sh", "-c", "sleep 0.2"]']);
    const low = await submit("low", ['command: ["/bin/sh", "-c", "exit 0"]']);
    const high = await submit("high", ["priority: 5", 'command: ["/bin/sh", "-c", "exit 0"]']);
    await tickUntil("all end", async () => (await store.listJobs({ activeOnly: true })).length === 0);
    const started = async (id: string) => (await store.listAttempts(id))[0]!.startedAt;
    expect(await started(first.id)).toBeLessThanOrEqual(await started(high.id));
    const events = await store.listEvents({});
    const order = events.filter((e) => e.kind === "attempt.launched").map((e) => e.jobId);
    expect(order).toEqual([first.id, high.id, low.id]);
  }, 60_000);
});

describe("pacing of slow looks", () => {
  it("a look that takes long (a loaded host) delays the next one in real time, never until a clock that stands still moves", async () => {
    // Every poll takes 40 ms of real time (> the 20 ms from which looks are paced); the supervisor's clock never moves.
    const local = new LocalExecutor();
    const slow: Executor = Object.assign(Object.create(local) as Executor, {
      poll: async (dir: string, ranks: Parameters<Executor["poll"]>[1]) => {
        await new Promise((r) => setTimeout(r, 40));
        return local.poll(dir, ranks);
      },
    });
    const { store, submit, tickUntil } = await setup(pool(1, 1), slow);
    const job = await submit("paced", ['command: ["/bin/sh", "-c", "sleep 0.3"]']);
    await tickUntil("the job ends", async () => ended((await store.getJob(job.id))!.state), undefined, 200);
    expect((await store.getJob(job.id))!.state).toBe("SUCCEEDED");
  }, 60_000);
});

describe("no job's wait holds another job", () => {
  it("a 60 s stack-dump wait on one job does not delay another job's launch", async () => {
    const { store, clock, submit, tickUntil } = await setup(pool(1, 2));
    const hung = await submit("hung", [
      // Ignores SIGUSR1 (the stack-dump request) and never reports: hung from the start.
      `command: ["/bin/sh", "-c", "trap '' USR1; exec sleep 30"]`,
      "detection: { startupSeconds: 1, stackDumpSeconds: 60 }",
      "recovery: { maxRestarts: 0, graceSeconds: 1 }",
    ]);
    clock.advance(2000);
    await tickUntil("the hang is found", async () =>
      (await store.listEvents({ jobId: hung.id })).some((e) => e.kind === "attempt.launched"),
    );
    // The hang is found now and the dump wait begins; another job arrives and runs to its end meanwhile.
    const other = await submit("other", ['command: ["/bin/sh", "-c", "exit 0"]']);
    await tickUntil("the other job succeeds", async () => (await store.getJob(other.id))!.state === "SUCCEEDED");
    expect(await store.listIncidents(hung.id)).toEqual([]);
    expect(ended((await store.getJob(hung.id))!.state)).toBe(false);
    // After the dump deadline the hang is recorded.
    clock.advance(61_000);
    await tickUntil("the hang is recorded", async () => (await store.listIncidents(hung.id)).length === 1);
    expect((await store.listIncidents(hung.id))[0]!.cause).toBe("hang");
    expect((await store.getJob(hung.id))!.state).toBe("FAILED");
  }, 60_000);
});

describe("launch failures", () => {
  it("a workdir that is gone at launch fails the job at once with the reason (no relaunch loop)", async () => {
    const { home, store, submit, tickUntil } = await setup(pool(1, 1));
    const gone = path.join(home, "gone");
    const job = await submit("nowork", ['command: ["/bin/sh", "-c", "exit 0"]'], { workdir: gone });
    await tickUntil("the job ends", async () => ended((await store.getJob(job.id))!.state));
    const end = (await store.getJob(job.id))!;
    expect(end.state).toBe("FAILED");
    expect(end.reason).toContain(`launch failed: workdir ${gone} does not exist`);
    expect(await store.listAttempts(job.id)).toHaveLength(1);
    const incidents = await store.listIncidents(job.id);
    expect(incidents.map((i) => i.cause)).toEqual(["software"]);
    expect((await store.listNodes()).every((n) => n.strikes === 0)).toBe(true);
  }, 30_000);

  it("a command that is not found fails the job at once, naming it", async () => {
    const { store, submit, tickUntil } = await setup(pool(1, 1));
    const job = await submit("nocmd", ['command: ["no-such-command-sy", "x"]']);
    await tickUntil("the job ends", async () => ended((await store.getJob(job.id))!.state));
    const end = (await store.getJob(job.id))!;
    expect(end.state).toBe("FAILED");
    expect(end.reason).toContain("command no-such-command-sy is not found on PATH");
    expect(await store.listAttempts(job.id)).toHaveLength(1);
  }, 30_000);

  it("a transient launch error is an incident counted against maxRestarts", async () => {
    class FailingExecutor extends LocalExecutor {
      launches = 0;
      override async launch(_req: LaunchRequest): Promise<never> {
        this.launches++;
        throw Object.assign(new Error("spawn EAGAIN"), { code: "EAGAIN" });
      }
    }
    const executor = new FailingExecutor();
    const { store, submit, tickUntil } = await setup(pool(1, 1), executor);
    const job = await submit("again", [
      'command: ["/bin/sh", "-c", "exit 0"]',
      "recovery: { maxRestarts: 2, backoffSeconds: 0 }",
    ]);
    await tickUntil("the job ends", async () => ended((await store.getJob(job.id))!.state));
    const end = (await store.getJob(job.id))!;
    expect(end.state).toBe("FAILED");
    expect(end.reason).toContain("recovery.maxRestarts is 2");
    expect(executor.launches).toBe(3);
    expect((await store.listIncidents(job.id)).map((i) => i.summary)).toEqual(
      Array(3).fill("launch failed: spawn EAGAIN"),
    );
  }, 30_000);
});

describe("submit-time checks", () => {
  it("the server refuses a workdir that does not exist, naming the field", async () => {
    const { home } = await setup(pool(1, 1));
    const file = path.join(home, "bad.yaml");
    const yaml = "name: bad\ncommand: [x]\nworkdir: nowhere\n";
    expect(() =>
      compileJobSpec(yaml, { file, cluster: pool(1, 1), defaultCheckpointRoot: home, checkWorkdir: true }),
    ).toThrow(
      `${file}:3:10: workdir: ${path.join(home, "nowhere")} does not exist (fix: create the folder, or set workdir to an existing one (relative paths start at the spec's folder))`,
    );
    rmSync(home, { recursive: true, force: true });
  });
});
