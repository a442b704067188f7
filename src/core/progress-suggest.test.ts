import { describe, expect, it } from "vitest";
import { parseLogProgress } from "../supervisor/reports.js";
import { LinearRegExp, linearRegexProblem } from "./linear-regex.js";
import { suggestProgressRegex, visibleLines } from "./progress-suggest.js";

/** The suggestion must work where it will be used: as a job's progress.regex, on the linear-time engine. */
function readBack(regex: string, lines: string[]): Array<{ step: number; loss: number | null } | null> {
  expect(linearRegexProblem(regex)).toBeNull();
  const re = new LinearRegExp(regex);
  return lines.map((l) => parseLogProgress(l, re));
}

describe("progress regex suggestions from real-style lines", () => {
  it("DDP tutorial: Epoch grows, Batchsize and Steps do not", () => {
    const lines = [
      "[GPU0] Epoch 0 | Batchsize: 32 | Steps: 64",
      "[GPU1] Epoch 0 | Batchsize: 32 | Steps: 64",
      "Epoch 0 | Training snapshot saved at snapshot.pt",
      "[GPU0] Epoch 1 | Batchsize: 32 | Steps: 64",
      "[GPU0] Epoch 2 | Batchsize: 32 | Steps: 64",
      "[GPU0] Epoch 3 | Batchsize: 32 | Steps: 64",
    ];
    const s = suggestProgressRegex(lines)!;
    expect(s.regex).toBe("Epoch\\s*(?<step>\\d+)");
    expect(s.counter).toBe("Epoch");
    expect(readBack(s.regex, ["[GPU0] Epoch 3 | Batchsize: 32 | Steps: 64"])).toEqual([{ step: 3, loss: null }]);
  });

  it("epoch prints with a loss: the loss group is added when every counter line has it", () => {
    const lines = [
      "epoch 1/20 train_loss=15.7896 lr=0.0100 (0.4s)",
      "epoch 2/20 train_loss=14.9512 lr=0.0100 (0.4s)",
      "epoch 3/20 train_loss=10.7757 lr=0.0100 (0.4s)",
    ];
    const s = suggestProgressRegex(lines)!;
    expect(s.loss).toBe(true);
    expect(readBack(s.regex, lines)).toEqual([
      { step: 1, loss: 15.7896 },
      { step: 2, loss: 14.9512 },
      { step: 3, loss: 10.7757 },
    ]);
  });

  it("logging-module lines: the step, not the timestamp's digits or the rate", () => {
    const lines = [
      "2026-11-27 04:18:51,100 - trainer - INFO - world size 2, local rank 0",
      "2026-11-27 04:18:51,880 - trainer - INFO - step 10 | loss 0.2243 | 481.3 samples/s",
      "2026-11-27 04:18:52,212 - trainer - INFO - step 20 | loss 0.0331 | 481.8 samples/s",
      "2026-11-27 04:18:52,552 - trainer - INFO - step 30 | loss 0.0029 | 471.1 samples/s",
    ];
    const s = suggestProgressRegex(lines)!;
    expect(s.steps).toEqual([10, 20, 30]);
    expect(readBack(s.regex, lines.slice(1)).map((p) => p?.step)).toEqual([10, 20, 30]);
    expect(readBack(s.regex, [lines[2]!])[0]?.loss).toBeCloseTo(0.0331);
  });

  it("tqdm bars redrawn with carriage returns: the epoch (the in-bar count restarts every epoch)", () => {
    const bar = (e: number, n: number) =>
      `Epoch ${e}:  ${n * 10}%|${"█".repeat(n)}${" ".repeat(10 - n)}| ${n}/10 [00:00<00:00, 30.24it/s, loss=0.0${n}]`;
    const lines = [0, 1, 2].map((e) => [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((n) => `\r${bar(e, n)}`).join(""));
    expect(visibleLines(lines)).toHaveLength(30);
    const s = suggestProgressRegex(lines)!;
    expect(s.counter).toBe("Epoch");
    // As the supervisor reads a log: one line per newline, the first match in it.
    expect(readBack(s.regex, lines).map((p) => p?.step)).toEqual([0, 1, 2]);
  });

  it("prefers a step counter to an epoch counter when both grow", () => {
    const lines = ["epoch 1 iter 100 loss 2.5", "epoch 1 iter 200 loss 2.1", "epoch 2 iter 300 loss 1.9"];
    const s = suggestProgressRegex(lines)!;
    expect(s.counter).toBe("iter");
    expect(readBack(s.regex, lines)).toEqual([
      { step: 100, loss: 2.5 },
      { step: 200, loss: 2.1 },
      { step: 300, loss: 1.9 },
    ]);
  });

  it("bracketed and colon forms: 'Epoch [3/20]', 'Step: 40', colours stripped", () => {
    const esc = String.fromCharCode(27);
    const a = suggestProgressRegex(["Epoch [1/20] loss: 0.9", "Epoch [2/20] loss: 0.8"])!;
    expect(readBack(a.regex, ["Epoch [3/20] loss: 0.7"])).toEqual([{ step: 3, loss: 0.7 }]);
    const b = suggestProgressRegex([`${esc}[32mStep: 40${esc}[0m`, `${esc}[32mStep: 41${esc}[0m`])!;
    expect(readBack(b.regex, ["Step: 42"])).toEqual([{ step: 42, loss: null }]);
  });

  it("offers nothing when no counter grows: one value, counters that go back, no counter word", () => {
    expect(suggestProgressRegex([])).toBeNull();
    expect(suggestProgressRegex(["Epoch 3 | Batchsize: 32 | Steps: 64"])).toBeNull();
    expect(suggestProgressRegex(["step 5", "step 3", "step 9"])).toBeNull();
    expect(suggestProgressRegex(["loaded 100 images", "loaded 200 images", "it's fine: 300"])).toBeNull();
    // "stepsize" or "epochs_total" are not counters.
    expect(suggestProgressRegex(["stepsize 1", "stepsize 2"])).toBeNull();
  });

  it("stays cheap on hostile input: long lines and many of them", () => {
    const long = `step ${" ".repeat(100_000)}1`;
    const many = Array.from({ length: 5000 }, (_, i) => `${"epoch ".repeat(50)}${i}`);
    expect(() => suggestProgressRegex([long, ...many])).not.toThrow();
  });
});
