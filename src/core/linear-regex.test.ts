import { describe, expect, it } from "vitest";
import { parseLogProgress } from "../supervisor/reports.js";
import { classifyFailure } from "./classify.js";
import { LinearRegExp, linearOrNull, linearRegexProblem } from "./linear-regex.js";
import { compileJobSpec, parseClusterSpec } from "./spec.js";
import { SpecError } from "./spec-errors.js";

describe("LinearRegExp", () => {
  it("matches the catastrophic pattern of issue #9 on a hostile line at once, and still matches good lines", () => {
    const re = new LinearRegExp(String.raw`^(a+)+(?<step>\d+)$`);
    // 10.5 s with the backtracking engine: 27 a's and no digit at the end.
    const hostile = "a".repeat(27) + "!";
    expect(re.exec(hostile)).toBeNull();
    // Much longer hostile input still completes (linear time): a backtracking engine would never finish this.
    expect(re.test("a".repeat(100_000) + "!")).toBe(false);
    const m = re.exec("aaaa42");
    expect(m?.groups).toEqual({ step: "42" });
    expect(m?.[0]).toBe("aaaa42");
    expect(m?.index).toBe(0);
  });

  it("behaves like a RegExp for exec, test, named and numbered groups, case folding and source", () => {
    const re = new LinearRegExp(String.raw`step (?<step>\d+)/\d+ loss (?<loss>\S+)`);
    const m = re.exec("[rank 0] step 12/200 loss 3.25 lr 1e-3");
    expect(m?.groups).toEqual({ step: "12", loss: "3.25" });
    expect([m?.[1], m?.[2], m?.index]).toEqual(["12", "3.25", 9]);
    expect(re.source).toBe(String.raw`step (?<step>\d+)/\d+ loss (?<loss>\S+)`);
    expect(re).toBeInstanceOf(RegExp);
    const i = new LinearRegExp("heart ?beat lost", { ignoreCase: true });
    expect(i.test("HCCL: Heartbeat LOST on device 3")).toBe(true);
    expect(new LinearRegExp("(a)|(b)").exec("b")?.[1]).toBeUndefined();
    expect("x Broken pipe y".replace(new LinearRegExp("Broken (pipe)"), "[$1]")).toBe("x [pipe] y");
  });

  it("refuses what needs backtracking, with the reason", () => {
    expect(linearRegexProblem(String.raw`step (?<step>\d+)`)).toBeNull();
    for (const p of [String.raw`(a)\1`, "foo(?=bar)", "foo(?!bar)", String.raw`(?<x>a)\k<x>`]) {
      expect(linearRegexProblem(p)).toMatch(/no lookahead, lookbehind or backreferences/);
      expect(() => new LinearRegExp(p)).toThrow();
    }
  });
});

describe("user regexes on the server run on the linear-time engine", () => {
  const catastrophic = String.raw`^(a+)+(?<step>\d+)$`;
  const hostile = "a".repeat(50_000) + "!";

  it("a progress regex: the catastrophic pattern passes the spec, completes on a hostile line and still matches", () => {
    const cluster = parseClusterSpec("pools: [{ name: p, nodes: 1 }]\n", "c.yaml");
    const spec = compileJobSpec(`name: t\ncommand: [x]\nprogress: { regex: '${catastrophic}' }\n`, {
      file: "/j/t.yaml",
      cluster,
      defaultCheckpointRoot: "/c",
    });
    const regex = linearOrNull(spec.progress.regex!)!;
    expect(parseLogProgress(hostile, regex)).toBeNull();
    expect(parseLogProgress("aaa17", regex)).toEqual({ step: 17, loss: null });
  });

  it("a cause pattern: classification completes on a hostile log line and still matches", () => {
    const cluster = parseClusterSpec(
      [
        "pools: [{ name: p, nodes: 1 }]",
        "causePatterns:",
        `  - { id: mine, cause: network, regex: '^(a+)+(?<code>\\d+)$', detail: "code $<code>" }`,
      ].join("\n"),
      "c.yaml",
    );
    const patterns = cluster.causePatterns!;
    expect(classifyFailure({ code: 1, signal: null, tail: [hostile] }, patterns).patternId).not.toBe("mine");
    const hit = classifyFailure({ code: 1, signal: null, tail: ["aaaa42"] }, patterns);
    expect([hit.patternId, hit.cause, hit.detail]).toEqual(["mine", "network", "code 42"]);
  });

  it("patterns the engine cannot run are spec errors naming the field", () => {
    const cluster = parseClusterSpec("pools: [{ name: p, nodes: 1 }]\n", "c.yaml");
    let err: unknown;
    try {
      compileJobSpec("name: t\ncommand: [x]\nprogress: { regex: '(?<step>\\d+)(?=x)' }\n", {
        file: "/j/t.yaml",
        cluster,
        defaultCheckpointRoot: "/c",
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SpecError);
    expect((err as SpecError).issues[0]).toMatchObject({ path: "progress.regex", line: 3 });
    expect((err as SpecError).issues[0]!.message).toMatch(
      /^is not a valid regular expression for the linear-time engine/,
    );
    expect(() =>
      parseClusterSpec(
        "pools: [{ name: p, nodes: 1 }]\ncausePatterns:\n  - { id: b, cause: network, regex: '(x)\\1', detail: d }\n",
        "c.yaml",
      ),
    ).toThrow(/causePatterns\[0\]\.regex: is not a valid regular expression for the linear-time engine/);
  });
});
