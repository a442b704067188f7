import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { packageRoot } from "../paths.js";
import { attributeFailure, culpritReason, type RankExit, victimsOf } from "./culprit.js";

const exit = (
  rank: number,
  at: number,
  code: number | null,
  tail: string[] = [],
  signal: string | null = null,
): RankExit => ({
  rank,
  node: `n${Math.floor(rank / 2)}`,
  code,
  signal,
  at,
  tail,
});

describe("culprit attribution", () => {
  it("is null when nothing failed", () => {
    expect(attributeFailure([exit(0, 10, 0), exit(1, 11, 0)])).toBeNull();
  });

  it("picks the first rank to fail in time; later failures are victims", () => {
    const a = attributeFailure([
      exit(0, 2000, 1, ["RuntimeError: [/pytorch/third_party/gloo/...] Connection closed by peer [127.0.0.1]:1234"]),
      exit(3, 1000, null, [], "SIGKILL"),
      exit(1, 2100, 1, ["Connection reset by peer"]),
    ])!;
    expect(a.culprit.rank).toBe(3);
    expect(a.victims.map((v) => v.rank)).toEqual([0, 1]);
    expect(a.reason).toBe("rank 3 killed by SIGKILL first; 2 peer(s) failed after it");
  });

  it("within the polling window, prefers a rank that did not report a lost peer", () => {
    const a = attributeFailure([
      exit(0, 1000, 1, ["RuntimeError: Connection closed by peer"]),
      exit(1, 1100, 1, ["Traceback (most recent call last):", "ValueError: bad batch"]),
    ])!;
    expect(a.culprit.rank).toBe(1);
    expect(a.reason).toContain("(the earlier ones reported a lost peer)");
  });

  it("outside the window, time wins even against peer-loss wording", () => {
    const a = attributeFailure([exit(0, 1000, 1, ["Connection closed by peer"]), exit(1, 5000, 1, ["ValueError"])])!;
    expect(a.culprit.rank).toBe(0);
  });

  it("recognises NCCL and HCCL wording as peer loss", () => {
    const a = attributeFailure([
      exit(0, 1000, 1, ["[E ProcessGroupNCCL.cpp] Watchdog caught collective operation timeout"]),
      exit(1, 1050, 1, ["EI0002: notify wait timeout"]),
      exit(2, 1100, 134, ["UCE ERROR on device 2"]),
    ])!;
    expect(a.culprit.rank).toBe(2);
  });

  it("ties in time break by rank, deterministically", () => {
    expect(attributeFailure([exit(1, 1000, 2), exit(0, 1000, 2)])!.culprit.rank).toBe(0);
  });
});

describe("victims once the gang is down", () => {
  const fixture = (name: string) =>
    readFileSync(path.join(packageRoot, "test", "fixtures", "logs", name), "utf8")
      .trimEnd()
      .split("\n");

  it("a peer still running when the culprit's death was seen, that then logged gloo's reset, is a victim", () => {
    // Seen at detection: only rank 1, killed. Rank 0 was still running and went on to log the reset.
    const culprit = attributeFailure([exit(1, 1000, null, [], "SIGKILL")])!.culprit;
    expect(attributeFailure([culprit])!.victims).toEqual([]);
    const after = [culprit, exit(0, 1300, 1, fixture("gloo-connection-reset.log"))];
    expect(victimsOf(culprit, after, new Set([0]))).toEqual([
      { rank: 0, node: "n0", how: "reported a lost peer, then was stopped with the gang" },
    ]);
    expect(culpritReason(culprit, 1)).toBe("rank 1 killed by SIGKILL first; 1 peer(s) failed after it");
  });

  it("a peer that failed on its own after the culprit, with gloo's 'closed by peer', and one stopped silently", () => {
    const culprit = exit(2, 1000, 1, ["ValueError: bad batch"]);
    const victims = victimsOf(
      culprit,
      [culprit, exit(0, 1100, 1, fixture("gloo-connection-closed.log")), exit(1, 1200, null, [], "SIGTERM")],
      new Set([1]),
    );
    expect(victims).toEqual([
      { rank: 0, node: "n0", how: "reported a lost peer and exited with code 1 after the culprit" },
      { rank: 1, node: "n0", how: "was stopped with the gang" },
    ]);
  });

  it("a peer that finished cleanly is no victim", () => {
    const culprit = exit(1, 1000, null, [], "SIGKILL");
    expect(victimsOf(culprit, [culprit, exit(0, 900, 0)], new Set())).toEqual([]);
  });

  it("a culprit whose exit record was lost says so", () => {
    const lost: RankExit = { ...exit(0, 1000, null, [], "LOST"), lost: "disk full" };
    expect(culpritReason(lost, 0)).toBe(
      "rank 0 ended without an exit status (disk full); it was the only rank to fail",
    );
  });
});

describe("a rank lost with its host", () => {
  it("is said to be lost with its host, not 'killed by HOSTLOST'", () => {
    const a = attributeFailure([
      { rank: 1, node: "a3", code: null, signal: "HOSTLOST", at: 1000, tail: [] },
      { rank: 0, node: "a1", code: 1, signal: null, at: 9000, tail: ["RuntimeError: Connection reset by peer"] },
    ])!;
    expect(a.culprit.rank).toBe(1);
    expect(a.reason).toBe(
      "rank 1 was lost with its host a3 (its node agent fell silent) first; 1 peer(s) failed after it",
    );
  });
});
