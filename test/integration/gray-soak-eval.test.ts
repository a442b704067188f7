import { spawnSync } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { exampleDir, hasTorch, tempHome, torchPython } from "./harness.js";

/**
 * The healthy soak (bench/gray/soak.mjs) needs eval steps: `train.py --eval-every N` evaluates held-out batches every N
 * steps, a step several times longer than the others, and must change nothing in the training itself (the soak's runs
 * are the example's runs plus evals). One rank on CPU, the same 30 steps with and without evals.
 */

function train(extra: string[]): { out: string; code: number | null } {
  const dir = tempHome("gray-eval");
  const r = spawnSync(
    torchPython!.path,
    [
      path.join(exampleDir, "train.py"),
      "--steps",
      "30",
      "--ckpt-every",
      "1000",
      "--batch",
      "4",
      "--eval-final",
      ...extra,
    ],
    {
      encoding: "utf8",
      cwd: dir,
      timeout: 120_000,
      env: {
        ...process.env,
        RANK: "0",
        WORLD_SIZE: "1",
        MASTER_ADDR: "127.0.0.1",
        MASTER_PORT: String(20_000 + Math.floor(Math.random() * 20_000)),
        GLOO_SOCKET_IFNAME: "lo",
      },
    },
  );
  return { out: `${r.stdout}${r.stderr}`, code: r.status };
}

describe.skipIf(!hasTorch)("train.py --eval-every (the soak's eval steps)", () => {
  it("evaluates every N steps and leaves the training exactly as it was", () => {
    const plain = train([]);
    const evals = train(["--eval-every", "10"]);
    expect(plain.code, plain.out).toBe(0);
    expect(evals.code, evals.out).toBe(0);
    expect(plain.out).not.toMatch(/eval at step/);
    const lines = evals.out.match(/^eval at step \d+: val_loss \d+\.\d{4}$/gm) ?? [];
    expect(lines.map((l) => Number(/step (\d+)/.exec(l)![1]))).toEqual([10, 20, 30]);
    const final = (s: string) => /final_loss (\S+)/.exec(s)?.[1];
    expect(final(evals.out)).toBeDefined();
    expect(final(evals.out)).toBe(final(plain.out));
  }, 240_000);
});
