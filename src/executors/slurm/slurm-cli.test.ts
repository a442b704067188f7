import { describe, expect, it } from "vitest";
import { nodeUnusable, parseSinfo, parseState } from "./slurm-cli.js";

const us = "\u001f";
const row = (...f: string[]) => f.join(us);

describe("sinfo parsing", () => {
  it("reads Slurm's state words, with * as not responding and flags as separate words", () => {
    expect(parseState("idle")).toEqual(["idle"]);
    expect(parseState("idle*")).toEqual(["idle", "not_responding"]);
    expect(parseState("mixed+drain")).toEqual(["mixed", "drain"]);
    expect(parseState("DOWN*")).toEqual(["down", "not_responding"]);
    expect(parseState("drained~")).toEqual(["drained"]);
  });

  it("merges a node listed once per partition, and keeps features, address and reason", () => {
    const nodes = parseSinfo(
      [
        row("a1", "ascend*", "idle", "ascend910b,hbm64", "2", "10.77.0.11", "none"),
        row("a1", "debug", "idle", "ascend910b,hbm64", "2", "10.77.0.11", "none"),
        row("n2", "nvidia", "drained", "h20", "2", "10.77.0.22", "switchyard: incident #3 (xid 79)"),
        "",
      ].join("\n"),
    );
    expect(nodes).toEqual([
      {
        name: "a1",
        state: ["idle"],
        partitions: ["ascend", "debug"],
        features: ["ascend910b", "hbm64"],
        cpus: 2,
        address: "10.77.0.11",
        reason: null,
      },
      {
        name: "n2",
        state: ["drained"],
        partitions: ["nvidia"],
        features: ["h20"],
        cpus: 2,
        address: "10.77.0.22",
        reason: "switchyard: incident #3 (xid 79)",
      },
    ]);
  });

  it("never places on a node that is down, drained, draining or not responding", () => {
    const node = (state: string) => ({ ...parseSinfo(row("x", "p", state, "(null)", "1", "x", "none"))[0]! });
    for (const s of ["down*", "drained", "mixed+drain", "idle*", "fail", "down"])
      expect(nodeUnusable(node(s))).toBe(true);
    for (const s of ["idle", "mixed", "allocated", "completing"]) expect(nodeUnusable(node(s))).toBe(false);
    expect(node("idle").features).toEqual([]);
  });
});
