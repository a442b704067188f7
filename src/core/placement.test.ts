import { describe, expect, it } from "vitest";
import { scheduleQueue, type DeviceNode, type QueuedJob } from "./placement.js";

const pool = (name: string, count: number, devices: number): DeviceNode[] =>
  Array.from({ length: count }, (_, i) => ({ name: `${name}-${i}`, pool: name, cordoned: false, devices }));

let t = 0;
const job = (id: string, extra: Partial<QueuedJob> = {}): QueuedJob => ({
  id,
  priority: 0,
  queuedAt: ++t,
  preference: [],
  nodesNeeded: 1,
  minNodes: 1,
  procsPerNode: 1,
  ...extra,
});

const none = new Map<string, Set<number>>();

describe("scheduleQueue", () => {
  it("never puts two ranks on one device: 50 one-rank jobs on 2 nodes x 1 device start two, one per node", () => {
    const jobs = Array.from({ length: 50 }, (_, i) => job(`j${i}`));
    const d = scheduleQueue(jobs, pool("p", 2, 1), none, ["p"]);
    const launched = [...d.entries()].filter(([, v]) => v.kind === "launch");
    expect(launched.map(([id, v]) => [id, v.kind === "launch" && v.nodes, v.kind === "launch" && v.devices])).toEqual([
      ["j0", ["p-0"], [[0]]],
      ["j1", ["p-1"], [[0]]],
    ]);
    const waits = [...d.values()].filter((v) => v.kind === "wait");
    expect(waits).toHaveLength(48);
    expect(d.get("j2")).toEqual({
      kind: "wait",
      position: 1,
      reason: "waiting for 1 device(s) on p: 0 free",
      forDevices: true,
    });
    expect(d.get("j49")).toMatchObject({ position: 48 });
  });

  it("counts devices already in use and picks free ones", () => {
    const inUse = new Map([["p-0", new Set([0, 2])]]);
    const d = scheduleQueue([job("a", { procsPerNode: 2 })], pool("p", 1, 4), inUse, ["p"]);
    expect(d.get("a")).toEqual({ kind: "launch", pool: "p", nodes: ["p-0"], shrunk: false, devices: [[1, 3]] });
    const full = scheduleQueue([job("b", { procsPerNode: 3 })], pool("p", 1, 4), inUse, ["p"]);
    expect(full.get("b")).toEqual({
      kind: "wait",
      position: 1,
      reason: "waiting for 3 device(s) on p (1 node(s) x 3): 2 free",
      forDevices: true,
    });
  });

  it("higher priority first; ties in submission order", () => {
    const jobs = [job("old"), job("new"), job("urgent", { priority: 5 })];
    const d = scheduleQueue(jobs, pool("p", 1, 1), none, ["p"]);
    expect(d.get("urgent")?.kind).toBe("launch");
    expect(d.get("old")).toMatchObject({ kind: "wait", position: 1 });
    expect(d.get("new")).toMatchObject({ kind: "wait", position: 2 });
  });

  it("a waiting job holds its pool: a later small job does not overtake it there, but may use another pool", () => {
    const nodes = [...pool("a", 2, 1), ...pool("b", 1, 1)];
    const inUse = new Map([["a-0", new Set([0])]]);
    const d = scheduleQueue(
      [
        job("big", { nodesNeeded: 2, minNodes: 2, preference: ["a"] }),
        job("small-a", { preference: ["a"] }),
        job("small"),
      ],
      nodes,
      inUse,
      ["a", "b"],
    );
    expect(d.get("big")).toMatchObject({
      kind: "wait",
      reason: "waiting for 2 device(s) on a (2 node(s) x 1): 1 free",
    });
    expect(d.get("small-a")).toMatchObject({
      kind: "wait",
      reason: "waiting for 1 device(s) on a: 1 free, held for big, ahead in the queue",
    });
    expect(d.get("small")).toMatchObject({ kind: "launch", pool: "b", nodes: ["b-0"] });
  });

  it("falls back to the next preferred pool when the first is busy; elastic jobs shrink to the free nodes", () => {
    const nodes = [...pool("a", 2, 1), ...pool("b", 2, 1)];
    const busyA = new Map([
      ["a-0", new Set([0])],
      ["a-1", new Set([0])],
    ]);
    expect(scheduleQueue([job("x", { preference: ["a", "b"] })], nodes, busyA, ["a", "b"]).get("x")).toMatchObject({
      kind: "launch",
      pool: "b",
    });
    const oneBusy = new Map([["a-0", new Set([0])]]);
    expect(
      scheduleQueue([job("e", { preference: ["a"], nodesNeeded: 2, minNodes: 1 })], nodes, oneBusy, ["a", "b"]).get(
        "e",
      ),
    ).toEqual({ kind: "launch", pool: "a", nodes: ["a-1"], shrunk: true, devices: [[0]] });
  });

  it("a job no pool can host even when idle waits without holding anything", () => {
    const nodes = pool("p", 2, 1);
    nodes[1]!.cordoned = true;
    const d = scheduleQueue([job("wide", { nodesNeeded: 2, minNodes: 2 }), job("narrow")], nodes, none, ["p"]);
    expect(d.get("wide")).toEqual({
      kind: "wait",
      position: 1,
      reason:
        "no pool can host the job (p: 1 healthy node(s), 2 needed, cordoned: p-1) (fix: once a cordoned node is " +
        "repaired, `switchyard nodes uncordon p-1`; the job then starts by itself)",
      forDevices: false,
    });
    expect(d.get("narrow")).toMatchObject({ kind: "launch", nodes: ["p-0"] });
    const tooMany = scheduleQueue([job("fat", { procsPerNode: 2 })], pool("p", 1, 1), none, ["p"]);
    expect(tooMany.get("fat")).toMatchObject({ kind: "wait", forDevices: false });
    expect((tooMany.get("fat") as { reason: string }).reason).toContain("a node needs 2 device(s) for procsPerNode: 2");
  });
});
