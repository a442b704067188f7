import { describe, expect, it } from "vitest";
import { decideEviction } from "./evict.js";

describe("restart or continue", () => {
  it("40% slow for 30 minutes left costs 12 minutes; a 2-minute restart wins", () => {
    const d = decideEviction({
      factor: 1.4,
      remainingSteps: 3600,
      baselineStepS: 0.5, // 30 min left at the baseline pace
      restartS: 90,
      stepsSinceCheckpoint: 66, // 33 s to recompute
      detectionS: 3,
    });
    expect(d.continueCostS).toBeCloseTo(720, 6);
    expect(d.evictCostS).toBeCloseTo(126, 6);
    expect(d.evict).toBe(true);
    expect(d.sentence).toBe(
      "continuing costs 12.0 min (40% slow for 30.0 min left); " +
        "evicting costs 2.1 min (restart 1.6 min, 66 steps to recompute 33.0 s): evict",
    );
  });

  it("a 5% slowdown near the end of a run is not worth a restart", () => {
    const d = decideEviction({
      factor: 1.05,
      remainingSteps: 200,
      baselineStepS: 0.5,
      restartS: 30,
      stepsSinceCheckpoint: 10,
    });
    expect(d.continueCostS).toBeCloseTo(5, 6);
    expect(d.evictCostS).toBeCloseTo(35, 6);
    expect(d.evict).toBe(false);
    expect(d.sentence).toMatch(
      /^continuing costs 5\.0 s \(5% slow for 1\.7 min left\); evicting costs 35\.0 s .*: continue$/,
    );
  });

  it("a shrink that leaves the run slower afterwards is charged for it", () => {
    const base = { factor: 1.5, remainingSteps: 1000, baselineStepS: 1, restartS: 20, stepsSinceCheckpoint: 0 };
    expect(decideEviction(base).evict).toBe(true); // 500 s against 20 s
    const shrink = decideEviction({ ...base, paceAfterEviction: 4 / 3 }); // 4 hosts -> 3: 333 s slower after it
    expect(shrink.evictCostS).toBeCloseTo(20 + 1000 / 3, 6);
    expect(shrink.evict).toBe(true);
    expect(shrink.sentence).toContain("33% slower after it 5.6 min");
    expect(decideEviction({ ...base, paceAfterEviction: 1.6 }).evict).toBe(false); // slower after than now
  });

  it("without a step target a lasting slowdown always pays for a restart", () => {
    const d = decideEviction({
      factor: 2,
      remainingSteps: null,
      baselineStepS: 1,
      restartS: 600,
      stepsSinceCheckpoint: 5,
    });
    expect(d.evict).toBe(true);
    expect(d.continueCostS).toBe(Number.POSITIVE_INFINITY);
    expect(d.sentence).toMatch(/no step target.*evicting costs 10\.1 min .*: evict$/);
  });

  it("no slowdown, nothing to gain", () => {
    const d = decideEviction({
      factor: 0.9,
      remainingSteps: 100,
      baselineStepS: 1,
      restartS: 1,
      stepsSinceCheckpoint: 0,
    });
    expect(d.continueCostS).toBe(0);
    expect(d.evict).toBe(false);
  });
});
