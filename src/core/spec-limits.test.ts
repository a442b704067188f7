import { describe, expect, it } from "vitest";
import { compileJobSpec, parseClusterSpec, specLimits, type ClusterSpec } from "./spec.js";
import { maxIssuesReported, maxSpecBytes, type SpecError } from "./spec-errors.js";
import { specErrorOf } from "./spec-test-helpers.js";

const cluster: ClusterSpec = parseClusterSpec("pools:\n  - name: local\n    nodes: 2\n", "cluster.yaml");
const opts = { file: "/jobs/big.yaml", cluster, defaultCheckpointRoot: "/home/sy/checkpoints" };

const specError = (text: string, o = opts): SpecError => specErrorOf(() => compileJobSpec(text, o));

describe("spec bounds: a big or hostile spec gets a short, bounded answer", () => {
  it("refuses a 518 KB spec with 30,000 env keys by its size, with one short issue", () => {
    const env = Array.from({ length: 30_000 }, (_, i) => `  KEY_${i}: "v${i}"`).join("\n");
    const text = `name: big\ncommand: [x]\nenv:\n${env}\n`;
    expect(text.length).toBeGreaterThan(maxSpecBytes);
    const err = specError(text);
    expect(err.issues).toHaveLength(1);
    expect(err.message).toMatch(/^\/jobs\/big\.yaml:1:1: the file has \d+ bytes, more than the 262144 a spec may have/);
    expect(err.message.length).toBeLessThan(400);
  });

  it("reports the first 20 of 15,000 unknown keys and counts the rest", () => {
    const unknown = Array.from({ length: 15_000 }, (_, i) => `unknown_${i}: 1`).join("\n");
    const text = `name: big\ncommand: [x]\n${unknown}\n`;
    expect(text.length).toBeLessThan(maxSpecBytes);
    const err = specError(text);
    expect(err.issues).toHaveLength(maxIssuesReported);
    expect(err.omitted).toBe(15_000 - maxIssuesReported);
    expect(err.issues[0]).toMatchObject({ path: "unknown_0", line: 3, message: 'unknown key "unknown_0"' });
    expect(err.issues[19]).toMatchObject({ path: "unknown_19", line: 22 });
    expect(err.message).toContain(`... and ${15_000 - maxIssuesReported} more issue(s)`);
    expect(err.message.length).toBeLessThan(10_000);
  });

  it("bounds env keys, command arguments and string lengths, naming the field", () => {
    const env = Array.from({ length: specLimits.envKeys + 1 }, (_, i) => `  K${i}: 1`).join("\n");
    expect(specError(`name: t\ncommand: [x]\nenv:\n${env}\n`).message).toBe(
      `/jobs/big.yaml:4:3: env: has more than ${specLimits.envKeys} variables (fix: pass the rest in a file the job reads)`,
    );
    const args = Array.from({ length: specLimits.commandArgs + 1 }, (_, i) => `a${i}`).join(", ");
    expect(specError(`name: t\ncommand: [${args}]\n`).message).toContain(
      `command: has more than ${specLimits.commandArgs} arguments`,
    );
    const long = "x".repeat(specLimits.commandArgLength + 1);
    expect(specError(`name: t\ncommand: [x, ${long}]\n`).message).toContain(
      `command[1]: is longer than ${specLimits.commandArgLength} characters`,
    );
    expect(specError(`name: t\ncommand: [x]\nworkdir: /${"d".repeat(specLimits.pathLength)}\n`).message).toContain(
      "workdir: is longer than 4096 characters",
    );
    expect(specError(`name: t\ncommand: ["a\\0b"]\n`).message).toContain("command[0]: contains a NUL byte");
    expect(specError(`name: t\ncommand: [x]\nenv: { "A=B": 1 }\n`).message).toBe(
      "/jobs/big.yaml:3:15: env.A=B: key is not a variable name (it has '=' or a NUL byte) (fix: rename the variable)",
    );
  });

  it("an error never echoes a huge key, value or file name back", () => {
    const key = "k".repeat(1000); // YAML allows implicit keys up to 1024 characters
    const err = specError(`name: t\ncommand: [x]\n${key}: 1\nnodes: "${"n".repeat(100_000)}"\n`, {
      ...opts,
      file: `/${"f".repeat(100_000)}.yaml`,
    });
    expect(err.issues).toHaveLength(2);
    expect(err.message.length).toBeLessThan(4000);
  });

  it("finds repeated keys in one pass and names the line", () => {
    const err = specError("name: t\ncommand: [x]\nenv:\n  A: 1\n  B: 2\n  A: 3\n");
    expect(err.message).toBe(
      '/jobs/big.yaml:6:3: invalid YAML: map keys must be unique; "A" is repeated (fix: remove or rename the repeated key)',
    );
  });

  it("bounds every duration field (at most 24 h; counting windows 30 days), naming the field", () => {
    const cases: Array<[string, string]> = [
      ["recovery: { graceSeconds: 1e308 }", "recovery.graceSeconds"],
      ["recovery: { backoffSeconds: 90000 }", "recovery.backoffSeconds"],
      ["recovery: { maxBackoffSeconds: 90000 }", "recovery.maxBackoffSeconds"],
      ["recovery: { restartWindowSeconds: 1e12 }", "recovery.restartWindowSeconds"],
      ["recovery: { poolFailures: { windowSeconds: 1e12 } }", "recovery.poolFailures.windowSeconds"],
      ["detection: { stackDumpSeconds: 86401 }", "detection.stackDumpSeconds"],
      ["detection: { startupSeconds: 1e308 }", "detection.startupSeconds"],
      ["detection: { hangMinSeconds: 1e308 }", "detection.hangMinSeconds"],
    ];
    for (const [yaml, field] of cases) {
      const err = specError(`name: t\ncommand: [x]\n${yaml}\n`);
      expect(err.issues.map((i) => i.path)).toEqual([field]);
      expect(err.issues[0]!.message).toMatch(/^must be at most \d+ seconds/);
    }
    const ok = compileJobSpec("name: t\ncommand: [x]\nrecovery: { graceSeconds: 86400 }\n", opts);
    expect(ok.recovery.graceSeconds).toBe(86400);
  });
});
