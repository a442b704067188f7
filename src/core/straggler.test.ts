import { describe, expect, it } from "vitest";
import { mulberry32 } from "./random.js";
import { cpuSecondsPerStep, findStraggler, type RankCompute } from "./straggler.js";

/** `perNode` ranks on each of `nodes` hosts; compute time ~ base (±10%), times `slow[rank]` for slow ranks. */
function gang(nodes: string[], perNode: number, base: number, slow: Record<number, number> = {}): RankCompute[] {
  const rnd = mulberry32(11);
  return nodes.flatMap((node, n) =>
    Array.from({ length: perNode }, (_, l) => {
      const rank = n * perNode + l;
      return {
        rank,
        node,
        computeS: Array.from({ length: 20 }, () => base * (slow[rank] ?? 1) * (0.9 + 0.2 * rnd())),
      };
    }),
  );
}

describe("compute outlier (slow chip)", () => {
  it("names the rank whose compute time is an outlier while the others wait, and its host", () => {
    const v = findStraggler(gang(["a1", "a2", "a3", "a4"], 1, 0.1, { 2: 2.4 }));
    expect(v.slowRanks).toEqual([2]);
    expect(v.culpritNode).toBe("a3");
    expect(v.ratio).toBeGreaterThan(2);
    expect(v.ratio).toBeLessThan(2.8);
    expect(v.table[0]).toMatchObject({ rank: 2, node: "a3" });
    expect(v.table).toHaveLength(4);
    expect(v.evidence).toMatch(
      /^compute time per step: rank 2 on a3 0\.2\d\d s, .*; expected 0\.1\d\d s \(the faster half's median\): rank 2 2\.\dx slower while the others wait: host a3$/,
    );
  });

  it("two slow ranks on one host (two chips of a bad board) name that host", () => {
    const v = findStraggler(gang(["a1", "a2", "a3"], 2, 0.1, { 2: 3, 3: 2.5 }));
    expect(v.slowRanks).toEqual([2, 3]);
    expect(v.culpritNode).toBe("a2");
  });

  it("slow ranks on different hosts: no single culprit, both hosts listed", () => {
    const v = findStraggler(gang(["a1", "a2", "a3", "a4", "a5"], 1, 0.1, { 0: 3, 4: 3 }));
    expect(v.slowRanks.sort()).toEqual([0, 4]);
    expect(v.culpritNode).toBeNull();
    expect(v.slowNodes.sort()).toEqual(["a1", "a5"]);
  });

  it("the slower of two ranks (the 2-rank example) is named against the other", () => {
    const v = findStraggler(gang(["local-0", "local-1"], 1, 0.2, { 1: 2.4 }));
    expect(v).toMatchObject({ slowRanks: [1], culpritNode: "local-1" });
  });

  it("healthy jitter, a 1.3x rank, or every rank slow alike: no culprit", () => {
    expect(findStraggler(gang(["a1", "a2", "a3"], 1, 0.1)).culpritNode).toBeNull();
    expect(findStraggler(gang(["a1", "a2", "a3"], 1, 0.1, { 1: 1.3 })).slowRanks).toEqual([]);
    const all = findStraggler(gang(["a1", "a2"], 1, 0.1, { 0: 3, 1: 3 }));
    expect(all.slowRanks).toEqual([]);
    expect(all.evidence).toMatch(/no rank 1\.5x slower/);
  });

  it("peers that wait asleep use no measurable CPU: a rank burning CPU is named against the measurable floor", () => {
    const v = findStraggler([
      { rank: 0, node: "a1", computeS: [0, 0, 0.01, 0, 0, 0] },
      { rank: 1, node: "a2", computeS: [0.7, 0.72, 0.69, 0.7, 0.71, 0.7] },
      { rank: 2, node: "a3", computeS: [0, 0, 0, 0, 0.01, 0] },
    ]);
    expect(v).toMatchObject({ slowRanks: [1], culpritNode: "a2", expectedS: 0 });
    expect(v.ratio).toBeCloseTo(70, 0);
    expect(v.evidence).toMatch(
      /expected 0\.000 s \(the faster half's median; at least 0\.010 s, what can be measured\): rank 1 70\.0x slower/,
    );
    // Every rank below the floor: nothing to say.
    const idle = findStraggler([
      { rank: 0, node: "a1", computeS: [0, 0, 0, 0, 0] },
      { rank: 1, node: "a2", computeS: [0.005, 0.004, 0.006, 0.005, 0.005] },
    ]);
    expect(idle.slowRanks).toEqual([]);
    expect(idle.evidence).toMatch(/no rank computes measurably$/);
  });

  it("says so when it has too little to go on", () => {
    const v = findStraggler([
      { rank: 0, node: "a1", computeS: [0.1, 0.1] },
      { rank: 1, node: "a2", computeS: [] },
    ]);
    expect(v.slowRanks).toEqual([]);
    expect(v.evidence).toBe("needs the compute time of 2+ ranks with 5+ samples each; has 0");
  });
});

describe("compute time from CPU ticks (no SDK)", () => {
  it("CPU seconds between step reports, per step, interpolated between heartbeats", () => {
    // Heartbeats every second; the rank burns 80 ticks/s (0.8 CPU) from t=0; steps every 0.5 s.
    const cpu = Array.from({ length: 11 }, (_, i) => ({ t: i * 1000, cpuTicks: 80 * i }));
    const steps = Array.from({ length: 19 }, (_, i) => ({ step: i + 1, t: 500 + i * 500 }));
    const per = cpuSecondsPerStep(cpu, steps, 100);
    expect(per).toHaveLength(18);
    for (const v of per) expect(v).toBeCloseTo(0.4, 9);
  });

  it("skips steps outside the heartbeats and spans several steps when reports are thinned", () => {
    const cpu = [
      { t: 1000, cpuTicks: 0 },
      { t: 3000, cpuTicks: 100 },
    ];
    const per = cpuSecondsPerStep(cpu, [
      { step: 1, t: 500 }, // before the first heartbeat
      { step: 2, t: 1000 },
      { step: 6, t: 3000 },
    ]);
    expect(per).toEqual([0.25]); // 1 CPU-second over 4 steps
  });

  it("feeds findStraggler: a rank burning twice the CPU per step is named", () => {
    const steps = Array.from({ length: 30 }, (_, i) => ({ step: i + 1, t: 1000 + i * 1000 }));
    const ranks = ["a1", "a2", "a3"].map((node, rank) => ({
      rank,
      node,
      computeS: cpuSecondsPerStep(
        Array.from({ length: 40 }, (_, i) => ({ t: i * 1000, cpuTicks: i * (rank === 1 ? 90 : 30) })),
        steps,
      ),
    }));
    expect(findStraggler(ranks)).toMatchObject({ slowRanks: [1], culpritNode: "a2" });
  });
});
