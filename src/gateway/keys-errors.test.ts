/** The gateway keys file (JSON) is refused like every other config file: `file:line:col: path: message (fix: ...)`. */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { main } from "../cli/main.js";
import { SpecError } from "../core/spec-errors.js";
import { specErrorOf } from "../core/spec-test-helpers.js";
import { readKeysFile } from "./keys.js";

const dir = mkdtempSync(join(tmpdir(), "sy-keyserr-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function keysFile(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text, { mode: 0o600 });
  return file;
}

const goodKey = {
  id: "a1b2c3d4",
  name: "alice",
  hash: `sha256:${"0".repeat(64)}`,
  prefix: "sy-abcdefg",
  createdAt: "2026-01-01T00:00:00.000Z",
};
const remove = "or remove the file (its keys are then lost and must be issued again)";

describe("gateway keys file errors", () => {
  it("a JSON syntax error has its line and column", () => {
    const file = keysFile("syntax.json", '{\n  "version": 1,\n  "keys": [,]\n}\n');
    expect(specErrorOf(() => readKeysFile(file)).message).toBe(
      `${file}:3:12: invalid JSON: Unexpected token ',' (fix: correct the JSON syntax at this position; ${remove})`,
    );
  });

  it("a wrong type deep in the keys array names its path and position", () => {
    const text = JSON.stringify({ version: 1, keys: [goodKey, { ...goodKey, rpm: "sixty" }] }, null, 2);
    const err = specErrorOf(() => readKeysFile(keysFile("type.json", text)));
    expect(err.issues).toEqual([
      expect.objectContaining({
        path: "keys[1].rpm",
        line: 17,
        column: 14,
        message: 'expected number, got string "sixty"',
        fix: `write a number here; ${remove}`,
      }),
    ]);
  });

  it("a missing required field and a wrong version", () => {
    const { hash: _hash, ...noHash } = goodKey;
    const err = specErrorOf(() =>
      readKeysFile(keysFile("missing.json", JSON.stringify({ version: 2, keys: [noHash] }))),
    );
    expect(err.issues.map((i) => `${i.line}:${i.column} ${i.path}: ${i.message}`)).toEqual([
      "1:12 version: must be one of 1, got number 2",
      "1:22 keys[0].hash: is required",
    ]);
  });

  it("through the CLI: exit 2 with the issues under --json", async () => {
    const file = keysFile("cli.json", '{"version": 1, "keys": [{"id": 1}]}');
    let err = "";
    const spy = vi.spyOn(console, "error").mockImplementation((...a: unknown[]) => {
      err += `${a.map(String).join(" ")}\n`;
    });
    try {
      const code = await main(["node", "switchyard", "--json", "gateway", "keys", "list", "--keys-file", file]);
      expect(code).toBe(2);
    } finally {
      spy.mockRestore();
    }
    const printed = JSON.parse(err.trim()) as { exitCode: number; issues: SpecError["issues"] };
    expect(printed.exitCode).toBe(2);
    expect(printed.issues[0]).toMatchObject({ file, path: "keys[0].id", line: 1, column: 32 });
  });
});
