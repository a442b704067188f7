import { describe, expect, it } from "vitest";
import { errorOf } from "./spec-test-helpers.js";
import { compileJobSpec, parseClusterSpec, type ClusterSpec } from "./spec.js";

const cluster: ClusterSpec = parseClusterSpec(["pools:", "  - name: local", "    nodes: 1"].join("\n"), "c.yaml");
const opts = { file: "/jobs/train.yaml", cluster, defaultCheckpointRoot: "/home/sy/checkpoints" };
const job = (checkpoint: string) => `name: train\ncommand: [python3, t.py]\ncheckpoint: ${checkpoint}\n`;

describe("checkpoint.watch in a job spec", () => {
  it("compiles a pattern relative to the workdir with the default settle time", () => {
    const spec = compileJobSpec(job("{ watch: snapshot.pt, keep: 2 }"), opts);
    expect(spec.checkpoint).toMatchObject({ keep: 2, watch: { pattern: "snapshot.pt", settleSeconds: 2 } });
    expect(compileJobSpec(job("{ watch: 'ckpt/*.pt', settleSeconds: 0.5 }"), opts).checkpoint.watch).toEqual({
      pattern: "ckpt/*.pt",
      settleSeconds: 0.5,
    });
  });

  it("leaves specs without it as they were", () => {
    expect(compileJobSpec(job("{ keep: 3 }"), opts).checkpoint).not.toHaveProperty("watch");
  });

  it("takes an absolute path inside the workdir, refuses one outside with the file, key and fix", () => {
    expect(compileJobSpec(job("{ watch: /jobs/out/snap.pt }"), opts).checkpoint.watch?.pattern).toBe("out/snap.pt");
    const outside = errorOf(() => compileJobSpec(job("{ watch: /etc/passwd }"), opts));
    expect(outside).toContain("checkpoint.watch");
    expect(outside).toContain("/etc/passwd is outside the job's workdir /jobs");
    expect(outside).toContain("/jobs/train.yaml");
    expect(outside).toMatch(/relative to the workdir/);
  });

  it("refuses escapes, recursion, a bad settle time, and settleSeconds without watch", () => {
    expect(errorOf(() => compileJobSpec(job("{ watch: ../x.pt }"), opts))).toMatch(
      /checkpoint\.watch[\s\S]*leaves the workdir[\s\S]*ckpt\/\*\.pt/,
    );
    expect(errorOf(() => compileJobSpec(job("{ watch: '**/*.pt' }"), opts))).toMatch(/no recursive patterns/);
    expect(errorOf(() => compileJobSpec(job("{ watch: s.pt, settleSeconds: 0 }"), opts))).toMatch(
      /checkpoint\.settleSeconds/,
    );
    expect(errorOf(() => compileJobSpec(job("{ watch: s.pt, settleSeconds: 99999 }"), opts))).toMatch(/at most 3600/);
    expect(errorOf(() => compileJobSpec(job("{ settleSeconds: 3 }"), opts))).toMatch(
      /settleSeconds[\s\S]*checkpoint\.watch is not[\s\S]*add watch/,
    );
    expect(errorOf(() => compileJobSpec(job("{ watch: 7 }"), opts))).toContain("checkpoint.watch");
  });
});
