import { describe, expect, it } from "vitest";
import { parsePlan, PlanFileError } from "./plan-file.js";

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
    deadline: 3d
`;

function errorOf(text: string): PlanFileError {
  try {
    parsePlan(text, "plans/x.yaml");
  } catch (err) {
    if (err instanceof PlanFileError) return err;
    throw err;
  }
  throw new Error("expected a PlanFileError");
}

describe("plan files", () => {
  it("parses durations and fills in defaults", () => {
    const plan = parsePlan(VALID, "plans/x.yaml");
    const s = plan.scenarios[0];
    expect(s?.workload.step_time).toBe(1.5);
    expect(s?.deadline).toBe(3 * 86_400);
    expect(s?.fleet.spare_nodes).toBe(0);
    expect(s?.fleet.failures[0]).toEqual({
      cause: "gpu",
      per_device_day: 0.001,
      detect: { mean: 300, cv: 0 },
      replaces_node: true,
      hosts: 1,
      handled_by: "auto",
    });
    expect(s?.recovery.no_spare).toBe("wait");
    expect(s?.checkpoint.interval).toBe("optimal");
  });

  it("ignores top-level x- keys, which hold shared YAML anchors", () => {
    const text = [
      "x-fleet: &fleet",
      "  device: gpu",
      "  devices: 64",
      "  devices_per_node: 8",
      "scenarios:",
      "  - name: a",
      "    fleet: { <<: *fleet, spare_nodes: 3 }",
      "    workload: { steps: 10, step_time: 1s }",
      "    checkpoint: { interval: 1h, save: 1s }",
      "    recovery: { restart: 1m }",
    ].join("\n");
    const fleet = parsePlan(text, "plans/x.yaml").scenarios[0]?.fleet;
    expect(fleet?.devices).toBe(64);
    expect(fleet?.spare_nodes).toBe(3);
  });

  it("names file, line, YAML path and a fix for an unknown key, with a suggestion", () => {
    const err = errorOf(VALID.replace("devices_per_node: 8", "devices_per_nod: 8"));
    expect(err.message).toContain(
      'plans/x.yaml:6:7: scenarios[0].fleet.devices_per_nod: unknown key "devices_per_nod" (fix: did you mean "devices_per_node"?)',
    );
  });

  it("reports a missing required key at its parent's line", () => {
    const err = errorOf(VALID.replace("    recovery: { restart: 5m }\n", ""));
    expect(err.issues).toEqual([
      {
        file: "plans/x.yaml",
        line: 2,
        column: 5,
        path: "scenarios[0].recovery",
        message: "is required",
        fix: "add this field (object)",
      },
    ]);
  });

  it("explains a bad duration", () => {
    const err = errorOf(VALID.replace("save: 30s", "save: 30 minutes"));
    expect(err.message).toContain(
      'plans/x.yaml:10:44: scenarios[0].checkpoint.save: not a duration: "30 minutes" (fix: use a number of seconds or a string like',
    );
  });

  it("lists every problem at once", () => {
    const err = errorOf(VALID.replace("devices: 64", "devices: 60").replace("restart: 5m", "restart: 5m, retries: 3"));
    expect(err.issues.map((i) => i.path)).toEqual(["scenarios[0].fleet.devices", "scenarios[0].recovery.retries"]);
    expect(err.issues[0]).toMatchObject({
      message: "60 devices do not fill whole nodes of 8",
      fix: "use a multiple of devices_per_node",
    });
  });

  it("rejects a workload with both steps and tokens", () => {
    const err = errorOf(VALID.replace("step_time: 1.5s", "step_time: 1.5s, tokens: 1e9"));
    expect(err.issues[0]?.path).toBe("scenarios[0].workload");
    expect(err.issues[0]?.message).toBe("both steps and tokens given");
    expect(err.issues[0]?.fix).toMatch(/^give steps and step_time/);
  });

  it("rejects a failure cause without a rate", () => {
    const err = errorOf(VALID.replace("per_device_day: 0.001, ", ""));
    expect(err.issues[0]?.path).toBe("scenarios[0].fleet.failures[0]");
    expect(err.issues[0]?.line).toBe(8);
    expect(err.issues[0]?.column).toBe(11);
  });

  it("reads durations with spread, sizes and bandwidths", () => {
    const plan = parsePlan(
      VALID.replace("detect: 5m", "detect: { mean: 5m, cv: 0.5 }").replace(
        "checkpoint: { interval: optimal, save: 30s }",
        "checkpoint: { interval: optimal, size: 2.3TB, storage: { write_bandwidth: 10GB/s, read_bandwidth: 1GiB/s } }",
      ),
      "plans/x.yaml",
    );
    const s = plan.scenarios[0];
    expect(s?.fleet.failures[0]?.detect).toEqual({ mean: 300, cv: 0.5 });
    expect(s?.checkpoint.size).toBe(2.3e12);
    expect(s?.checkpoint.storage?.write_bandwidth).toBe(1e10);
    expect(s?.checkpoint.storage?.read_bandwidth).toBe(2 ** 30);
  });

  it("names the field and the fix for each new knob's bad input", () => {
    const cases: [string, string, string | RegExp][] = [
      [
        "- { cause: gpu, per_device_day: 0.001, detect: 5m }",
        "- { cause: tor, hosts: 4, per_node_day: 0.001 }",
        /^scenarios\[0\]\.fleet\.failures\[0\]\.hosts: an event that takes 4 hosts needs a rate per domain or per fleet \(fix: use per_domain_day/,
      ],
      [
        "- { cause: gpu, per_device_day: 0.001, detect: 5m }",
        "- { cause: tor, hosts: 9, per_domain_day: 0.001 }",
        /^scenarios\[0\]\.fleet\.failures\[0\]\.hosts: 9 hosts per event, but the fleet has 8 nodes \(fix:/,
      ],
      [
        "- { cause: gpu, per_device_day: 0.001, detect: 5m }",
        "- { cause: tor, hosts: most, per_day: 1 }",
        'scenarios[0].fleet.failures[0].hosts: "most" is not valid here (fix: use a whole number of hosts (1 or more) or "all")',
      ],
      [
        "detect: 5m",
        "detect: { mean: 5m, sd: 1m }",
        /^scenarios\[0\]\.fleet\.failures\[0\]\.detect: not a duration with spread: .*unknown key sd.*\(fix: use/,
      ],
      ["save: 30s", "size: 2TB", /^scenarios\[0\]\.checkpoint\.storage: size needs storage \(fix:/],
      [
        "restart: 5m",
        "restart: 5m, partial: { replicas: 3 }",
        /^scenarios\[0\]\.recovery\.partial\.replicas: 8 nodes do not split into 3 equal replica groups \(fix: use a divisor of 8/,
      ],
      [
        "restart: 5m",
        "restart: 5m, manual: { day_start: 18, day_end: 9 }",
        /^scenarios\[0\]\.recovery\.manual\.day_end: working hours end \(9\) before they start \(18\) \(fix:/,
      ],
      [
        "step_time: 1.5s",
        "step_time: 1.5s, loss_spikes: { per_day: 0.1, rollbak: 2 }",
        /^scenarios\[0\]\.workload\.loss_spikes\.rollbak: unknown key "rollbak" \(fix: did you mean "rollback"\?/,
      ],
      [
        "save: 30s",
        "save: 30s, storage: { write_bandwidth: fast, read_bandwidth: 1GB/s }",
        /^scenarios\[0\]\.checkpoint\.storage\.write_bandwidth: not a bandwidth: "fast" \(fix: use bytes per second/,
      ],
    ];
    for (const [from, to, expected] of cases) {
      const err = errorOf(VALID.replace(from, to));
      const messages = err.issues.map((i) => `${i.path}: ${i.message} (fix: ${i.fix})`);
      expect(
        messages.some((m) => (typeof expected === "string" ? m === expected : expected.test(m))),
        messages.join("\n"),
      ).toBe(true);
    }
  });

  it("rejects a fallback to a scenario that does not exist", () => {
    const err = errorOf(
      VALID.replace("restart: 5m }", "restart: 5m, fallback: { scenario: b, after_failures: 3, within: 1d } }"),
    );
    expect(err.issues[0]).toMatchObject({
      message: 'fallback scenario "b" does not exist',
      fix: "name another scenario of this file: (none)",
    });
  });

  it("reports YAML syntax errors with their line", () => {
    const err = errorOf("scenarios:\n  - name: a\n    fleet: {device: gpu\n");
    expect(err.issues[0]?.line).toBeGreaterThanOrEqual(3);
    expect(err.issues[0]?.message).toMatch(/^invalid YAML: /);
  });

  it("rejects scenario names that would not work on the command line", () => {
    const err = errorOf(VALID.replace("name: a", "name: a b"));
    expect(err.message).toBe(
      "plans/x.yaml:2:11: scenarios[0].name: not a valid scenario name (it is used on the command line and in charts) (fix: use letters, digits, '.', '_' and '-' only)",
    );
  });

  it("rejects an empty file with a pointer to what is needed", () => {
    const err = errorOf("");
    expect(err.issues[0]?.path).toBe("scenarios");
    expect(err.issues[0]?.message).toBe("is required");
  });
});
