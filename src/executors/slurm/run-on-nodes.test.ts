import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { failedTasks, resultsFromStep, splitLabeled } from "./run-on-nodes.js";
import { degradeLink, healLink, TestbedError } from "./testbed.js";

describe("srun --label output per host", () => {
  it("splits labelled lines per task, padded labels included", () => {
    const { byTask, unlabeled } = splitLabeled(' 2: {"a": 1}\n10: x\n 2: second\nsrun: warning\n 0:\n');
    expect(byTask.get(2)).toBe('{"a": 1}\nsecond\n');
    expect(byTask.get(10)).toBe("x\n");
    expect(byTask.get(0)).toBe("\n");
    expect(unlabeled).toBe("srun: warning\n");
  });

  it("reads failed tasks from srun's stderr", () => {
    const m = failedTasks(
      [
        "1: err",
        "srun: error: a3: task 1: Exited with exit code 3",
        "srun: error: a4: tasks 2-3,5: Killed by signal 9",
      ].join("\n"),
    );
    expect([...m]).toEqual([
      [1, 3],
      [2, null],
      [3, null],
      [5, null],
    ]);
  });

  it("gives each host its output and exit code, in Slurm's task order", () => {
    const r = resultsFromStep(["a1", "a3", "a4"], {
      code: 1,
      stdout: "2: hi a4\n1: hi a3\n0: hi a1\n",
      stderr: "1: err\nsrun: error: a3: task 1: Exited with exit code 3\n",
      timedOut: false,
    });
    expect(r).toEqual([
      { node: "a1", code: 0, stdout: "hi a1\n", stderr: "" },
      { node: "a3", code: 3, stdout: "hi a3\n", stderr: "err\n" },
      { node: "a4", code: 0, stdout: "hi a4\n", stderr: "" },
    ]);
  });

  it("srun failing before any task ran: every host gets srun's message and no exit code", () => {
    const r = resultsFromStep(["a1", "a2"], {
      code: 1,
      stdout: "",
      stderr: "srun: error: Unable to allocate resources: Invalid node name specified\n",
      timedOut: false,
    });
    expect(r.map((x) => x.code)).toEqual([null, null]);
    expect(r[1]!.stderr).toBe("srun: error: Unable to allocate resources: Invalid node name specified\n");
  });

  it("a step past its timeout: no exit codes, timedOut, output so far kept", () => {
    const r = resultsFromStep(["a1", "a2"], { code: null, stdout: "0: partial\n", stderr: "", timedOut: true });
    expect(r).toEqual([
      { node: "a1", code: null, stdout: "partial\n", stderr: "", timedOut: true },
      { node: "a2", code: null, stdout: "", stderr: "", timedOut: true },
    ]);
  });
});

describe("testbed link shaping", () => {
  /** A stand-in for scripts/testbed.sh that records its argument vector. */
  function fakeScript(exit = 0): { script: string; argv: () => string[] } {
    const dir = mkdtempSync(path.join(os.tmpdir(), "sy-testbed-"));
    const script = path.join(dir, "testbed.sh");
    const log = path.join(dir, "argv");
    writeFileSync(script, `printf '%s\\n' "$@" > '${log}'; echo "testbed: done"; exit ${exit}\n`);
    return { script, argv: () => readFileSync(log, "utf8").trim().split("\n") };
  }

  it("calls testbed.sh degrade/heal with an argument vector", async () => {
    const f = fakeScript();
    await expect(degradeLink("a2", "100mbit", { script: f.script, burst: "40mb" })).resolves.toBe("testbed: done");
    expect(f.argv()).toEqual(["degrade", "a2", "--rate", "100mbit", "--burst", "40mb"]);
    await healLink("a2", { script: f.script });
    expect(f.argv()).toEqual(["heal", "a2"]);
  });

  it("refuses bad names and rates before running anything, and says what the script said when it fails", async () => {
    const f = fakeScript(1);
    await expect(degradeLink("a2; reboot", "100mbit", { script: f.script })).rejects.toThrow(/is not a testbed host/);
    await expect(degradeLink("a2", "fast", { script: f.script })).rejects.toThrow(/bad rate "fast"/);
    await expect(degradeLink("a2", "1mbit", { script: f.script, burst: "lots" })).rejects.toThrow(/bad burst/);
    const err = await healLink("a2", { script: f.script }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TestbedError);
    expect((err as TestbedError).message).toMatch(/^testbed\.sh heal a2 failed: testbed: done$/);
  });
});
