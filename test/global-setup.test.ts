import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import setup, { runTmpVar } from "./global-setup.js";

describe("the run's temporary folder (test/global-setup.ts)", () => {
  const runTmp = process.env[runTmpVar];

  it("is this worker's os.tmpdir(): a 0700 folder of its own, directly under the machine's tmpdir", () => {
    expect(runTmp).toBeTruthy();
    expect(os.tmpdir()).toBe(runTmp);
    const st = statSync(runTmp!);
    expect(st.isDirectory()).toBe(true);
    expect(st.mode & 0o777).toBe(0o700);
    expect(path.basename(runTmp!)).toMatch(/^syt-/);
    // Short enough that a socket a few folders down still fits the 108-byte limit.
    expect(runTmp!.length).toBeLessThan(40);
    expect(mkdtempSync(path.join(os.tmpdir(), "x-")).startsWith(runTmp! + path.sep)).toBe(true);
  });

  it("is inherited by the processes a test starts (Node and the Debian Python the ranks run on)", () => {
    const node = execFileSync(process.execPath, ["-e", "process.stdout.write(require('os').tmpdir())"], {
      encoding: "utf8",
    });
    expect(node).toBe(runTmp);
    const py = execFileSync(
      "/usr/bin/python3",
      ["-c", "import tempfile, sys; sys.stdout.write(tempfile.gettempdir())"],
      {
        encoding: "utf8",
      },
    );
    expect(py).toBe(runTmp);
  });

  it("setup makes a folder and points TMPDIR at it, teardown removes it with what is in it and restores TMPDIR", () => {
    const saved = { TMPDIR: process.env.TMPDIR, run: process.env[runTmpVar] };
    try {
      // As in a fresh run: no run folder yet (the new one is made under this run's, which the run removes anyway).
      delete process.env[runTmpVar];
      const teardown = setup();
      const made = process.env[runTmpVar]!;
      expect(path.dirname(made)).toBe(runTmp);
      expect(process.env.TMPDIR).toBe(made);
      expect(statSync(made).mode & 0o777).toBe(0o700);
      // A second project's setup in the same process reuses it, and its teardown leaves it.
      setup()();
      expect(existsSync(made)).toBe(true);
      mkdirSync(path.join(made, "sy-home", "jobs"), { recursive: true });
      writeFileSync(path.join(made, "sy-home", "jobs", "rank-0.log"), "left by a test\n");
      teardown();
      expect(existsSync(made)).toBe(false);
      expect(process.env.TMPDIR).toBe(runTmp);
      expect(process.env[runTmpVar]).toBeUndefined();
    } finally {
      for (const [name, value] of [
        ["TMPDIR", saved.TMPDIR],
        [runTmpVar, saved.run],
      ] as const) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });
});
