import { describe, expect, it } from "vitest";
import { localizeNetwork, parseProbeOutput, type PairRate } from "./netlocalize.js";

/** Every pair of `hosts` (as the probe schedules them); pairs touching a slow host run at its rate. */
function pairs(hosts: string[], slow: Record<string, number> = {}, healthy = 9.5): PairRate[] {
  const out: PairRate[] = [];
  for (let i = 0; i < hosts.length; i++)
    for (let j = i + 1; j < hosts.length; j++) {
      const a = hosts[i]!;
      const b = hosts[j]!;
      const rate = Math.min(slow[a] ?? Infinity, slow[b] ?? Infinity, healthy + ((i * 7 + j) % 3) * 0.4);
      out.push({ from: a, to: b, gbitS: rate });
    }
  return out;
}

const hosts = ["a1", "a2", "a3", "a4"];

describe("network localization", () => {
  it("the host common to the slow pairs is the culprit, with the table and the expectation as evidence", () => {
    const v = localizeNetwork(pairs(hosts, { a2: 0.096 }));
    expect(v.kind).toBe("host");
    expect(v.culprits).toEqual(["a2"]);
    expect(v.slowPairs.map((p) => `${p.from}-${p.to}`).sort()).toEqual(["a1-a2", "a2-a3", "a2-a4"]);
    expect(v.evidence).toMatch(
      /^probe: a1->a2 96 Mbit\/s, a2->a3 96 Mbit\/s, a2->a4 96 Mbit\/s, .*a3->a4 10\.\d\d Gbit\/s; slow: the pairs 99x below the others \(96 Mbit\/s against 9\.50 Gbit\/s; slow means 5x below the rest\): every slow pair has a2 at one end, and every pair of a2 is slow: host a2$/,
    );
  });

  it("healthy: nobody", () => {
    const v = localizeNetwork(pairs(hosts));
    expect(v).toMatchObject({ kind: "healthy", culprits: [], slowPairs: [] });
    expect(v.evidence).toMatch(/no pair 5x below the others \(fastest 10\.\d\d Gbit\/s\): every pair is fast$/);
    // Healthy pairs scatter (a lucky fast pair, a slow moment on a loaded host): within 5x of each other is healthy.
    const scattered = [28, 18, 9, 6, 3.2, 1.1].map((g, i) => ({ from: `h${i}`, to: `h${i + 1}`, gbitS: g }));
    expect(localizeNetwork(scattered).kind).toBe("healthy");
  });

  it("every pair slow against the pool's expected rate: the pool is degraded, not a host", () => {
    const all = pairs(hosts, { a1: 0.1, a2: 0.1, a3: 0.1, a4: 0.1 });
    const v = localizeNetwork(all, { slowShare: 0.25, expectedGbitS: 10 });
    expect(v.kind).toBe("pool");
    expect(v.culprits).toEqual([]);
    expect(v.evidence).toMatch(/expected 10\.00 Gbit\/s, slow under 2\.50 Gbit\/s: every pair is slow: the pool's/);
    // Without an expected rate, uniformly slow pairs look alike: nothing stands out.
    expect(localizeNetwork(all).kind).toBe("healthy");
  });

  it("two collapsed hosts are both named; a ring names the host between its two slow transfers", () => {
    expect(localizeNetwork(pairs(hosts, { a2: 0.1, a3: 0.1 }))).toMatchObject({ kind: "host", culprits: ["a2", "a3"] });
    const ring: PairRate[] = [
      { from: "a1", to: "a2", gbitS: 0.1 },
      { from: "a2", to: "a3", gbitS: 0.1 },
      { from: "a3", to: "a4", gbitS: 9 },
      { from: "a4", to: "a1", gbitS: 9 },
    ];
    expect(localizeNetwork(ring)).toMatchObject({ kind: "host", culprits: ["a2"] });
  });

  it("a pair that could not be measured counts as slow; a lone slow pair with fast pairs at both ends is inconclusive", () => {
    const failed = pairs(hosts).map((p) =>
      p.from === "a4" || p.to === "a4" ? { ...p, gbitS: null, error: "host did not answer within the timeout" } : p,
    );
    const v = localizeNetwork(failed);
    expect(v).toMatchObject({ kind: "host", culprits: ["a4"] });
    expect(v.evidence).toContain("failed (host did not answer within the timeout)");
    const lone = pairs(hosts).map((p) => (p.from === "a1" && p.to === "a3" ? { ...p, gbitS: 0.2 } : p));
    expect(localizeNetwork(lone)).toMatchObject({ kind: "inconclusive", culprits: ["a1", "a3"] });
  });

  it("two hosts, one slow pair: either end", () => {
    const v = localizeNetwork([{ from: "a1", to: "a2", gbitS: 0.1 }], { slowShare: 0.25, expectedGbitS: 10 });
    expect(v).toMatchObject({ kind: "inconclusive", culprits: ["a1", "a2"] });
  });
});

describe("probe output", () => {
  it("reads every host's JSON lines into one table, errors as unmeasured pairs, other lines as problems", () => {
    const { pairs: table, problems } = parseProbeOutput([
      [
        '{"kind": "pair", "from": "a1", "to": "a2", "bytes": 1, "seconds": 2.1, "gbit_s": 0.25, "sustained_gbit_s": 0.098}',
        '{"kind": "error", "from": "a3", "to": "a4", "error": "ConnectionRefusedError: [Errno 111]"}',
        '{"kind": "done", "mode": "full", "pairs": 1, "seconds": 3}',
      ].join("\n"),
      "",
      "Traceback (most recent call last):\n",
    ]);
    expect(table).toEqual([
      { from: "a1", to: "a2", gbitS: 0.098, avgGbitS: 0.25 },
      { from: "a3", to: "a4", gbitS: null, error: "ConnectionRefusedError: [Errno 111]" },
    ]);
    expect(problems).toEqual(["not a probe line: Traceback (most recent call last):"]);
  });
});
