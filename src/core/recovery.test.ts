import { describe, expect, it } from "vitest";
import { backoffMs, decideRecovery, placeAttempt } from "./recovery.js";

const policy = { maxRestarts: 3, backoffSeconds: 1, maxBackoffSeconds: 5, strikesBeforeCordon: 2 };

describe("recovery policy", () => {
  it("restarts with exponential, capped backoff", () => {
    expect([0, 1, 2, 3, 4].map((r) => backoffMs(policy, r))).toEqual([1000, 2000, 4000, 5000, 5000]);
  });

  it("cordons the culprit node on its Nth strike or at once on hard evidence", () => {
    expect(
      decideRecovery(policy, { restarts: 0, culpritNodeStrikes: 0, hardDeviceEvidence: false }).cordonCulpritNode,
    ).toBe(false);
    expect(
      decideRecovery(policy, { restarts: 0, culpritNodeStrikes: 1, hardDeviceEvidence: false }).cordonCulpritNode,
    ).toBe(true);
    expect(
      decideRecovery(policy, { restarts: 0, culpritNodeStrikes: 0, hardDeviceEvidence: true }).cordonCulpritNode,
    ).toBe(true);
  });

  it("fails with a reason once the restart budget is spent", () => {
    expect(decideRecovery(policy, { restarts: 3, culpritNodeStrikes: 0, hardDeviceEvidence: false })).toEqual({
      action: "fail",
      reason: "gave up after 3 restart(s): recovery.maxRestarts is 3",
      cordonCulpritNode: false,
    });
  });
});

describe("placement", () => {
  const nodes = [
    { name: "a-0", pool: "a", cordoned: true },
    { name: "a-1", pool: "a", cordoned: false },
    { name: "b-0", pool: "b", cordoned: false },
    { name: "b-1", pool: "b", cordoned: false },
  ];

  it("skips cordoned nodes in the preferred pool", () => {
    expect(placeAttempt(["a", "b"], ["a", "b"], nodes, 1)).toEqual({ pool: "a", nodes: ["a-1"] });
  });

  it("falls back to the next pool when the preferred one cannot host the job", () => {
    expect(placeAttempt(["a", "b"], ["a", "b"], nodes, 2)).toEqual({ pool: "b", nodes: ["b-0", "b-1"] });
  });

  it("explains why nothing fits", () => {
    expect(placeAttempt(["a"], ["a", "b"], nodes, 2)).toEqual({
      pool: null,
      reason: "no pool can host the job (a: 1 healthy node(s), 2 needed)",
    });
  });
});

describe("placement away from the last culprit", () => {
  const nodes = [
    { name: "a-0", pool: "a", cordoned: false },
    { name: "a-1", pool: "a", cordoned: false },
  ];
  it("prefers other healthy nodes, but uses the culprit when nothing else fits", () => {
    expect(placeAttempt(["a"], ["a"], nodes, 1, ["a-0"])).toEqual({ pool: "a", nodes: ["a-1"] });
    expect(placeAttempt(["a"], ["a"], nodes, 2, ["a-0"])).toEqual({ pool: "a", nodes: ["a-1", "a-0"] });
  });
});
