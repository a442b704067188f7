import { describe, expect, it } from "vitest";
import { compileJobSpec, parseClusterSpec, type ClusterSpec } from "./spec.js";
import { errorOf } from "./spec-test-helpers.js";

const cluster: ClusterSpec = parseClusterSpec(
  ["pools:", "  - name: ascend", "    nodes: 2", "  - name: nvidia", "    nodes: 1"].join("\n"),
  "cluster.yaml",
);
const opts = { file: "/jobs/train.yaml", cluster, defaultCheckpointRoot: "/home/sy/checkpoints" };

describe("job spec", () => {
  it("applies every default in one place and makes paths absolute", () => {
    const spec = compileJobSpec("name: train\ncommand: [python3, t.py]\n", opts);
    expect(spec).toEqual({
      name: "train",
      pools: [],
      nodes: 1,
      minNodes: 1,
      procsPerNode: 1,
      command: ["python3", "t.py"],
      env: {},
      workdir: "/jobs",
      steps: null,
      checkpoint: { dir: "/home/sy/checkpoints/train", keep: 3, perRun: true, resumeFrom: null },
      progress: { regex: null },
      recovery: {
        maxRestarts: 10,
        restartWindowSeconds: null,
        crashLoopAttempts: 2,
        poolFailures: { count: 3, windowSeconds: 1800 },
        backoffSeconds: 1,
        maxBackoffSeconds: 60,
        strikesBeforeCordon: 2,
        graceSeconds: 5,
      },
      detection: {
        startupSeconds: 300,
        hangMinSeconds: 10,
        hangMultiple: 3,
        stackDumpSeconds: 2,
        nativeStacks: false,
        nanIsFailure: true,
        slowdown: { factor: 2, windowSeconds: 20, sustainSeconds: 15, warmupSteps: 10 },
      },
      source: "/jobs/train.yaml",
    });
  });

  it("resolves workdir and checkpoint dir against the spec's folder; env values become strings", () => {
    const spec = compileJobSpec(
      "name: t\ncommand: [x]\nworkdir: run\ncheckpoint: { dir: ckpt }\nenv: { SEED: 3, DEBUG: true }\n",
      opts,
    );
    expect(spec.workdir).toBe("/jobs/run");
    expect(spec.checkpoint.dir).toBe("/jobs/run/ckpt");
    expect(spec.env).toEqual({ SEED: "3", DEBUG: "true" });
  });

  it("a spec without checkpoint.dir gets a folder per run; an explicit dir is shared on purpose; --resume-from", () => {
    const fresh = compileJobSpec("name: t\ncommand: [x]\n", opts);
    expect(fresh.checkpoint).toMatchObject({ dir: "/home/sy/checkpoints/t", perRun: true, resumeFrom: null });
    const shared = compileJobSpec("name: t\ncommand: [x]\ncheckpoint: { dir: /data/ckpt }\n", opts);
    expect(shared.checkpoint).toMatchObject({ dir: "/data/ckpt", perRun: false });
    const resumed = compileJobSpec("name: t\ncommand: [x]\n", { ...opts, resumeFrom: "/home/sy/checkpoints/t/t-1" });
    expect(resumed.checkpoint.resumeFrom).toBe("/home/sy/checkpoints/t/t-1");
  });

  it("names an unknown key with its line and the key it probably meant", () => {
    const message = errorOf(() => compileJobSpec("name: t\ncommand: [x]\nrecovery:\n  maxRestart: 3\n", opts));
    expect(message).toBe(
      '/jobs/train.yaml:4:3: recovery.maxRestart: unknown key "maxRestart" (fix: did you mean "maxRestarts"?)',
    );
  });

  it("lists the allowed keys when nothing is close", () => {
    const message = errorOf(() => compileJobSpec("name: t\ncommand: [x]\nfrobnicate: 1\n", opts));
    expect(message).toMatch(
      /^\/jobs\/train\.yaml:3:1: frobnicate: unknown key "frobnicate" \(fix: remove it; allowed keys here: name, pools, /,
    );
  });

  it("reports a missing required field at its parent", () => {
    expect(errorOf(() => compileJobSpec("name: t\n", opts))).toBe(
      "/jobs/train.yaml:1:1: command: is required (fix: add this field (array))",
    );
  });

  it("reports a wrong type with the value it got", () => {
    expect(errorOf(() => compileJobSpec("name: t\ncommand: [x]\nnodes: two\n", opts))).toBe(
      '/jobs/train.yaml:3:8: nodes: expected number, got string "two" (fix: write a number here)',
    );
  });

  it("rejects a pool the cluster does not have and lists the ones it has", () => {
    expect(errorOf(() => compileJobSpec("name: t\ncommand: [x]\npools: [ascend, tpu]\n", opts))).toBe(
      '/jobs/train.yaml:3:17: pools[1]: unknown pool "tpu" (fix: use one of the cluster\'s pools (ascend, nvidia), ' +
        "or load a cluster that has it: switchyard up --cluster <file>)",
    );
  });

  it("rejects a progress regex without a step group", () => {
    expect(errorOf(() => compileJobSpec("name: t\ncommand: [x]\nprogress: { regex: 'loss (\\S+)' }\n", opts))).toBe(
      "/jobs/train.yaml:3:20: progress.regex: is not a valid regular expression with a named group 'step' " +
        "(fix: e.g. 'step (?<step>\\d+) loss (?<loss>\\S+)')",
    );
  });

  it("detection.slowdown: optional, partial blocks filled with defaults, bounds named with the fix", () => {
    const spec = compileJobSpec("name: t\ncommand: [x]\ndetection:\n  slowdown: { factor: 3 }\n", opts);
    expect(spec.detection.slowdown).toEqual({ factor: 3, windowSeconds: 20, sustainSeconds: 15, warmupSteps: 10 });
    expect(
      errorOf(() => compileJobSpec("name: t\ncommand: [x]\ndetection:\n  slowdown: { factor: 1 }\n", opts)),
    ).toMatch(/^\/jobs\/train\.yaml:4:23: detection\.slowdown\.factor: .*1\.1/);
    expect(
      errorOf(() => compileJobSpec("name: t\ncommand: [x]\ndetection:\n  slowdown: { windowS: 3 }\n", opts)),
    ).toMatch(/detection\.slowdown\.windowS: unknown key "windowS" \(fix: .*windowSeconds/);
  });

  it("reports YAML syntax errors with their position", () => {
    expect(errorOf(() => compileJobSpec("name: t\ncommand: [x\n", opts))).toMatch(
      /^\/jobs\/train\.yaml:\d+:\d+: invalid YAML: /,
    );
  });

  it("reports every problem at once", () => {
    const message = errorOf(() => compileJobSpec("name: Bad Name\ncommand: []\nprocsPerNode: 0\n", opts));
    expect(message.split("\n")).toHaveLength(3);
  });
});

describe("cluster spec", () => {
  it("fills pool defaults", () => {
    expect(cluster.pools[0]).toEqual({
      name: "ascend",
      executor: "local",
      accelerator: { vendor: "cpu" },
      nodes: 2,
      devicesPerNode: 1,
    });
  });

  it("rejects duplicate pool names", () => {
    expect(
      errorOf(() => parseClusterSpec("pools:\n  - {name: a, nodes: 1}\n  - {name: a, nodes: 2}\n", "c.yaml")),
    ).toBe('c.yaml:3:12: pools[1].name: duplicate pool name "a" (also pools[0]) (fix: give every pool a unique name)');
  });

  it("rejects an unknown vendor with the allowed ones", () => {
    expect(
      errorOf(() =>
        parseClusterSpec("pools:\n  - name: a\n    nodes: 1\n    accelerator: { vendor: tpu }\n", "c.yaml"),
      ),
    ).toBe(
      'c.yaml:4:28: pools[0].accelerator.vendor: must be one of "nvidia", "ascend", "cpu", got string "tpu" (fix: pick one of the listed values)',
    );
  });
});

describe("cluster cause patterns", () => {
  it("accepts user failure patterns and rejects one whose regex does not compile", () => {
    const ok = parseClusterSpec(
      'pools: [{name: a, nodes: 1}]\ncausePatterns:\n  - { id: lustre, cause: network, regex: "LustreError", detail: "Lustre timed out" }\n',
      "c.yaml",
    );
    expect(ok.causePatterns?.[0]?.id).toBe("lustre");
    expect(
      errorOf(() =>
        parseClusterSpec(
          'pools: [{name: a, nodes: 1}]\ncausePatterns:\n  - { id: bad, cause: network, regex: "(", detail: x }\n',
          "c.yaml",
        ),
      ),
    ).toMatch(/^c\.yaml:3:\d+: causePatterns\[0\]\.regex: is not a valid regular expression/);
  });
});
