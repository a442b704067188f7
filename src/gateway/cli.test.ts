import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { assertSafeBinding, registerGatewayCommand } from "../cli/commands/gateway.js";

const example = fileURLToPath(new URL("../../examples/gateway/services.yaml", import.meta.url));

async function run(args: string[]): Promise<string> {
  const program = new Command("switchyard").exitOverride();
  registerGatewayCommand(program);
  let out = "";
  const spy = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    out += String(chunk);
    return true;
  });
  const errSpy = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
  try {
    await program.parseAsync(args, { from: "user" });
  } finally {
    spy.mockRestore();
    errSpy.mockRestore();
  }
  return out;
}

describe("switchyard gateway CLI", () => {
  const home = mkdtempSync(join(tmpdir(), "sy-home-"));
  const saved = process.env.SWITCHYARD_HOME;
  beforeEach(() => {
    process.env.SWITCHYARD_HOME = home;
    process.env.MINDIE_API_KEY = "k";
  });
  afterEach(() => {
    if (saved === undefined) delete process.env.SWITCHYARD_HOME;
    else process.env.SWITCHYARD_HOME = saved;
    delete process.env.MINDIE_API_KEY;
  });
  afterAll(() => rmSync(home, { recursive: true, force: true }));

  it("refuses to bind beyond loopback without keys unless told to", async () => {
    await expect(run(["gateway", example, "--check", "--host", "0.0.0.0"])).rejects.toThrow(
      /refusing to listen on 0\.0\.0\.0 without API keys.*--allow-unauthenticated/,
    );
    expect(await run(["gateway", example, "--check", "--host", "0.0.0.0", "--allow-unauthenticated"])).toContain("OK");
    expect(() => assertSafeBinding("127.0.0.1", 0, false, "f")).not.toThrow();
    expect(() => assertSafeBinding("::1", 0, false, "f")).not.toThrow();
    expect(() => assertSafeBinding("10.0.0.1", 1, false, "f")).not.toThrow();
  });

  it("adds, lists and revokes keys under SWITCHYARD_HOME, printing the key only once", async () => {
    const key = (await run(["gateway", "keys", "add", "alice", "--rpm", "30"])).trim();
    expect(key).toMatch(/^sy-/);
    const file = readFileSync(join(home, "gateway-keys.json"), "utf8");
    expect(file).not.toContain(key);
    const list = await run(["gateway", "keys", "list"]);
    expect(list).toMatch(/alice\s+sy-\S+…\s+30\s+\S+\s+active/);
    expect(list).not.toContain(key);
    expect(await run(["gateway", "keys", "revoke", "alice"])).toMatch(/^revoked \S+ \(alice\)/);
    expect(await run(["gateway", "keys", "list", "--json"])).toContain('"revokedAt"');
    await expect(run(["gateway", "keys", "revoke", "alice"])).rejects.toThrow(/no active key "alice"/);
    // With a key in place, binding beyond loopback is allowed.
    await run(["gateway", "keys", "add", "bob"]);
    expect(await run(["gateway", example, "--check", "--host", "0.0.0.0"])).toContain("1 API key(s)");
  });

  it("names the missing environment variable of a backend API key", async () => {
    delete process.env.MINDIE_API_KEY;
    await expect(run(["gateway", example, "--check"])).rejects.toThrow(
      "backend ascend-mindie-0: environment variable MINDIE_API_KEY (apiKeyEnv) is not set",
    );
  });
});
