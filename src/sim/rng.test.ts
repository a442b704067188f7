import { describe, expect, it } from "vitest";
import { Rng, scenarioSeed } from "./rng.js";

describe("Rng", () => {
  it("repeats its sequence for a seed and differs between seeds", () => {
    const draw = (seed: number) =>
      Array.from(
        { length: 5 },
        (
          (rng) => () =>
            rng.nextUint32()
        )(new Rng(seed)),
      );
    expect(draw(7)).toEqual(draw(7));
    expect(draw(7)).not.toEqual(draw(8));
  });

  it("draws uniform floats in [0, 1) with mean 1/2 and exponentials with mean 1/rate", () => {
    const rng = new Rng(1);
    const n = 200_000;
    let uniformSum = 0;
    let expSum = 0;
    let min = 1;
    let max = 0;
    for (let i = 0; i < n; i++) {
      const u = rng.nextFloat();
      min = Math.min(min, u);
      max = Math.max(max, u);
      uniformSum += u;
      expSum += rng.nextExponential(4);
    }
    expect(min).toBeGreaterThanOrEqual(0);
    expect(max).toBeLessThan(1);
    // Standard errors: 0.29/sqrt(n) = 0.00065 for the uniform mean, 0.25/sqrt(n) = 0.00056 for the exponential.
    expect(Math.abs(uniformSum / n - 0.5)).toBeLessThan(0.003);
    expect(Math.abs(expSum / n - 0.25)).toBeLessThan(0.003);
    expect(rng.nextExponential(0)).toBe(Infinity);
  });

  it("derives distinct, stable seeds per scenario", () => {
    expect(scenarioSeed(1, "ascend")).toBe(scenarioSeed(1, "ascend"));
    expect(scenarioSeed(1, "ascend")).not.toBe(scenarioSeed(1, "h20"));
    expect(scenarioSeed(1, "ascend")).not.toBe(scenarioSeed(2, "ascend"));
  });
});
