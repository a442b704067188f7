import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it, vi } from "vitest";
import { packageRoot } from "../src/paths.js";
import { missing } from "./requirements.js";

describe("test requirements", () => {
  it("a missing dependency fails under SWITCHYARD_TEST_STRICT=1 instead of skipping", () => {
    expect(() => missing("torch", false, "apt-get install python3-torch", true)).toThrow(
      /SWITCHYARD_TEST_STRICT=1: torch is missing \(fix: apt-get install python3-torch\)/,
    );
  });

  it("outside strict mode a missing dependency skips loudly, naming what and the fix", () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    expect(missing("torch", false, "apt-get install python3-torch", false)).toBe(true);
    expect(String(warn.mock.calls[0]?.[0])).toMatch(/SKIPPED: tests that need torch.*fix: apt-get install/);
    warn.mockRestore();
    expect(missing("torch", true, "-", true)).toBe(false);
  });

  it("scripts/test.sh (what CI runs) sets strict mode before npm test", () => {
    const script = readFileSync(path.join(packageRoot, "scripts", "test.sh"), "utf8");
    const strictAt = script.indexOf("export SWITCHYARD_TEST_STRICT=1");
    expect(strictAt).toBeGreaterThan(-1);
    expect(strictAt).toBeLessThan(script.indexOf("npm test"));
  });
});
