import { describe, expect, it } from "vitest";
import {
  compilePattern,
  componentMatches,
  describeGeneration,
  emptyManifest,
  generationsToPrune,
  parseAdoptedManifest,
  settle,
  watchPatternProblem,
  type AdoptedGeneration,
  type SettleState,
} from "./adopted.js";

function gen(generation: number, p: string, over: Partial<AdoptedGeneration> = {}): AdoptedGeneration {
  return {
    generation,
    path: p,
    stored: `gen-${String(generation).padStart(6, "0")}.ckpt`,
    size: 100,
    sha256: "a".repeat(64),
    mtimeMs: 1000 * generation,
    savedAt: 1000 * generation,
    writeStartedAt: 1000 * generation - 50,
    step: generation * 2,
    attempt: 1,
    ...over,
  };
}

describe("watch patterns", () => {
  it("takes relative paths with * and ? in any component", () => {
    for (const ok of ["snapshot.pt", "ckpt/*.pt", "run-?/model_*.pt", "/abs/in/workdir.pt"]) {
      expect(watchPatternProblem(ok)).toBeNull();
    }
  });

  it("refuses escapes, recursion, empty components and switchyard's own names, with a fix", () => {
    const cases: Array<[string, RegExp]> = [
      ["../other/snapshot.pt", /leaves the workdir/],
      ["ckpt/../../x.pt", /leaves the workdir/],
      ["**/*.pt", /'\*\*'/],
      ["ckpt//x.pt", /empty or '\.' component/],
      ["./x.pt", /empty or '\.' component/],
      ["", /is empty/],
      ["ckpt/[ab].pt", /only '\*' and '\?'/],
      ["a\\b.pt", /backslash/],
      ["x.pt.switchyard-prev-job", /switchyard's own files/],
      ["a/b/c/d/e/f/g/h/i.pt", /more than 8/],
      ["x".repeat(600), /longer than 512/],
    ];
    for (const [pattern, why] of cases) {
      const problem = watchPatternProblem(pattern);
      expect(problem, pattern).toMatch(why);
      expect(problem, pattern).toContain(" | fix: ");
    }
  });

  it("matches a component's names, never hidden files by '*' nor names switchyard gives", () => {
    const [dir, file] = compilePattern("ckpt/*.pt").components;
    expect(dir).toEqual({ literal: "ckpt" });
    expect(componentMatches(file!, "epoch_5.pt")).toBe(true);
    expect(componentMatches(file!, "epoch_5.pth")).toBe(false);
    expect(componentMatches(file!, ".hidden.pt")).toBe(false);
    expect(componentMatches(file!, "x.pt.switchyard-prev-job-1.pt")).toBe(false);
    expect(componentMatches(compilePattern(".*.pt").components[0]!, ".hidden.pt")).toBe(true);
    expect(componentMatches(compilePattern("model_?.pt").components[0]!, "model_a.pt")).toBe(true);
    expect(componentMatches(compilePattern("model_?.pt").components[0]!, "model_ab.pt")).toBe(false);
    // Regex characters in a name are literal.
    expect(componentMatches(compilePattern("a+b(*).pt").components[0]!, "a+b(1).pt")).toBe(true);
    expect(componentMatches(compilePattern("a+b(*).pt").components[0]!, "aab1.pt")).toBe(false);
    expect(compilePattern("snapshot.pt").single).toBe(true);
    expect(compilePattern("ckpt/*.pt").single).toBe(false);
    expect(() => compilePattern("../x")).toThrow(/checkpoint.watch "..\/x" leaves the workdir/);
  });
});

describe("settling", () => {
  const manifest = emptyManifest("job-1", "/w", "snapshot.pt");

  it("adopts a file once its size and mtime have held for the settle time, and only once", () => {
    const states = new Map<string, SettleState>();
    const look = (t: number, size: number, mtimeMs: number) =>
      settle(states, [{ path: "snapshot.pt", size, mtimeMs }], manifest, t, 2000);
    expect(look(0, 10, 1)).toEqual([]); // first seen: the write may go on
    expect(look(500, 20, 2)).toEqual([]); // still growing
    expect(look(1000, 30, 3)).toEqual([]); // still growing
    expect(look(2900, 30, 3)).toEqual([]); // stable for 1.9 s
    const ready = look(3000, 30, 3);
    expect(ready).toEqual([{ path: "snapshot.pt", size: 30, mtimeMs: 3, changedAt: 0 }]);
  });

  it("starts a new write when a file that held still for a while changes again before it settled", () => {
    const states = new Map<string, SettleState>();
    const look = (t: number, size: number, mtimeMs: number) =>
      settle(states, [{ path: "snapshot.pt", size, mtimeMs }], manifest, t, 5000);
    look(0, 10, 1);
    look(200, 10, 1);
    look(1500, 10, 2); // held 1.5 s, then saved again: the write of this version began here
    expect(states.get("snapshot.pt")!.changedAt).toBe(1500);
    look(1700, 20, 3); // a write in progress changes at every look: the same write
    expect(look(6700, 20, 3)).toEqual([{ path: "snapshot.pt", size: 20, mtimeMs: 3, changedAt: 1500 }]);
  });

  it("leaves a file that equals its newest generation, and files in flight", () => {
    const m = emptyManifest("job-1", "/w", "*.pt");
    m.generations.push(gen(1, "a.pt", { size: 5, mtimeMs: 7 }));
    const states = new Map<string, SettleState>();
    const live = [
      { path: "a.pt", size: 5, mtimeMs: 7.0004 },
      { path: "b.pt", size: 5, mtimeMs: 7 },
    ];
    settle(states, live, m, 0, 1000);
    expect(settle(states, live, m, 1000, 1000, new Set(["b.pt"]))).toEqual([]);
    expect(settle(states, live, m, 1000, 1000).map((f) => f.path)).toEqual(["b.pt"]);
    // A changed a.pt (same size, new mtime) is a new version to settle.
    const changed = [{ path: "a.pt", size: 5, mtimeMs: 9 }];
    settle(states, changed, m, 2000, 1000);
    expect(settle(states, changed, m, 3000, 1000).map((f) => f.path)).toEqual(["a.pt"]);
  });

  it("forgets files that went away", () => {
    const states = new Map<string, SettleState>();
    settle(states, [{ path: "x.pt", size: 1, mtimeMs: 1 }], manifest, 0, 1000);
    settle(states, [], manifest, 500, 1000);
    expect(states.size).toBe(0);
  });
});

describe("retention and the manifest", () => {
  it("keeps the newest `keep` generations of each file", () => {
    const m = emptyManifest("job-1", "/w", "*.pt");
    m.generations.push(gen(1, "a.pt"), gen(2, "b.pt"), gen(3, "a.pt"), gen(4, "a.pt"), gen(5, "a.pt"));
    expect(
      generationsToPrune(m, 2)
        .map((g) => g.generation)
        .sort(),
    ).toEqual([1, 3]);
    expect(generationsToPrune(m, 5)).toEqual([]);
  });

  it("parses what it writes and refuses a tampered one with the reason", () => {
    const m = emptyManifest("job-1", "/w", "snapshot.pt");
    m.generations.push(gen(1, "snapshot.pt"));
    m.next = 2;
    expect(parseAdoptedManifest(JSON.parse(JSON.stringify(m)))).toEqual(m);
    expect(parseAdoptedManifest({ ...m, format: "x" })).toMatch(/unknown adopted manifest format/);
    const escaping = { ...m, generations: [gen(1, "../etc/passwd")] };
    expect(parseAdoptedManifest(escaping)).toMatch(/malformed generation/);
    const stored = { ...m, generations: [gen(1, "snapshot.pt", { stored: "../../x" })] };
    expect(parseAdoptedManifest(stored)).toMatch(/malformed generation/);
    expect(parseAdoptedManifest({ ...m, generations: [gen(1, "s.pt", { sha256: "zz" })] })).toMatch(/malformed/);
    expect(parseAdoptedManifest(null)).toMatch(/not a JSON object/);
  });

  it("says a generation with its step and time", () => {
    expect(describeGeneration(gen(4, "snapshot.pt", { step: 10, savedAt: Date.UTC(2026, 0, 2, 3, 4, 5) }))).toBe(
      "generation 4 (step/epoch ~10, saved 2026-01-02T03:04:05.000Z)",
    );
    expect(describeGeneration(gen(1, "s.pt", { step: null, savedAt: 0 }))).toBe(
      "generation 1 (saved 1970-01-01T00:00:00.000Z)",
    );
  });
});
