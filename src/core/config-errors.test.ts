/**
 * One error path for every config file a user writes (spec-errors.ts): the cluster file here, and the generic parts
 * (unknown keys inside arrays, records, pipes and unions; key hints; bounds) on small schemas of their own.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { loadCluster } from "../server/config.js";
import { parseClusterSpec } from "./spec.js";
import { knownKeysAt, maxIssuesReported, SpecError, validateYaml, withKeyHints } from "./spec-errors.js";
import { specErrorOf } from "./spec-test-helpers.js";

const cluster = (text: string): SpecError => specErrorOf(() => parseClusterSpec(text, "/etc/c.yaml"));

describe("cluster file errors", () => {
  it("a typo in a pool's key: line:col and did-you-mean (inside the pools array and its transform)", () => {
    const err = cluster("pools:\n  - name: a\n    nodes: 1\n    acelerator: { vendor: cpu }\n");
    expect(err.message).toBe(
      '/etc/c.yaml:4:5: pools[0].acelerator: unknown key "acelerator" (fix: did you mean "accelerator"?)',
    );
    expect(err.issues).toEqual([
      {
        file: "/etc/c.yaml",
        path: "pools[0].acelerator",
        line: 4,
        column: 5,
        message: 'unknown key "acelerator"',
        fix: 'did you mean "accelerator"?',
      },
    ]);
  });

  it("a wrong type names the value it got", () => {
    expect(cluster("pools:\n  - name: a\n    nodes: two\n").message).toBe(
      '/etc/c.yaml:3:12: pools[0].nodes: expected number, got string "two" (fix: write a number here)',
    );
  });

  it("a missing required field points at its parent", () => {
    const err = cluster("pools:\n  - nodes: 1\n");
    expect(err.message).toBe("/etc/c.yaml:2:5: pools[0].name: is required (fix: add this field (string))");
  });

  it("an unknown key deep in an array item: its allowed keys, or where a key one level down belongs", () => {
    const deep = cluster(
      "pools:\n  - name: a\n    nodes: 1\n  - name: b\n    nodes: 1\n    health: { prefligt: true }\n",
    );
    expect(deep.message).toBe(
      '/etc/c.yaml:6:15: pools[1].health.prefligt: unknown key "prefligt" (fix: did you mean "preflight"?)',
    );
    const far = cluster("pools:\n  - name: a\n    nodes: 1\n    health: { frobnicate: 1 }\n");
    expect(far.issues[0]!.fix).toBe(
      "remove it; allowed keys here: preflight, intervalSeconds, afterIncident, networkProbe, timeoutSeconds, " +
        "minFreeDiskMiB, minFreeMemoryMiB, maxGpuTemperatureC, maxNpuTemperatureC",
    );
    const moved = cluster("pools:\n  - name: a\n    nodes: 1\n    vendor: ascend\n");
    expect(moved.message).toBe(
      '/etc/c.yaml:4:5: pools[0].vendor: unknown key "vendor" (fix: move it: it belongs at pools[0].accelerator.vendor)',
    );
  });

  it("a YAML syntax error has its line and column", () => {
    const err = cluster("pools:\n  - name: a\n    nodes: [1\n");
    expect(err.issues).toHaveLength(1);
    expect(err.issues[0]).toMatchObject({ file: "/etc/c.yaml", path: "", line: 4, column: 1 });
    expect(err.message).toMatch(
      /^\/etc\/c\.yaml:4:1: invalid YAML: .* \(fix: correct the YAML syntax at this position\)$/,
    );
  });

  it("a missing or unreadable file is a SpecError naming it, from the server's loader too", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "sy-cfgerr-"));
    try {
      const missing = specErrorOf(() => loadCluster(path.join(dir, "nope.yaml")));
      expect(missing.message).toBe(
        `${dir}/nope.yaml: cluster config does not exist (fix: pass an existing file to --cluster)`,
      );
      expect(specErrorOf(() => loadCluster(dir)).message).toMatch(/: cluster config is a folder, not a file \(fix:/);
      writeFileSync(path.join(dir, "c.yaml"), "pools:\n  - name: a\n    nodes: 1\n    acelerator: {}\n");
      expect(specErrorOf(() => loadCluster(path.join(dir, "c.yaml"))).issues[0]).toMatchObject({
        line: 4,
        column: 5,
        fix: 'did you mean "accelerator"?',
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the generic error path", () => {
  const kindA = z.strictObject({ kind: z.literal("a"), size: z.number() });
  const kindB = z.strictObject({ kind: z.literal("b"), label: z.string() });
  const schema = withKeyHints(
    z.strictObject({
      items: z.array(z.union([kindA, kindB])).optional(),
      tagged: z.array(z.discriminatedUnion("kind", [kindA, kindB])).optional(),
      byName: z.record(z.string(), z.strictObject({ weight: z.number() })).optional(),
      piped: z
        .strictObject({ retries: z.number() })
        .transform((v) => v.retries)
        .optional(),
      mode: z.enum(["rolling", "recreate"]).optional(),
      count: z.union([z.number().int(), z.literal("all")]).optional(),
    }),
    { name: "this file has no name; remove it" },
  );
  const errorOf = (text: string) => specErrorOf(() => validateYaml(schema, text, "f.yaml"));

  it("walks arrays, unions, records and pipes for the known keys", () => {
    expect(knownKeysAt(schema, ["items", 3])).toEqual(["kind", "size", "label"]);
    expect(knownKeysAt(schema, ["byName", "x"])).toEqual(["weight"]);
    expect(knownKeysAt(schema, ["piped"])).toEqual(["retries"]);
  });

  it("a typo inside the union option the item is meant for", () => {
    const err = errorOf("items:\n  - { kind: b, labl: x }\n");
    expect(err.issues.map((i) => `${i.line}:${i.column} ${i.path}: ${i.message} (fix: ${i.fix})`)).toEqual([
      "2:5 items[0].label: is required (fix: add this field (string))",
      '2:16 items[0].labl: unknown key "labl" (fix: did you mean "label"?)',
    ]);
    const tagged = errorOf("tagged:\n  - { kind: a, sise: 1 }\n");
    expect(tagged.message).toContain('f.yaml:2:16: tagged[0].sise: unknown key "sise" (fix: did you mean "size"?)');
    expect(errorOf("tagged:\n  - { kind: c }\n").message).toBe(
      'f.yaml:2:13: tagged[0].kind: must be one of "a", "b" (fix: pick one of the listed values)',
    );
  });

  it("a value that fits no option of a union says what each takes", () => {
    expect(errorOf("count: some\n").message).toBe(
      'f.yaml:1:8: count: expected a number or "all", got string "some" (fix: write one of the accepted forms)',
    );
  });

  it("records, pipes, enums and key hints", () => {
    expect(errorOf("byName:\n  x: { weight: 1, wieght: 1 }\n").issues[0]!.fix).toBe('did you mean "weight"?');
    expect(errorOf("piped: { retries: 1, retires: 1 }\n").issues[0]!.fix).toBe('did you mean "retries"?');
    expect(errorOf("mode: rollin\n").message).toBe(
      'f.yaml:1:7: mode: must be one of "rolling", "recreate", got string "rollin" (fix: did you mean "rolling"?)',
    );
    expect(errorOf("name: x\n").message).toBe(
      'f.yaml:1:1: name: unknown key "name" (fix: this file has no name; remove it)',
    );
  });

  it("bounds the issues it lists, and says how many more there are", () => {
    const text = Array.from({ length: 50 }, (_, i) => `k${i}: 1`).join("\n");
    const err = errorOf(text);
    expect(err.issues).toHaveLength(maxIssuesReported);
    expect(err.omitted).toBe(50 - maxIssuesReported);
    expect(err.message.split("\n").at(-1)).toBe(
      `... and ${50 - maxIssuesReported} more issue(s) (fix: correct the ones above, then validate again)`,
    );
  });

  it("JSON text goes through the same parser, with JSON in its syntax errors", () => {
    const err = specErrorOf(() =>
      validateYaml(schema, '{"mode": "rolling",\n "count" 1}', "k.json", { syntax: "JSON" }),
    );
    expect(err.message).toBe(
      "k.json:2:10: invalid JSON: Unexpected number (fix: correct the JSON syntax at this position)",
    );
    // What YAML would take but JSON does not is refused too.
    const lenient = specErrorOf(() => validateYaml(schema, '{"count": }', "k.json", { syntax: "JSON" }));
    expect(lenient.issues[0]!.message).toMatch(/^invalid JSON: /);
  });
});
