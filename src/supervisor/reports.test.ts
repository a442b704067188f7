import { appendFileSync, mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { RankRecord } from "../store/port.js";
import {
  lossValue,
  parseLogProgress,
  parseReportLine,
  readNewLines,
  readRank,
  stampsPath,
  unreadActivity,
  writeTimes,
} from "./reports.js";

const dir = () => mkdtempSync(path.join(os.tmpdir(), "sy-reports-"));
const clock = { now: 2_000_000, notBefore: 1_000_000 };

describe("readNewLines", () => {
  it("passes over a line longer than the limit, across reads, and counts it once", async () => {
    const file = path.join(dir(), "r.jsonl");
    writeFileSync(file, `a\n${"x".repeat(5000)}`);
    const first = await readNewLines(file, 0, { lineLimit: 1000, maxBytes: 2002 });
    expect(first.lines).toEqual(["a"]);
    expect(first.overlong).toBe(1);
    appendFileSync(file, `${"x".repeat(3000)}\nb\nc`);
    let offset = first.offset;
    const seen: string[] = [];
    let overlong = first.overlong;
    for (let i = 0; i < 10; i++) {
      const r = await readNewLines(file, offset, { lineLimit: 1000, maxBytes: 2002 });
      seen.push(...r.lines);
      overlong += r.overlong;
      offset = r.offset;
    }
    expect(seen).toEqual(["b"]); // "c" has no newline yet: it waits
    expect(overlong).toBe(1);
    appendFileSync(file, "\n");
    expect((await readNewLines(file, offset)).lines).toEqual(["c"]);
  });

  it("reads at most maxBytes per call and says where each line ends", async () => {
    const file = path.join(dir(), "r.jsonl");
    writeFileSync(file, "aaaa\nbb\ncccccc\n");
    // maxBytes is raised to fit two whole lines of the limit: 6 bytes here.
    const first = await readNewLines(file, 0, { lineLimit: 2, maxBytes: 1 });
    expect(first).toMatchObject({ lines: [], overlong: 1, offset: 5 });
    const second = await readNewLines(file, first.offset, { lineLimit: 2, maxBytes: 1 });
    expect(second).toMatchObject({ lines: ["bb"], ends: [8], overlong: 1, offset: 11 }); // "cccccc" starts too long
  });
});

describe("report lines are validated", () => {
  it("skips what is not a report object, naming why", () => {
    for (const [line, why] of [
      ["null", "not a JSON object"],
      ["[1,2]", "not a JSON object"],
      ["42", "not a JSON object"],
      ["{not json", "not JSON"],
      ['{"kind":"step"}', "a step report without a step"],
      ['{"kind":"step","step":-1}', "step is not a non-negative integer"],
      ['{"kind":"step","step":1.5}', "step is not a non-negative integer"],
      ['{"kind":"step","step":1,"t":"soon"}', "t is not a finite number"],
      ['{"kind":"checkpoint","step":3}', "a checkpoint report without a usable path"],
    ] as const) {
      expect(parseReportLine(line, clock)).toEqual({ kind: "bad", why });
    }
    expect(parseReportLine("  ", clock)).toBeNull();
  });

  it("clamps report times to the reader's clock: a step from the future cannot switch hang detection off", () => {
    expect(parseReportLine('{"kind":"step","step":1,"t":9e12}', clock)).toMatchObject({ t: clock.now });
    expect(parseReportLine('{"kind":"step","step":1,"t":1}', clock)).toMatchObject({ t: clock.notBefore });
    expect(parseReportLine('{"kind":"step","step":1,"t":1500}', clock)).toMatchObject({ t: 1_500_000 });
  });

  it("reads a non-finite loss in every spelling as non-finite (the NaN incident), and a garbage one as none", () => {
    for (const loss of ["1e999", "-1e999", '"nan"', '"NaN"', '"inf"', '"-inf"', '"Infinity"']) {
      const parsed = parseReportLine(`{"kind":"step","step":1,"loss":${loss}}`, clock);
      expect(parsed).toMatchObject({ kind: "step" });
      expect(Number.isFinite((parsed as { loss: number }).loss)).toBe(false);
      expect((parsed as { loss: number | null }).loss).not.toBeNull();
    }
    expect(parseReportLine('{"kind":"step","step":1,"loss":"2.5"}', clock)).toMatchObject({ loss: 2.5 });
    expect(parseReportLine('{"kind":"step","step":1,"loss":{"a":1}}', clock)).toMatchObject({ loss: null });
    expect(lossValue("oops")).toBeNull();
  });

  it("log progress: a step that is not a safe integer is no progress; a loss with trailing text still reads", () => {
    const re = /step (?<step>\S+) loss (?<loss>\S+)/;
    expect(parseLogProgress("step 99999999999999999999 loss 1", re)).toBeNull();
    expect(parseLogProgress("step 3 loss 2.5,", re)).toEqual({ step: 3, loss: 2.5 });
    expect(Number.isNaN(parseLogProgress("step 3 loss nan", re)?.loss)).toBe(true);
  });
});

describe("write times of log lines", () => {
  it("interpolates between stamps by offset, never goes backwards and never passes the reader's clock", () => {
    const stamps = [
      { offset: 0, t: 1_000_000 },
      { offset: 100, t: 1_010_000 },
      { offset: 200, t: 1_012_000 },
      { offset: 300, t: 9_000_000 },
    ];
    expect(writeTimes([50, 100, 150, 300], stamps, clock)).toEqual([1_005_000, 1_010_000, 1_011_000, 2_000_000]);
    expect(
      writeTimes(
        [10],
        [
          { offset: 0, t: 1_500_000 },
          { offset: 20, t: 1_200_000 },
        ],
        clock,
      ),
    ).toEqual([1_500_000]);
  });
});

function rank(d: string, extra: Partial<RankRecord> = {}): RankRecord {
  return {
    jobId: "j",
    attempt: 1,
    rank: 0,
    node: "n",
    pid: null,
    startTicks: null,
    logPath: path.join(d, "rank-0.log"),
    reportPath: path.join(d, "rank-0.jsonl"),
    reportOffset: 0,
    exitCode: null,
    exitSignal: null,
    exitedAt: null,
    ...extra,
  };
}

describe("readRank", () => {
  it("dates regex progress by when each line was written (the wrapper's stamps), not when it is read", async () => {
    const d = dir();
    const r = rank(d);
    // Three lines written at 10 s, 20 s and 30 s (the stamps say so); the server reads them all at t = 100 s.
    writeFileSync(r.reportPath, "");
    writeFileSync(r.logPath, "step 1/3\nstep 2/3\nstep 3/3\n");
    writeFileSync(stampsPath(r.logPath), "9 10.000\n18 20.000\n27 30.000\n");
    const read = await readRank(r, {
      jobId: "j",
      attempt: 1,
      startedAt: 5_000,
      regex: /step (?<step>\d+)/,
      now: () => 100_000,
    });
    expect(read.samples.map((s) => [s.step, s.t])).toEqual([
      [1, 10_000],
      [2, 20_000],
      [3, 30_000],
    ]);
    expect(read.cursor).toMatchObject({ logOffset: 27, logT: 30_000, stampOffset: 29 });
  });

  it("skips and counts bad report lines, passes an over-long one, and finds a non-finite loss", async () => {
    const d = dir();
    const r = rank(d, { badReports: 2 });
    writeFileSync(
      r.reportPath,
      [
        "null",
        "x".repeat(70_000),
        '{"t":10,"kind":"step","step":1,"loss":1e999}',
        '{"t":11,"kind":"step","step":2,"loss":1.0}',
        "",
      ].join("\n"),
    );
    writeFileSync(r.logPath, "");
    const read = await readRank(r, { jobId: "j", attempt: 1, startedAt: 0, regex: null, now: () => 100_000 });
    expect(read.samples.map((s) => s.step)).toEqual([1, 2]);
    expect(read.nan).toEqual({ step: 1, t: 10_000 });
    expect(read.bad).toBe(2);
    // Both kinds are named, whatever order one read met them in.
    expect(read.firstBad).toContain("line longer than");
    expect(read.firstBad).toContain(`not a JSON object: "null"`);
    expect(read.cursor.badReports).toBe(4);
    expect(read.pending).toBe(false);
  });

  it("a file with unread bytes shows the rank alive as of its mtime", async () => {
    const d = dir();
    const r = rank(d);
    writeFileSync(r.reportPath, '{"t":1,"kind":"step","step":1}\n');
    expect(await unreadActivity(r, false)).toBeGreaterThan(Date.now() - 60_000);
    expect(await unreadActivity({ ...r, reportOffset: 1_000 }, false)).toBeNull();
  });
});
