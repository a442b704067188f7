import { describe, expect, it } from "vitest";
import { backoffMs, decideRecovery, placeAttempt, poolKeepsFailing, type PlacementRequest } from "./recovery.js";

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

describe("restart budget per window", () => {
  it("names the window in the reason", () => {
    expect(
      decideRecovery(
        { ...policy, restartWindowSeconds: 3600 },
        { restarts: 3, culpritNodeStrikes: 0, hardDeviceEvidence: false },
      ),
    ).toMatchObject({ action: "fail", reason: "gave up after 3 restart(s) within 3600s: recovery.maxRestarts is 3" });
  });
});

describe("placement", () => {
  const nodes = [
    { name: "a-0", pool: "a", cordoned: true },
    { name: "a-1", pool: "a", cordoned: false },
    { name: "b-0", pool: "b", cordoned: false },
    { name: "b-1", pool: "b", cordoned: false },
  ];

  const req = (over: Partial<PlacementRequest>): PlacementRequest => ({
    preference: ["a", "b"],
    poolsInClusterOrder: ["a", "b"],
    nodes,
    nodesNeeded: 1,
    ...over,
  });

  it("skips cordoned nodes in the preferred pool", () => {
    expect(placeAttempt(req({}))).toEqual({ pool: "a", nodes: ["a-1"], shrunk: false });
  });

  it("falls back to the next pool when the preferred one cannot host the job", () => {
    expect(placeAttempt(req({ nodesNeeded: 2 }))).toEqual({ pool: "b", nodes: ["b-0", "b-1"], shrunk: false });
  });

  it("goes to a pool that keeps failing only when nothing else fits", () => {
    expect(placeAttempt(req({ avoidPools: ["a"] }))).toEqual({ pool: "b", nodes: ["b-0"], shrunk: false });
    expect(placeAttempt(req({ preference: ["a"], avoidPools: ["a"] }))).toEqual({
      pool: "a",
      nodes: ["a-1"],
      shrunk: false,
    });
  });

  it("shrinks when the spec allows and no pool fits at full size", () => {
    expect(placeAttempt(req({ preference: ["a"], nodesNeeded: 2, minNodes: 1 }))).toEqual({
      pool: "a",
      nodes: ["a-1"],
      shrunk: true,
    });
    expect(placeAttempt(req({ nodesNeeded: 3, minNodes: 2 }))).toEqual({
      pool: "b",
      nodes: ["b-0", "b-1"],
      shrunk: true,
    });
  });

  it("explains why nothing fits", () => {
    expect(placeAttempt(req({ preference: ["a"], nodesNeeded: 2 }))).toEqual({
      pool: null,
      reason:
        "no pool can host the job (a: 1 healthy node(s), 2 needed, cordoned: a-0) (fix: once a cordoned node is " +
        "repaired, `switchyard nodes uncordon a-0`; the job then starts by itself)",
    });
  });

  it("says nothing of cordons when no node is cordoned", () => {
    const open = nodes.map((n) => ({ ...n, cordoned: false }));
    expect(placeAttempt(req({ preference: ["a"], nodes: open, nodesNeeded: 3 }))).toEqual({
      pool: null,
      reason: "no pool can host the job (a: 2 healthy node(s), 3 needed)",
    });
  });
});

describe("placement away from the last culprit", () => {
  const nodes = [
    { name: "a-0", pool: "a", cordoned: false },
    { name: "a-1", pool: "a", cordoned: false },
  ];
  it("prefers other healthy nodes, but uses the culprit when nothing else fits", () => {
    const base = { preference: ["a"], poolsInClusterOrder: ["a"], nodes, avoidNodes: ["a-0"] };
    expect(placeAttempt({ ...base, nodesNeeded: 1 })).toEqual({ pool: "a", nodes: ["a-1"], shrunk: false });
    expect(placeAttempt({ ...base, nodesNeeded: 2 })).toEqual({ pool: "a", nodes: ["a-1", "a-0"], shrunk: false });
  });
});

describe("pool failure policy", () => {
  const policy = { count: 3, windowSeconds: 600 };
  const at = (pool: string, t: number, infrastructure = true) => ({ pool, at: t * 1000, infrastructure });
  it("counts infrastructure incidents on the pool within the window only", () => {
    expect(poolKeepsFailing([at("a", 100), at("a", 200), at("a", 300)], "a", 400_000, policy)).toBe(true);
    expect(poolKeepsFailing([at("a", 100), at("a", 200), at("a", 300, false)], "a", 400_000, policy)).toBe(false);
    expect(poolKeepsFailing([at("a", 100), at("b", 200), at("a", 300)], "a", 400_000, policy)).toBe(false);
    expect(poolKeepsFailing([at("a", 1), at("a", 200), at("a", 300)], "a", 700_000, policy)).toBe(false);
  });
});
