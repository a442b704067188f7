import { execFileSync } from "node:child_process";
import { mkdtempSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { runTmpVar } from "./global-setup.js";

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
});
