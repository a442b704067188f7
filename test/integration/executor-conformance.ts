import { mkdtempSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { PoolSpec } from "../../src/core/spec.js";
import type { Executor, LaunchedRank, LaunchRequest, RankHandle, RankStatus } from "../../src/executors/port.js";
import { packageRoot } from "../../src/paths.js";

/**
 * One behaviour for every executor (DESIGN: "each passes one shared conformance suite"): the rank contract, exit
 * statuses, signals to one rank that do not kill it, process states, and stopping a gang. Run against the local
 * executor and against the Slurm executor on the multi-host testbed.
 */

export interface ConformanceTarget {
  name: string;
  executor: () => Executor;
  pool: PoolSpec;
  /** Two nodes of the pool. */
  nodes: [string, string];
  python: string;
  /** Where the attempt folders go (shared with the hosts). */
  root?: string;
  /** How long a rank may take from launch to its first output (srun + Python start). */
  startMs?: number;
}

const fixture = path.join(packageRoot, "test", "fixtures", "ranks", "env_sleep.py");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function executorConformance(t: ConformanceTarget): void {
  describe(`executor conformance: ${t.name}`, () => {
    const root = mkdtempSync(path.join(t.root ?? os.tmpdir(), `sy-conf-${t.name}-`));
    const executor = t.executor();
    const startMs = t.startMs ?? 10_000;
    let launches = 0;
    const live: RankHandle[] = [];

    afterAll(async () => {
      await executor.stop(live, 1000);
      for (let i = 1; i <= launches; i++) await executor.release?.(path.join(root, `job-${i}`));
    }, 30_000);

    async function launch(seconds: number, procsPerNode: number, exitCode = 0, extra: Partial<LaunchRequest> = {}) {
      launches++;
      const dir = path.join(root, `job-${launches}`, "attempt-1");
      const req: LaunchRequest = {
        jobId: `conf${launches}`,
        jobName: `conf-${launches}`,
        attempt: 1,
        dir,
        pool: t.pool,
        nodes: [...t.nodes],
        procsPerNode,
        command: [t.python, fixture, String(seconds), String(exitCode)],
        env: { FIXTURE_MARK: "from-the-spec" },
        workdir: root,
        masterPort: 29_500 + launches,
        checkpointDir: path.join(root, `job-${launches}`, "ckpt"),
        resumeFrom: null,
        ...extra,
      };
      const ranks = await executor.launch(req);
      live.push(...ranks);
      return { req, ranks };
    }

    async function waitStatuses(
      dir: string,
      ranks: readonly LaunchedRank[],
      done: (s: RankStatus[]) => boolean,
      timeoutMs = startMs + 15_000,
    ): Promise<RankStatus[]> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const s = await executor.poll(dir, ranks);
        if (done(s)) return s;
        if (Date.now() > deadline) throw new Error(`timed out; last statuses ${JSON.stringify(s)}`);
        await sleep(100);
      }
    }

    function contractOf(r: LaunchedRank): Record<string, string | null> {
      const first = readFileSync(r.logPath, "utf8").split("\n")[0] ?? "";
      return JSON.parse(first) as Record<string, string | null>;
    }

    async function waitLog(r: LaunchedRank, re: RegExp): Promise<void> {
      const deadline = Date.now() + startMs + 10_000;
      for (;;) {
        const text = (() => {
          try {
            return readFileSync(r.logPath, "utf8");
          } catch {
            return "";
          }
        })();
        if (re.test(text)) return;
        if (Date.now() > deadline) throw new Error(`rank ${r.rank}'s log never matched ${re}: ${text.slice(-500)}`);
        await sleep(100);
      }
    }

    it("gives every rank the rank contract, and reports each exit code", async () => {
      const { req, ranks } = await launch(0, 2, 3);
      expect(ranks.map((r) => r.rank)).toEqual([0, 1, 2, 3]);
      const statuses = await waitStatuses(req.dir, ranks, (s) => s.every((x) => x.state === "exited"));
      for (const s of statuses) expect(s).toMatchObject({ state: "exited", code: 3, signal: null });
      const seen = ranks.map(contractOf);
      for (const [i, r] of ranks.entries()) {
        const env = seen[i]!;
        expect(env.RANK).toBe(String(r.rank));
        expect(env.WORLD_SIZE).toBe("4");
        expect(env.LOCAL_WORLD_SIZE).toBe("2");
        expect(env.LOCAL_RANK).toBe(String(r.rank % 2));
        expect(env.NODE_RANK).toBe(String(Math.floor(r.rank / 2)));
        expect(env.SWITCHYARD_NODE).toBe(r.node);
        expect(env.MASTER_PORT).toBe(String(req.masterPort));
        expect(env.SWITCHYARD_ATTEMPT).toBe("1");
        expect(env.SWITCHYARD_REPORT).toBe(r.reportPath);
        expect(env.SWITCHYARD_CHECKPOINT_DIR).toBe(req.checkpointDir);
        expect(env.FIXTURE_MARK).toBe("from-the-spec");
        expect(env.SWITCHYARD_POOL).toBe(t.pool.name);
        // torchrun's convention: a rank sees its host's devices and picks its own by LOCAL_RANK.
        if (t.pool.accelerator.vendor === "ascend") expect(env.ASCEND_RT_VISIBLE_DEVICES).toBe("0,1");
      }
      // Ranks 0 and 1 share the first node, 2 and 3 the second; every rank agrees on the master.
      expect(new Set(ranks.slice(0, 2).map((r) => r.node)).size).toBe(1);
      expect(ranks[0]!.node).not.toBe(ranks[2]!.node);
      expect(new Set(seen.map((e) => e.MASTER_ADDR)).size).toBe(1);
    }, 60_000);

    it("delivers a signal to one rank's own process: SIGUSR1 does not kill it, SIGSTOP shows as state T", async () => {
      const { req, ranks } = await launch(60, 1);
      const [r0, r1] = ranks as [LaunchedRank, LaunchedRank];
      await waitLog(r1, /"RANK"/);
      await waitStatuses(req.dir, ranks, (s) => s.every((x) => x.state === "running"));
      expect(executor.signalRank(r1, "SIGUSR1")).toBe(true);
      await waitLog(r1, /got SIGUSR1/);
      expect(executor.signalRank(r1, "SIGSTOP")).toBe(true);
      await waitFor(() => executor.processState(r1) === "T", startMs + 5000);
      expect(executor.processState(r0)).toMatch(/^[RS]$/);
      expect(executor.signalRank(r1, "SIGCONT")).toBe(true);
      await waitFor(() => /^[RS]$/.test(executor.processState(r1) ?? ""), startMs + 5000);
      const statuses = await executor.poll(req.dir, ranks);
      expect(statuses.map((s) => s.state)).toEqual(["running", "running"]);

      expect(executor.signalRank(r0, "SIGKILL")).toBe(true);
      const after = await waitStatuses(req.dir, ranks, (s) => s[0]?.state === "exited");
      expect(after[0]).toMatchObject({ state: "exited", signal: "SIGKILL", code: null });
      expect(after[1]?.state).toBe("running");

      await executor.stop(ranks, 2000);
      const stopped = await executor.poll(req.dir, ranks);
      expect(stopped[1]?.state).not.toBe("running");
      expect(executor.processState(r1)).toBeNull();
    }, 60_000);

    it("stops a whole gang, stopped (hung) ranks included, within the grace period", async () => {
      const { req, ranks } = await launch(120, 2);
      await Promise.all(ranks.map((r) => waitLog(r, /"RANK"/)));
      await waitStatuses(req.dir, ranks, (s) => s.every((x) => x.state === "running"));
      executor.signalRank(ranks[3]!, "SIGSTOP");
      await waitFor(() => executor.processState(ranks[3]!) === "T", startMs + 5000);
      await executor.stop(ranks, 3000);
      const statuses = await executor.poll(req.dir, ranks);
      for (const s of statuses) expect(s.state).not.toBe("running");
    }, 60_000);
  });
}

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("timed out waiting for a condition");
    await sleep(100);
  }
}
