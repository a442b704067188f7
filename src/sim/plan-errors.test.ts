/** Plan files' errors read like every other config file's: `file:line:col: path: message (fix: ...)`, fix once. */
import { describe, expect, it } from "vitest";
import { SpecError } from "../core/spec-errors.js";
import { parsePlan, PlanFileError } from "./plan-file.js";
import { loadPlanFile } from "./planner.js";

const VALID = `scenarios:
  - name: a
    fleet:
      device: gpu
      devices: 64
      devices_per_node: 8
      failures:
        - { cause: gpu, per_device_day: 0.001, detect: 5m }
    workload: { steps: 1000, step_time: 1.5s }
    checkpoint: { interval: optimal, save: 30s }
    recovery: { restart: 5m }
`;

function messageOf(text: string): string {
  try {
    parsePlan(text, "p.yaml");
  } catch (err) {
    if (err instanceof PlanFileError) {
      expect(err).toBeInstanceOf(SpecError);
      return err.message;
    }
    throw err;
  }
  throw new Error("expected a PlanFileError");
}

describe("plan file errors", () => {
  it("the report's file: one fix per line, with a column", () => {
    const message = messageOf("model: x\n");
    expect(message).toBe(
      [
        "p.yaml:1:1: scenarios: is required (fix: add this field (array))",
        'p.yaml:1:1: model: unknown key "model" (fix: remove it; allowed keys here: version, scenarios)',
      ].join("\n"),
    );
    for (const line of message.split("\n")) expect(line.match(/\(fix: /g)).toHaveLength(1);
    expect(message).not.toContain("Fix:");
  });

  it("a typo: did-you-mean, preferring a key the mapping does not have yet", () => {
    expect(messageOf(VALID.replace("device: gpu", "devics: gpu"))).toBe(
      [
        "p.yaml:4:7: scenarios[0].fleet.device: is required (fix: add this field (string))",
        'p.yaml:4:7: scenarios[0].fleet.devics: unknown key "devics" (fix: did you mean "device"?)',
      ].join("\n"),
    );
  });

  it("a wrong type names what it got", () => {
    expect(messageOf(VALID.replace("devices: 64", "devices: many"))).toBe(
      'p.yaml:5:16: scenarios[0].fleet.devices: expected number, got string "many" (fix: write a number here)',
    );
  });

  it("a missing required field points at its parent", () => {
    expect(messageOf(VALID.replace("    recovery: { restart: 5m }\n", ""))).toBe(
      "p.yaml:2:5: scenarios[0].recovery: is required (fix: add this field (object))",
    );
  });

  it("an unknown key deep in an array item", () => {
    expect(messageOf(VALID.replace("detect: 5m }", "detect: 5m, handeld_by: manual }"))).toBe(
      'p.yaml:8:60: scenarios[0].fleet.failures[0].handeld_by: unknown key "handeld_by" (fix: did you mean "handled_by"?)',
    );
  });

  it("a YAML syntax error", () => {
    expect(messageOf("scenarios:\n  - name: a\n    fleet: [gpu\n")).toBe(
      "p.yaml:4:1: invalid YAML: Flow sequence in block collection must be sufficiently indented and end with a ] (fix: correct the YAML syntax at this position)",
    );
  });

  it("merge keys still work, and a typo inside a merged mapping is found", () => {
    const anchors = "x-fleet: &fleet\n  device: gpu\n  devices: 64\n  devices_per_node: 8\n";
    const merged = VALID.replace(
      "    fleet:\n      device: gpu\n      devices: 64\n      devices_per_node: 8\n",
      "    fleet:\n      <<: *fleet\n      spare_nods: 1\n",
    );
    expect(messageOf(anchors + merged)).toBe(
      'p.yaml:9:7: scenarios[0].fleet.spare_nods: unknown key "spare_nods" (fix: did you mean "spare_nodes"?)',
    );
  });

  it("a missing file is named, without a position", () => {
    let err: unknown;
    try {
      loadPlanFile("/nonexistent/plan.yaml");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PlanFileError);
    expect((err as Error).message).toBe("/nonexistent/plan.yaml: the plan file does not exist (fix: check the path)");
  });
});
