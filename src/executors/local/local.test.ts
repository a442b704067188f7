import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { PoolSpec } from "../../core/spec.js";
import type { RankHandle } from "../port.js";
import { LocalExecutor } from "./local.js";
import { readProcStat } from "./procfs.js";

const pool: PoolSpec = { name: "p", executor: "local", accelerator: { vendor: "cpu" }, nodes: 1, devicesPerNode: 1 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function launch(dir: string, script: string): Promise<RankHandle> {
  const [rank] = await new LocalExecutor().launch({
    jobId: "j-1",
    jobName: "j",
    attempt: 1,
    dir,
    pool,
    nodes: ["p-0"],
    procsPerNode: 1,
    command: ["/bin/sh", "-c", script],
    env: {},
    workdir: os.tmpdir(),
    masterPort: 1,
    checkpointDir: path.join(dir, "ck"),
    resumeFrom: null,
  });
  return rank!;
}

async function until<T>(probe: () => T | null | undefined | Promise<T | null | undefined>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== null && v !== undefined) return v;
    if (Date.now() > deadline) throw new Error("timed out");
    await sleep(50);
  }
}

describe("local rank wrapper", () => {
  const root = mkdtempSync(path.join(os.tmpdir(), "sy-local-"));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it("records the rank process's own pid (the wrapper's child), and signals and reads that process", async () => {
    const dir = path.join(root, "pid");
    const ex = new LocalExecutor();
    const rank = await launch(dir, "sleep 30");
    const pid = await until(() => ex.rankPid(rank));
    expect(pid).not.toBe(rank.pid);
    expect(readProcStat(pid)?.ppid).toBe(rank.pid);
    expect(readFileSync(`/proc/${pid}/cmdline`, "utf8")).toContain("sleep");
    expect(ex.processState(rank)).toMatch(/^[RS]$/);
    expect(ex.signalRank(rank, "SIGSTOP")).toBe(true);
    expect(await until(() => (ex.processState(rank) === "T" ? "T" : null))).toBe("T");
    await ex.stop([rank], 2000);
    // Gone, or a zombie waiting for whoever adopted it (PID 1 of a container may reap late): either way not running.
    const after = readProcStat(pid);
    expect(after === null || after.state === "Z").toBe(true);
  }, 20_000);

  it("stamps the log's size and write time while it grows, without touching the log", async () => {
    const dir = path.join(root, "stamps");
    const ex = new LocalExecutor();
    const rank = await launch(dir, "for i in 1 2 3; do echo step $i; sleep 1.1; done");
    const [status] = await until(async () => {
      const [s] = await ex.poll(dir, [rank]);
      return s?.state === "running" ? null : [s];
    });
    expect(status).toMatchObject({ state: "exited", code: 0 });
    expect(readFileSync(rank.logPath, "utf8")).toBe("step 1\nstep 2\nstep 3\n");
    const stamps = readFileSync(`${rank.logPath}.stamps`, "utf8")
      .trim()
      .split("\n")
      .map((l) => l.split(" ").map(Number));
    expect(stamps.length).toBeGreaterThanOrEqual(2);
    for (const [size, t] of stamps) {
      expect([7, 14, 21]).toContain(size);
      expect(Math.abs(t! * 1000 - Date.now())).toBeLessThan(30_000);
    }
    // Sizes only grow, one line per change.
    expect(stamps.map((s) => s[0])).toEqual([...new Set(stamps.map((s) => s[0]))].sort((a, b) => a! - b!));
  }, 20_000);
});

describe("local rank wrapper on a full disk", () => {
  const mount = mkdtempSync(path.join(os.tmpdir(), "sy-full-"));
  let mounted = false;
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", mount], { stdio: "ignore" });
    mounted = true;
  } catch {
    // no mount privilege: the exit-record fallback is still covered below by its file-level contract
  }
  afterAll(() => {
    if (mounted) execFileSync("umount", [mount]);
    rmSync(mount, { recursive: true, force: true });
  });

  it.skipIf(!mounted)(
    "keeps the rank's exit code when the exit record cannot be written",
    async () => {
      const dir = path.join(mount, "attempt-1");
      mkdirSync(dir);
      const ex = new LocalExecutor();
      // The rank fills the disk, then exits 3: its wrapper cannot write {"code":3,...} any more.
      const rank = await launch(dir, `head -c 1000000 /dev/zero > ${JSON.stringify(path.join(mount, "fill"))}; exit 3`);
      const status = await until(async () => {
        const [s] = await ex.poll(dir, [rank]);
        return s?.state === "running" ? null : s;
      });
      expect(status).toMatchObject({ state: "exited", code: 3 });
      expect(readdirSync(dir)).toContain("rank-0.exit.code-3");
    },
    20_000,
  );

  it("calls a rank whose wrapper left only an empty exit record .tmp lost, not vanished", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "sy-lost-"));
    execFileSync("touch", [path.join(dir, "rank-0.exit.tmp")]);
    const handle: RankHandle = { rank: 0, pid: null, startTicks: null, logPath: path.join(dir, "rank-0.log") };
    const [status] = await new LocalExecutor().poll(dir, [handle]);
    expect(status).toMatchObject({ state: "lost" });
    expect(status?.state === "lost" && status.why).toContain("is the disk full?");
    rmSync(dir, { recursive: true });
  });
});
