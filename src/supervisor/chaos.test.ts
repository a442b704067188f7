import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { AttemptRecord, EventRecord, IncidentRecord, RankRecord } from "../store/port.js";
import { injectChaos, injectedIncidents, type ChaosTarget } from "./chaos.js";

const rank: RankRecord = {
  jobId: "j",
  attempt: 1,
  rank: 0,
  node: "n-0",
  pid: 1,
  startTicks: null,
  logPath: "",
  reportPath: "",
  reportOffset: 0,
  exitCode: null,
  exitSignal: null,
  exitedAt: null,
};

function target(): ChaosTarget & { root: string } {
  const root = mkdtempSync(path.join(os.tmpdir(), "sy-chaos-"));
  mkdirSync(path.join(root, "attempt"));
  mkdirSync(path.join(root, "ckpt"));
  return {
    root,
    ranks: [rank],
    attemptDir: path.join(root, "attempt"),
    checkpointDir: path.join(root, "ckpt"),
    signalRank: () => true,
  };
}

describe("chaos on files a rank can write", () => {
  it("corrupt-checkpoint flips one byte of the newest checkpoint's first data file, in place", async () => {
    const t = target();
    mkdirSync(path.join(t.checkpointDir, "step-00000005"));
    mkdirSync(path.join(t.checkpointDir, "step-00000010"));
    writeFileSync(path.join(t.checkpointDir, "step-00000005", "a.pt"), "old");
    writeFileSync(path.join(t.checkpointDir, "step-00000010", "a.pt"), "abcd");
    const r = await injectChaos("corrupt-checkpoint", t, undefined);
    expect(r.message).toBe(`flipped byte 2 of ${path.join(t.checkpointDir, "step-00000010", "a.pt")}`);
    const after = readFileSync(path.join(t.checkpointDir, "step-00000010", "a.pt"));
    expect([...after]).toEqual([0x61, 0x62, 0x63 ^ 0xff, 0x64]);
  });

  it("corrupt-checkpoint never writes through a symlink planted in a checkpoint (or a symlinked step folder)", async () => {
    const t = target();
    const victim = path.join(t.root, "victim");
    writeFileSync(victim, "precious");
    mkdirSync(path.join(t.checkpointDir, "step-00000010"));
    symlinkSync(victim, path.join(t.checkpointDir, "step-00000010", "a.pt"));
    await expect(injectChaos("corrupt-checkpoint", t, undefined)).rejects.toThrow(
      "checkpoint step-00000010 holds no regular data file",
    );
    const elsewhere = path.join(t.root, "elsewhere");
    mkdirSync(elsewhere);
    writeFileSync(path.join(elsewhere, "a.pt"), "precious");
    symlinkSync(elsewhere, path.join(t.checkpointDir, "step-00000020"));
    await expect(injectChaos("corrupt-checkpoint", t, undefined)).rejects.toThrow(
      "checkpoint step-00000010 holds no regular data file",
    );
    expect(readFileSync(victim, "utf8")).toBe("precious");
    expect(readFileSync(path.join(elsewhere, "a.pt"), "utf8")).toBe("precious");
  });

  it("the nan marker is never created through a symlink", async () => {
    const t = target();
    const victim = path.join(t.root, "victim");
    writeFileSync(victim, "precious");
    symlinkSync(victim, path.join(t.attemptDir!, "chaos-nan-rank-0"));
    await expect(injectChaos("nan", t, 0)).rejects.toThrow("a symlink is in the way");
    expect(readFileSync(victim, "utf8")).toBe("precious");
    const ok = target();
    expect((await injectChaos("nan", ok, 0)).rank).toBe(0);
    expect(readFileSync(path.join(ok.attemptDir!, "chaos-nan-rank-0"), "utf8")).toBe("");
  });
});

describe("chaos on a host's link (the Slurm testbed)", () => {
  const shaper = () => {
    const calls: string[][] = [];
    return {
      calls,
      degrade: async (node: string, rate: string, opts?: { burst?: string }) => {
        calls.push(["degrade", node, rate, opts?.burst ?? ""]);
        return "";
      },
      heal: async (node: string) => {
        calls.push(["heal", node]);
        return "";
      },
    };
  };

  it("degrade-link shapes the named host's link (rates as people write them are rewritten), heal-link undoes it", async () => {
    const s = shaper();
    const t = { ...target(), poolExecutor: "slurm", shaper: s };
    const r = await injectChaos("degrade-link", { ...t, link: { node: "a2", rate: "5Mbit/s" } }, undefined);
    expect(r).toMatchObject({ action: "degrade-link", node: "a2", rate: "5mbit" });
    expect(r.message).toBe("a2's link shaped to 5mbit both ways");
    await injectChaos("degrade-link", { ...t, link: { rate: "100mbit", burst: "40mb" } }, undefined);
    await injectChaos("heal-link", { ...t, link: { node: "a2" } }, undefined);
    expect(s.calls).toEqual([
      ["degrade", "a2", "5mbit", ""],
      ["degrade", "n-0", "100mbit", "40mb"], // no host named: the highest running rank's
      ["heal", "a2"],
    ]);
  });

  it("refuses a local pool, a missing or bad rate, with the fix", async () => {
    const s = shaper();
    await expect(
      injectChaos(
        "degrade-link",
        { ...target(), poolExecutor: "local", shaper: s, link: { rate: "5mbit" } },
        undefined,
      ),
    ).rejects.toThrow(/Slurm testbed.*use slow-rank/);
    const t = { ...target(), poolExecutor: "slurm", shaper: s };
    await expect(injectChaos("degrade-link", { ...t, link: { node: "a2" } }, undefined)).rejects.toThrow(
      /needs a rate \(fix: --rate 5mbit\)/,
    );
    await expect(injectChaos("degrade-link", { ...t, link: { node: "a2", rate: "fast" } }, undefined)).rejects.toThrow(
      /bad rate "fast"/,
    );
    expect(s.calls).toEqual([]);
  });
});

describe("which incidents chaos injected (the mark the report reads)", () => {
  it("a rank fault's result names the rank, its host and its attempt: the server's chaos event keeps them", async () => {
    const t = { ...target(), ranks: [{ ...rank, attempt: 3, node: "n-1" }] };
    expect(await injectChaos("kill-rank", t, 0)).toMatchObject({
      action: "kill-rank",
      rank: 0,
      node: "n-1",
      attempt: 3,
    });
    expect(await injectChaos("nan", t, 0)).toMatchObject({ rank: 0, node: "n-1", attempt: 3 });
  });

  type Inc = Pick<
    IncidentRecord,
    "id" | "attempt" | "cause" | "culpritRank" | "culpritNode" | "detectedAt" | "evidence"
  >;
  type Ev = Pick<EventRecord, "id" | "t" | "kind" | "data">;
  type Att = Pick<AttemptRecord, "n" | "startedAt" | "endedAt">;
  const inc = (id: number, attempt: number, detectedAt: number, over: Partial<Inc> = {}): Inc => ({
    id,
    attempt,
    cause: "killed",
    culpritRank: 1,
    culpritNode: "n-1",
    detectedAt,
    evidence: {},
    ...over,
  });
  let nextEvent = 1;
  const chaos = (t: number, data: Record<string, unknown>): Ev => ({ id: nextEvent++, t, kind: "chaos", data });
  const attempts: Att[] = [
    { n: 1, startedAt: 0, endedAt: 100_000 },
    { n: 2, startedAt: 101_000, endedAt: 200_000 },
    { n: 3, startedAt: 201_000, endedAt: null },
  ];
  const marked = (incidents: Inc[], events: Ev[]) =>
    Object.fromEntries([...injectedIncidents(incidents, events, attempts)].map(([id, f]) => [id, f.action]));

  it("marks the incident of the same attempt detected after the injection whose culprit it hit; a real one stays", () => {
    const events = [
      chaos(50_000, { action: "kill-rank", rank: 1, node: "n-1", attempt: 1 }),
      chaos(150_000, { action: "hang-rank", rank: 0, node: "n-0", attempt: 2 }),
    ];
    expect(
      marked(
        [
          inc(1, 1, 50_050), // the kill, found at once
          inc(2, 2, 140_000, { culpritRank: 0, culpritNode: "n-0" }), // a real fault before the hang was injected
          inc(3, 3, 250_000), // attempt 3: nothing injected there
        ],
        events,
      ),
    ).toEqual({ 1: "kill-rank" });
    // The hang's own incident (found 10 s later) is marked, also where the detector named another rank as culprit;
    // a fault of another cause on another rank and host is not.
    const hang = { cause: "hang", culpritRank: 0, culpritNode: "n-0" };
    expect(marked([inc(4, 2, 160_000, hang)], events)).toEqual({ 4: "hang-rank" });
    expect(marked([inc(4, 2, 160_000, { ...hang, culpritRank: 1, culpritNode: "n-1" })], events)).toEqual({
      4: "hang-rank",
    });
    expect(marked([inc(5, 2, 160_000, { cause: "software", culpritRank: 1, culpritNode: "n-1" })], events)).toEqual({});
  });

  it("the fault model's chaos events (a pool playing its failure rate) are the fleet's own: not marked", () => {
    const model = chaos(50_000, { rank: 1, node: "n-1", kind: "kill" });
    expect(marked([inc(1, 1, 50_100)], [model])).toEqual({});
  });

  it("events from before results named the attempt: the attempt that ran then", () => {
    const old = chaos(150_000, { action: "kill-rank", rank: 1, message: "sent SIGKILL to rank 1 on n-1" });
    expect(marked([inc(1, 1, 150_100), inc(2, 2, 150_100)], [old])).toEqual({ 2: "kill-rank" });
  });

  it("resume-rank ends a hang-rank: a later hang of that rank is a real one", () => {
    const events = [
      chaos(110_000, { action: "hang-rank", rank: 1, node: "n-1", attempt: 2 }),
      chaos(112_000, { action: "resume-rank", rank: 1, node: "n-1", attempt: 2 }),
    ];
    expect(marked([inc(1, 2, 180_000)], events)).toEqual({});
    expect(marked([inc(1, 2, 111_500)], events)).toEqual({ 1: "hang-rank" });
  });

  it("a kill marks only the incident that ended its attempt, not a slowdown ridden out", () => {
    const events = [chaos(110_000, { action: "kill-rank", rank: 1, node: "n-1", attempt: 2 })];
    expect(marked([inc(1, 2, 110_200, { evidence: { endedAttempt: false } }), inc(2, 2, 110_300)], events)).toEqual({
      2: "kill-rank",
    });
  });

  it("slow-rank: a slowdown found while it lasts (or within a minute after), not one long after", () => {
    // 30 s of slowness from 105 s: a slowdown found at 140 s is the drill's; a kill of that rank at 198 s is not.
    const events = [chaos(105_000, { action: "slow-rank", rank: 1, node: "n-1", attempt: 2 })];
    const slow = { evidence: { endedAttempt: false } };
    expect(marked([inc(1, 2, 140_000, slow), inc(2, 2, 198_000)], events)).toEqual({ 1: "slow-rank" });
  });

  it("degrade-link: incidents on that host, across attempts, until heal-link", () => {
    const events = [
      chaos(110_000, { action: "degrade-link", node: "n-1", rate: "5mbit", attempt: 2 }),
      chaos(230_000, { action: "heal-link", node: "n-1", attempt: 3 }),
    ];
    expect(
      marked(
        [
          inc(1, 2, 140_000, { culpritRank: null }),
          inc(2, 3, 210_000, { culpritRank: null }),
          inc(3, 3, 215_000, { culpritRank: 0, culpritNode: "n-0" }),
          inc(4, 3, 240_000, { culpritRank: null }),
        ],
        events,
      ),
    ).toEqual({ 1: "degrade-link", 2: "degrade-link" });
  });
});
