import { describe, expect, it } from "vitest";
import { detectCrashLoop, type CrashRecord } from "./crashloop.js";

const crash = (attempt: number, nodes: string[], over: Partial<CrashRecord> = {}): CrashRecord => ({
  attempt,
  cause: "software",
  signature: "ValueError: bad batch at step <n>",
  step: 40,
  nodes,
  ...over,
});

describe("crash-loop detection", () => {
  it("fires on the same signature at the same step on different nodes", () => {
    const v = detectCrashLoop([crash(1, ["a"]), crash(2, ["b"])], 2);
    expect(v.deterministic).toBe(true);
    expect(v.evidence.map((e) => e.attempt)).toEqual([1, 2]);
  });

  it("does not fire on one node only: that could be the node", () => {
    expect(detectCrashLoop([crash(1, ["a"]), crash(2, ["a"])], 2).deterministic).toBe(false);
  });

  it("does not fire at different steps, with different errors, or for infrastructure causes", () => {
    expect(detectCrashLoop([crash(1, ["a"]), crash(2, ["b"], { step: 41 })], 2).deterministic).toBe(false);
    expect(detectCrashLoop([crash(1, ["a"]), crash(2, ["b"], { signature: "KeyError: x" })], 2).deterministic).toBe(
      false,
    );
    expect(
      detectCrashLoop([crash(1, ["a"], { cause: "device" }), crash(2, ["b"], { cause: "device" })], 2).deterministic,
    ).toBe(false);
  });

  it("waits for the configured number of matching crashes", () => {
    expect(detectCrashLoop([crash(1, ["a"]), crash(2, ["b"])], 3).deterministic).toBe(false);
    expect(detectCrashLoop([crash(1, ["a"]), crash(2, ["b"]), crash(3, ["a"])], 3).deterministic).toBe(true);
  });
});
