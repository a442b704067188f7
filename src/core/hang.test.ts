import { describe, expect, it } from "vitest";
import { defaultHangPolicy, hangCulprit, hangTimeoutMs, judgeHang, percentile } from "./hang.js";

describe("hang timeout", () => {
  it("uses the startup timeout before the first step", () => {
    expect(hangTimeoutMs(defaultHangPolicy, [])).toBe(300_000);
  });

  it("is a multiple of the p95 step time, never below the floor", () => {
    const fast = Array.from({ length: 100 }, () => 200);
    expect(hangTimeoutMs(defaultHangPolicy, fast)).toBe(10_000);
    const slow = Array.from({ length: 100 }, () => 5000);
    expect(hangTimeoutMs(defaultHangPolicy, slow)).toBe(15_000);
  });

  it("covers twice the longest step seen, so a periodic eval rarer than the percentile is not a hang", () => {
    // An eval step of 60 s every 25 steps of 5 s: 4% of the window, below the p95.
    const withEvals = [...Array.from({ length: 96 }, () => 5000), ...Array.from({ length: 4 }, () => 60_000)];
    expect(percentile(withEvals, 0.95)).toBe(5000);
    expect(hangTimeoutMs(defaultHangPolicy, withEvals)).toBe(120_000);
    // A new attempt whose window holds no eval yet: the longest step seen in an earlier one still counts.
    const fresh = Array.from({ length: 20 }, () => 5000);
    expect(hangTimeoutMs(defaultHangPolicy, fresh)).toBe(15_000);
    expect(hangTimeoutMs(defaultHangPolicy, fresh, 60_000)).toBe(120_000);
  });

  it("judges the gang by its newest report", () => {
    const ranks = [
      { rank: 0, lastReportAt: 1000, processState: "S" },
      { rank: 1, lastReportAt: 9000, processState: "S" },
    ];
    expect(judgeHang(20_000, 0, ranks, 10_000).hung).toBe(true);
    expect(judgeHang(18_000, 0, ranks, 10_000).hung).toBe(false);
    expect(judgeHang(5000, 0, [{ rank: 0, lastReportAt: null, processState: null }], 10_000)).toEqual({
      hung: false,
      silentMs: 5000,
      timeoutMs: 10_000,
    });
  });
});

describe("hang culprit", () => {
  it("a stopped process beats report times", () => {
    expect(
      hangCulprit([
        { rank: 0, lastReportAt: 100, processState: "S" },
        { rank: 1, lastReportAt: 900, processState: "T" },
      ]),
    ).toEqual({ rank: 1, reason: "rank 1's process is stopped (state T)" });
  });

  it("otherwise the rank that reported last at the oldest time, and never-reported is oldest", () => {
    expect(
      hangCulprit([
        { rank: 0, lastReportAt: 900, processState: "S" },
        { rank: 1, lastReportAt: 100, processState: "S" },
      ])?.rank,
    ).toBe(1);
    expect(
      hangCulprit([
        { rank: 0, lastReportAt: 900, processState: "S" },
        { rank: 1, lastReportAt: null, processState: "S" },
      ])?.reason,
    ).toBe("rank 1 never reported a step");
  });
});
