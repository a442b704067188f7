import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { main } from "../main.js";

const PLAN = `scenarios:
  - name: only
    fleet: { device: gpu, devices: 16, devices_per_node: 8, failures: [{ cause: gpu, per_node_day: 0.5 }] }
    workload: { steps: 100, step_time: 60s }
    checkpoint: { interval: optimal, save: 10s }
    recovery: { restart: 2m }
`;

/** Runs the real CLI entry point, so options shared with the root program behave as for users. */
async function runCli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = vi.spyOn(console, "log").mockImplementation((s: string) => void out.push(s));
  const error = vi.spyOn(console, "error").mockImplementation((s: string) => void err.push(s));
  try {
    process.exitCode = undefined;
    const code = await main(["node", "switchyard", "plan", ...args]);
    return { code, out: out.join("\n"), err: err.join("\n") };
  } finally {
    process.exitCode = undefined;
    log.mockRestore();
    error.mockRestore();
  }
}

describe("switchyard plan", () => {
  const dir = mkdtempSync(join(tmpdir(), "switchyard-plan-"));
  const file = join(dir, "plan.yaml");
  writeFileSync(file, PLAN);
  afterEach(() => {
    process.exitCode = undefined;
  });

  it("prints the table, and JSON with --json", async () => {
    const table = await runCli([file, "--trials", "20"]);
    expect(table.code).toBe(0);
    expect(table.out).toMatch(/^ETTR \(95% CI\)/m);
    const json = await runCli([file, "--trials", "20", "--seed", "9", "--json"]);
    expect(JSON.parse(json.out)).toMatchObject({ trials: 20, seed: 9, scenarios: [{ name: "only" }] });
  });

  it("writes both charts with --svg", async () => {
    const svgDir = join(dir, "charts");
    expect((await runCli([file, "--trials", "20", "--svg", svgDir])).code).toBe(0);
    expect(readFileSync(join(svgDir, "completion-cdf.svg"), "utf8")).toMatch(/^<svg/);
    expect(readFileSync(join(svgDir, "lost-time.svg"), "utf8")).toMatch(/^<svg/);
  });

  it("exits 2 with file, line, path and fix on a bad plan file", async () => {
    const bad = join(dir, "bad.yaml");
    writeFileSync(bad, PLAN.replace("restart: 2m", "restart: 2m, retry: 3"));
    const result = await runCli([bad]);
    expect(result.code).toBe(2);
    expect(result.err).toMatch(
      new RegExp(
        `^switchyard: ${bad}:6:\\d+: scenarios\\[0\\]\\.recovery\\.retry: unknown key "retry" \\(fix: remove it; allowed keys here: restart, `,
      ),
    );
    const json = await runCli([bad, "--json"]);
    expect(json.code).toBe(2);
    expect(JSON.parse(json.err)).toMatchObject({
      exitCode: 2,
      issues: [{ file: bad, line: 6, path: "scenarios[0].recovery.retry" }],
    });
  });

  it("exits 2 for an unknown scenario or a missing file", async () => {
    const unknown = await runCli([file, "--scenario", "nope"]);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toBe(`switchyard: ${file}: no scenario named "nope" (fix: use one of: only)`);
    expect((await runCli([join(dir, "missing.yaml")])).code).toBe(2);
  });

  it("under --json, errors are JSON too", async () => {
    const result = await runCli([file, "--scenario", "nope", "--json"]);
    expect(result.code).toBe(2);
    expect(JSON.parse(result.err)).toEqual({
      error: `${file}: no scenario named "nope"`,
      fix: "use one of: only",
      exitCode: 2,
    });
    const missing = await runCli([join(dir, "missing.yaml"), "--json"]);
    expect(missing.code).toBe(2);
    expect(JSON.parse(missing.err)).toMatchObject({ exitCode: 2, fix: expect.any(String) });
  });

  it("--from-job options are checked before any server is asked", async () => {
    const both = await runCli([file, "--from-job", "j"]);
    expect(both.code).toBe(2);
    expect(both.err).toBe(`switchyard: both a plan file (${file}) and --from-job j given (fix: give one of them)`);
    const stray = await runCli([file, "--as-of", "60"]);
    expect(stray.code).toBe(2);
    expect(stray.err).toBe("switchyard: --as-of needs --from-job (fix: drop --as-of, or add --from-job JOB)");
    const none = await runCli([]);
    expect(none.code).toBe(2);
    expect(none.err).toMatch(/no plan file given \(fix: switchyard plan <plan.yaml>, or --from-job JOB\)/);
    // commander prints its own message for a bad option value ("--as-of takes seconds above 0, got ...").
    expect((await runCli(["--from-job", "j", "--as-of", "soon"])).code).toBe(2);
  });
});
