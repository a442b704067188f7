import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import type { CompiledJobSpec } from "../core/spec.js";
import type { AttemptRecord, RankRecord, StepSample } from "../store/port.js";
import { ActivityWatch, busyWithinMs, cpuTellsLongSteps, gangBusy } from "./activity.js";
import { fallbackTimeoutMs, judgeHangVerdict, stackExcerpt } from "./detectors/hang.js";

const root = mkdtempSync(path.join(os.tmpdir(), "sy-activity-"));
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill("SIGKILL");
});
afterAll(() => rmSync(root, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function attempt(startedAt: number): AttemptRecord {
  return {
    jobId: "j",
    n: 1,
    state: "RUNNING",
    pool: "p",
    nodes: ["p-0"],
    masterPort: 1,
    dir: root,
    resumeFrom: null,
    resumeStep: null,
    startedAt,
    endedAt: null,
    reason: null,
  } as AttemptRecord;
}

function rank(n: number, pid: number | null): RankRecord {
  const logPath = path.join(root, `rank-${n}.log`);
  const reportPath = path.join(root, `rank-${n}.jsonl`);
  writeFileSync(logPath, "");
  writeFileSync(reportPath, "");
  return {
    jobId: "j",
    attempt: 1,
    rank: n,
    node: "p-0",
    pid,
    rankPid: pid,
    startTicks: null,
    logPath,
    reportPath,
    reportOffset: 0,
    exitCode: null,
    exitSignal: null,
    exitedAt: null,
  } as RankRecord;
}

const cpuPool = { accelerator: { vendor: "cpu" } } as const;
const nvidiaPool = { accelerator: { vendor: "nvidia", model: "H100" } } as const;
const ascendPool = { accelerator: { vendor: "ascend", model: "910B" } } as const;

const detection: CompiledJobSpec["detection"] = {
  startupSeconds: 20,
  hangMinSeconds: 10,
  hangMultiple: 3,
  stackDumpSeconds: 2,
  nanIsFailure: true,
};

describe("output-or-CPU activity (progress fallback)", () => {
  it("a rank that computes is active; one blocked (sleeping, or stopped) is not; output counts from its write time", async () => {
    const busy = spawn("/usr/bin/python3", ["-c", "while True: sum(range(10000))"]);
    const idle = spawn("sleep", ["30"]);
    children.push(busy, idle);
    const ranks = [rank(0, busy.pid!), rank(1, idle.pid!), rank(2, null)];
    const watch = new ActivityWatch();
    const t0 = Date.now();
    const start = attempt(t0 - 1000);
    let look = await watch.look("j", start, ranks, Date.now(), cpuPool);
    for (let i = 0; i < 20 && look.lastActiveAt.get(0) === null; i++) {
      await sleep(200);
      look = await watch.look("j", start, ranks, Date.now(), cpuPool);
    }
    expect(look.lastActiveAt.get(0)).toBeGreaterThanOrEqual(t0);
    expect(look.lastActiveAt.get(1)).toBeNull();
    expect(look.lastActiveAt.get(2)).toBeNull();
    // Output: the log's write time, not the time it was looked at.
    appendFileSync(ranks[2]!.logPath, "Epoch 1 | Batchsize: 32\n");
    const written = new Date(t0 - 200);
    utimesSync(ranks[2]!.logPath, written, written);
    look = await watch.look("j", start, ranks, Date.now(), cpuPool);
    expect(look.lastActiveAt.get(2)).toBeCloseTo(t0 - 200, -1);
    // A busy gang's moments of activity come close together: its pace is short gaps.
    for (let i = 0; i < 5; i++) {
      await sleep(250);
      look = await watch.look("j", start, ranks, Date.now(), cpuPool);
    }
    expect(look.gapsMs.length).toBeGreaterThan(0);
    expect(Math.max(...look.gapsMs)).toBeLessThan(5000);
    // A stopped rank uses no CPU: no longer active.
    busy.kill("SIGSTOP");
    await sleep(300);
    const stoppedAt = (await watch.look("j", start, ranks, Date.now(), cpuPool)).lastActiveAt.get(0)!;
    await sleep(1000);
    expect((await watch.look("j", start, ranks, Date.now(), cpuPool)).lastActiveAt.get(0)).toBe(stoppedAt);
  });

  it("on an accelerator pool CPU is not activity (a rank hung behind a dead peer spins): output alone is", async () => {
    const busy = spawn("/usr/bin/python3", ["-c", "while True: sum(range(10000))"]);
    children.push(busy);
    const ranks = [rank(0, busy.pid!), rank(1, null)];
    const start = attempt(Date.now() - 1000);
    const watches = { cpu: new ActivityWatch(), nvidia: new ActivityWatch(), ascend: new ActivityWatch() };
    const lookAll = async () => {
      const now = Date.now();
      return {
        cpu: await watches.cpu.look("j", start, ranks, now, cpuPool),
        nvidia: await watches.nvidia.look("j", start, ranks, now, nvidiaPool),
        ascend: await watches.ascend.look("j", start, ranks, now, ascendPool),
      };
    };
    let looks = await lookAll();
    for (let i = 0; i < 25 && looks.cpu.lastActiveAt.get(0) === null; i++) {
      await sleep(200);
      looks = await lookAll();
    }
    // The same burning rank: active on a CPU pool; on NVIDIA and Ascend its CPU is sampled and reported, not counted.
    expect(looks.cpu.cpuCounts).toBe(true);
    expect(looks.cpu.lastActiveAt.get(0)).not.toBeNull();
    for (const look of [looks.nvidia, looks.ascend]) {
      expect(look.cpuCounts).toBe(false);
      expect(look.cpuActiveAt.get(0)).not.toBeNull();
      expect(look.lastActiveAt.get(0)).toBeNull();
      expect(look.gapsMs).toEqual([]);
    }
    // Output still counts there, dated by its write.
    appendFileSync(ranks[1]!.logPath, "still here\n");
    const written = new Date(Date.now() - 100);
    utimesSync(ranks[1]!.logPath, written, written);
    looks = await lookAll();
    expect(looks.nvidia.lastActiveAt.get(1)).toBeCloseTo(written.getTime(), -1);
    expect(looks.nvidia.lastActiveAt.get(0)).toBeNull();
    // With the pool unknown, CPU does not count either (the safe side: a hang is found).
    const unknown = await new ActivityWatch().look("j", start, ranks, Date.now(), undefined);
    expect(unknown.cpuCounts).toBe(false);
  });

  it("on an accelerator pool the incident says output alone was watched", () => {
    const now = 100_000;
    const hung = judgeHangVerdict({
      now,
      attempt: attempt(0),
      ranks: [rank(0, null), rank(1, null)],
      detection,
      progress: [],
      recent: [],
      processState: () => "R",
      fallback: { gapsMs: [200, 250], active: true, cpu: false },
      unread: new Map([
        [0, now - 12_000],
        [1, null],
      ]),
    })!;
    expect(hung.kind).toBe("hung");
    expect(hung.dump.facts.culpritRank).toBe(1);
    expect(hung.dump.facts.summary).toMatch(
      /^no output for 12s \(timeout 10s; no progress source matched, so output was watched: CPU does not count on an accelerator pool\);/,
    );
    expect(hung.dump.facts.evidence).toMatchObject({ progressSource: "output" });
  });

  it("the fallback's timeout: the startup window first, then the gang's own rhythm, never below hangMinSeconds", () => {
    expect(fallbackTimeoutMs(detection, 5_000, [], true)).toBe(20_000);
    expect(fallbackTimeoutMs(detection, 25_000, [200, 300, 250], true)).toBe(10_000);
    // A script that prints every 30 s and idles in between: 3 x its gap.
    expect(fallbackTimeoutMs(detection, 200_000, [30_000, 30_500, 29_800], true)).toBe(91_500);
    // Never seen active: silent since launch, judged by the startup timeout as before.
    expect(fallbackTimeoutMs(detection, 60_000, [], false)).toBe(20_000);
  });

  it("with the default 5-minute startup window, a steady gang's rhythm counts once the fallback is in force", () => {
    const d = { ...detection, startupSeconds: 300 };
    const steady = [2_600, 2_700, 2_500, 2_600, 2_650];
    // Before the fallback is in force (30 s), or with too few moments of activity: still the startup timeout.
    expect(fallbackTimeoutMs(d, 25_000, steady, true)).toBe(300_000);
    expect(fallbackTimeoutMs(d, 60_000, steady.slice(0, 4), true)).toBe(300_000);
    // Past 30 s with its rhythm known: max(hangMinSeconds, 3 x p95 gap), not the rest of the 300 s.
    expect(fallbackTimeoutMs(d, 60_000, steady, true)).toBe(10_000);
    expect(fallbackTimeoutMs(d, 60_000, [...steady, 9_000], true)).toBe(27_000);
  });

  it("a gang silent past the timeout is hung, and the incident says output and CPU were watched", () => {
    const now = 100_000;
    const ranks = [rank(0, null), rank(1, null)];
    const base = {
      now,
      attempt: attempt(0),
      ranks,
      detection,
      progress: [],
      recent: [],
      processState: (r: RankRecord) => (r.rank === 1 ? "T" : "S"),
      fallback: { gapsMs: [200, 250], active: true, cpu: true },
    };
    const alive = judgeHangVerdict({
      ...base,
      unread: new Map([
        [0, now - 3_000],
        [1, now - 50_000],
      ]),
    });
    expect(alive).toBeNull();
    const hung = judgeHangVerdict({
      ...base,
      unread: new Map([
        [0, now - 12_000],
        [1, now - 50_000],
      ]),
    })!;
    expect(hung.kind).toBe("hung");
    expect(hung.dump.facts.culpritRank).toBe(1);
    expect(hung.dump.facts.summary).toMatch(
      /^no output or CPU activity for 12s \(timeout 10s; no progress source matched/,
    );
    expect(hung.dump.facts.evidence).toMatchObject({ progressSource: "output-or-cpu" });
    expect(hung.signals.map((s) => s.signal)).toEqual(["SIGUSR1", "SIGUSR1", "SIGCONT"]);
  });

  it("finds the stack dump after a \\r-redrawn progress bar that left no newline before it", () => {
    const tail = [
      "Epoch 0: 100%|██████████| 10/10 [00:00<00:00, 30.34it/s, loss=0.113]",
      "\rEpoch 1:  40%|████      | 4/10 [00:00<00:00, 30.1it/s, loss=0.1]Thread 0x00007f0b (most recent call first):",
      '  File "/w/tqdm_bar.py", line 52 in <module>',
    ];
    expect(stackExcerpt(tail)).toEqual([
      "Thread 0x00007f0b (most recent call first):",
      '  File "/w/tqdm_bar.py", line 52 in <module>',
    ]);
  });
});

describe("a gang busy on CPU past the progress timeout is in a long step, not hung", () => {
  // Rank 0's steps a second apart (the job's pace: timeout max(10 s, 3 x 1 s, 2 x 1 s) = 10 s), then 30 s of silence:
  // the soak-wide lane's first eval (25-32 s), longer than any step the job had made.
  const now = 200_000;
  const lastStep = now - 30_000;
  const recent: StepSample[] = Array.from({ length: 20 }, (_, i) => ({
    jobId: "busy-eval",
    attempt: 1,
    rank: 0,
    step: i + 1,
    t: lastStep - (19 - i) * 1000,
    loss: null,
    tokens: null,
    computeS: null,
  }));
  const input = (busy: boolean, silentMs = 30_000) => ({
    now: lastStep + silentMs,
    attempt: { ...attempt(0), jobId: "busy-eval" },
    ranks: [rank(0, null), rank(1, null)],
    detection: { ...detection, startupSeconds: 300 },
    progress: [
      { rank: 0, lastT: lastStep, lastStep: 20 },
      { rank: 1, lastT: lastStep, lastStep: 20 },
    ],
    recent,
    unread: new Map<number, number | null>(),
    processState: () => "R",
    ...(busy ? { busy } : {}),
  });

  it("silent 30 s with every rank computing: not hung; idle: hung at the progress timeout as before", () => {
    expect(judgeHangVerdict(input(true))).toBeNull();
    const idle = judgeHangVerdict(input(false))!;
    expect(idle.dump.facts.summary).toMatch(/^no progress for 30s \(timeout 10s\);/);
  });

  it("a busy gang is still hung past the startup timeout, and the incident says every rank was busy", () => {
    const hung = judgeHangVerdict(input(true, 301_000))!;
    expect(hung.kind).toBe("hung");
    expect(hung.dump.facts.summary).toMatch(
      /^no progress for 301s \(timeout 300s, every rank busy on CPU all along\);/,
    );
    expect(hung.dump.facts.evidence).toMatchObject({ busy: true, timeoutMs: 300_000 });
  });

  it("only on CPU pools: on an accelerator a rank spins on the CPU while it waits for its device (a hung collective)", () => {
    expect(cpuTellsLongSteps({ accelerator: { vendor: "cpu" } })).toBe(true);
    expect(cpuTellsLongSteps({ accelerator: { vendor: "nvidia", model: "H100" } })).toBe(false);
    expect(cpuTellsLongSteps({ accelerator: { vendor: "ascend", model: "910B" } })).toBe(false);
    expect(cpuTellsLongSteps(undefined)).toBe(false);
  });

  it("gangBusy: every rank computing is busy; one rank stopped (a hang, its peers blocked behind it) is not", async () => {
    const a = spawn("/usr/bin/python3", ["-c", "while True: sum(range(10000))"]);
    const b = spawn("/usr/bin/python3", ["-c", "while True: sum(range(10000))"]);
    children.push(a, b);
    const ranks = [rank(0, a.pid!), rank(1, b.pid!)];
    const watch = new ActivityWatch();
    const start = attempt(Date.now() - 1000);
    let busy = false;
    for (let i = 0; i < 25 && !busy; i++) {
      await sleep(200);
      busy = gangBusy(await watch.look("busy", start, ranks, Date.now(), cpuPool), Date.now());
    }
    expect(busy).toBe(true);
    b.kill("SIGSTOP");
    let stillBusy = true;
    for (let i = 0; i < 30 && stillBusy; i++) {
      await sleep(200);
      stillBusy = gangBusy(await watch.look("busy", start, ranks, Date.now(), cpuPool), Date.now());
    }
    expect(stillBusy).toBe(false);
    expect(busyWithinMs).toBeLessThan(detection.hangMinSeconds * 1000);
  });
});
