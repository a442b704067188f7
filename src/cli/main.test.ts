import { mkdirSync, mkdtempSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { packageRoot } from "../paths.js";
import { selfCommand, shellWord } from "./context.js";
import { incidentNumbers } from "./format.js";
import { main } from "./main.js";

/** Runs the real CLI entry point and captures everything it prints, console and raw stream writes alike. */
async function runCli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = vi.spyOn(console, "log").mockImplementation((s: string) => void out.push(`${s}\n`));
  const error = vi.spyOn(console, "error").mockImplementation((s: string) => void err.push(`${s}\n`));
  const stdout = vi.spyOn(process.stdout, "write").mockImplementation((s) => (out.push(String(s)), true));
  const stderr = vi.spyOn(process.stderr, "write").mockImplementation((s) => (err.push(String(s)), true));
  try {
    process.exitCode = undefined;
    const home = mkdtempSync(path.join(tmpdir(), "cli-main-"));
    const code = await main(["node", "switchyard", "--home", home, ...args]);
    return { code, out: out.join(""), err: err.join("") };
  } finally {
    process.exitCode = undefined;
    for (const spy of [log, error, stdout, stderr]) spy.mockRestore();
  }
}

describe("one error path", () => {
  afterEach(() => {
    process.exitCode = undefined;
  });

  it("commander's own usage errors print in the one format and exit 2", async () => {
    const missing = await runCli(["status"]);
    expect(missing.code).toBe(2);
    expect(missing.err).toBe("switchyard: missing required argument 'job' (fix: see --help)\n");
    const unknown = await runCli(["frobnicate"]);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/^switchyard: unknown command 'frobnicate' \(fix: see --help\)\n$/);
  });

  it("under --json every error is one JSON object, commander's included", async () => {
    for (const args of [
      ["--json", "run"],
      ["frobnicate", "--json"],
      ["--json", "chaos", "j", "explode"],
      ["--json", "chaos", "j", "kill-rank", "--rank", "x"],
      ["--json", "chaos", "j", "degrade-link"],
      ["--json", "chaos", "j", "degrade-link", "--rate", "fast"],
      ["--json", "chaos", "j", "kill-rank", "--rate", "5mbit"],
      ["--json", "run", "/nonexistent/job.yaml"],
      ["--json", "logs", "j", "--rank", "one"],
    ]) {
      const r = await runCli(args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.out, args.join(" ")).toBe("");
      const lines = r.err.trim().split("\n");
      expect(lines, args.join(" ")).toHaveLength(1);
      const parsed = JSON.parse(lines[0]!) as { error: string; fix: string; exitCode: number };
      expect(parsed.exitCode).toBe(2);
      expect(parsed.error.length).toBeGreaterThan(5);
      expect(parsed.fix.length).toBeGreaterThan(3);
    }
  });

  it("chaos degrade-link without a rate says which flag to add, before asking any server", async () => {
    const r = await runCli(["chaos", "j", "degrade-link", "--node", "a2"]);
    expect(r.code).toBe(2);
    expect(r.err).toBe("switchyard: degrade-link needs the link's rate (fix: add --rate 5mbit)\n");
  });

  it("a spec that cannot be read names the file and the fix", async () => {
    const r = await runCli(["run", "/nonexistent/job.yaml"]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^switchyard: cannot read job spec \/nonexistent\/job\.yaml: ENOENT.* \(fix: pass the path/);
  });

  it("run --help documents --resume-from and the checkpoint folder per run", async () => {
    const r = await runCli(["run", "--help"]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("--resume-from <job|path>");
    expect(r.out).toContain("checkpoints/<name>/<job id>");
  });
});

describe("hints print commands that work as shown", () => {
  const bin = path.join(packageRoot, "bin", "switchyard.js");

  it("node <path to bin> when `switchyard` on PATH is not this CLI", () => {
    expect(selfCommand({}, { PATH: "/nonexistent" }, packageRoot)).toBe("node bin/switchyard.js");
    // A folder that is neither the checkout nor above it (a clone may itself live under the temp folder).
    expect(selfCommand({}, { PATH: "" }, mkdtempSync(path.join(tmpdir(), "cli-cwd-")))).toBe(`node ${bin}`);
  });

  it("switchyard when PATH has a link to this CLI (npm link)", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "cli-path-"));
    symlinkSync(bin, path.join(dir, "switchyard"));
    expect(selfCommand({}, { PATH: `/nonexistent:${dir}` }, "/")).toBe("switchyard");
    const other = mkdtempSync(path.join(tmpdir(), "cli-path-other-"));
    mkdirSync(path.join(other, "x"));
    symlinkSync(path.join(other, "x"), path.join(other, "switchyard"));
    expect(selfCommand({}, { PATH: other }, mkdtempSync(path.join(tmpdir(), "cli-cwd-")))).toBe(`node ${bin}`);
  });

  it("repeats --home when the shell would not pick that home by itself, quoted when needed", () => {
    const env = { PATH: "", SWITCHYARD_HOME: "/srv/sy" };
    expect(selfCommand({ home: "/srv/sy" }, env, packageRoot)).toBe("node bin/switchyard.js");
    expect(selfCommand({ home: "/tmp/my home" }, env, packageRoot)).toBe(
      "node bin/switchyard.js --home '/tmp/my home'",
    );
    expect(selfCommand({ home: "/srv/sy", homeFlag: true }, env, packageRoot)).toBe(
      "node bin/switchyard.js --home /srv/sy",
    );
    expect(shellWord("it's")).toBe(`'it'\\''s'`);
  });
});

describe("incident numbers", () => {
  it("are per job: the job's first incident is #1 whatever the store's global ids", () => {
    const numbers = incidentNumbers([{ id: 17 }, { id: 9 }, { id: 30 }]);
    expect([numbers.get(9), numbers.get(17), numbers.get(30)]).toEqual([1, 2, 3]);
  });
});
