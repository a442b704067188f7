import { describe, expect, it } from "vitest";
import { dalyInterval, expectedGoodput, youngInterval } from "./checkpoint-interval.js";

const MIN = 60;
const HOUR = 3600;

describe("checkpoint interval formulas (REFERENCE-DATA.md, Daly 2006)", () => {
  // Daly's worked example: delta = 5 min (R = 10 min and a 500 h solve do not enter Eq. 37).
  const delta = 5 * MIN;

  it.each([
    { mtbf: 24 * HOUR, printed: "117", digits: 0 },
    { mtbf: 6 * HOUR, printed: "57", digits: 0 },
    { mtbf: 15 * MIN, printed: "9.1", digits: 1 },
  ])("Daly Eq. 37 gives $printed min for M = $mtbf s", ({ mtbf, printed, digits }) => {
    expect((dalyInterval(delta, mtbf) / MIN).toFixed(digits)).toBe(printed);
  });

  it.each([
    // sqrt(2 * 5 * 1440) = 120 min, sqrt(2 * 5 * 360) = 60 min, sqrt(2 * 5 * 15) = 12.2 min.
    { mtbf: 24 * HOUR, printed: "120", digits: 0 },
    { mtbf: 6 * HOUR, printed: "60", digits: 0 },
    { mtbf: 15 * MIN, printed: "12.2", digits: 1 },
  ])("Young gives $printed min for M = $mtbf s", ({ mtbf, printed, digits }) => {
    expect((youngInterval(delta, mtbf) / MIN).toFixed(digits)).toBe(printed);
  });

  it("Daly falls back to tau = M when the save takes at least 2M", () => {
    expect(dalyInterval(100, 40)).toBe(40);
  });

  it("rejects non-positive inputs", () => {
    expect(() => youngInterval(0, 10)).toThrow(/deltaS/);
    expect(() => dalyInterval(1, -1)).toThrow(/mtbfS/);
  });
});

describe("expectedGoodput", () => {
  it("is 1 without failures or checkpoint cost, in the limit", () => {
    expect(expectedGoodput({ intervalS: 100, saveS: 0, restartS: 0, mtbfS: 1e12 })).toBeCloseTo(1, 6);
  });

  it("matches the first-order estimate 1 - delta/tau - (R + tau/2)/M when everything is small against M", () => {
    const inputs = { intervalS: 600, saveS: 10, restartS: 300, mtbfS: 100 * HOUR };
    const firstOrder = 1 - inputs.saveS / inputs.intervalS - (inputs.restartS + inputs.intervalS / 2) / inputs.mtbfS;
    expect(expectedGoodput(inputs)).toBeCloseTo(firstOrder, 3);
  });

  it("peaks near Daly's interval", () => {
    const saveS = 300;
    const mtbfS = 6 * HOUR;
    const at = (intervalS: number) => expectedGoodput({ intervalS, saveS, restartS: 600, mtbfS });
    const best = dalyInterval(saveS, mtbfS);
    expect(at(best)).toBeGreaterThan(at(best * 0.7));
    expect(at(best)).toBeGreaterThan(at(best * 1.4));
  });
});
