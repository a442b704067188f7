import { describe, expect, it } from "vitest";
import { FaultModel } from "./fault-model.js";
import type { PoolSpec } from "../core/spec.js";

const pool = (faultModel: PoolSpec["faultModel"]): PoolSpec => ({
  name: "flaky",
  executor: "local",
  accelerator: { vendor: "ascend" },
  nodes: 2,
  devicesPerNode: 2,
  faultModel,
});

/** Draws 1 s ticks for `seconds` and counts faults by kind. */
function run(model: FaultModel, seconds: number, devices: number): { kill: number; hang: number } {
  const counts = { kill: 0, hang: 0 };
  for (let i = 0; i < seconds; i++) {
    const f = model.draw(1000, devices);
    if (f) counts[f.kind]++;
  }
  return counts;
}

describe("pool fault model", () => {
  it("injects nothing without a model", () => {
    expect(run(new FaultModel(pool(undefined)), 10_000, 2)).toEqual({ kill: 0, hang: 0 });
  });

  it("kills at the declared per-device MTBF (within sampling error)", () => {
    // 2 devices, MTBF 100 s each: 2 failures per 100 s, 2,000 expected in 100,000 s (sd ~45).
    const { kill } = run(new FaultModel(pool({ deviceMtbfSeconds: 100, seed: 3 })), 100_000, 2);
    expect(kill).toBeGreaterThan(1800);
    expect(kill).toBeLessThan(2200);
  });

  it("hangs at the declared chance per minute, and replays with the same seed", () => {
    // P(at least one hang in a minute) = 0.5 is a rate of ln 2 per minute: about 693 in 1,000 minutes (sd ~26).
    const a = run(new FaultModel(pool({ hangProbabilityPerMinute: 0.5, seed: 9 })), 60_000, 2);
    expect(a.hang).toBeGreaterThan(615);
    expect(a.hang).toBeLessThan(775);
    expect(run(new FaultModel(pool({ hangProbabilityPerMinute: 0.5, seed: 9 })), 60_000, 2)).toEqual(a);
  });
});
