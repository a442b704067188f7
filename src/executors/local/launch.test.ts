import { mkdirSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { PoolSpec } from "../../core/spec.js";
import { LocalExecutor } from "./local.js";

const pool: PoolSpec = { name: "p", executor: "local", accelerator: { vendor: "nvidia" }, nodes: 2, devicesPerNode: 2 };

/** Live processes (not zombies) whose command line contains `arg`. */
function withArg(arg: string): number[] {
  return readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        const state = /\) (\S)/.exec(readFileSync(`/proc/${d}/stat`, "utf8"))?.[1];
        return state !== "Z" && readFileSync(`/proc/${d}/cmdline`, "utf8").includes(arg);
      } catch {
        return false;
      }
    })
    .map(Number);
}

describe("local launch", () => {
  it("gives each rank the devices the queue chose", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "sy-launch-"));
    const ranks = await new LocalExecutor().launch({
      jobId: "j-1",
      jobName: "j",
      attempt: 1,
      dir,
      pool,
      nodes: ["p-0", "p-1"],
      devices: [[1], [0]],
      procsPerNode: 1,
      command: ["/bin/sh", "-c", 'echo "$SWITCHYARD_NODE=$CUDA_VISIBLE_DEVICES" > "$0-$RANK"', path.join(dir, "seen")],
      env: {},
      workdir: dir,
      masterPort: 1,
      checkpointDir: path.join(dir, "ck"),
      resumeFrom: null,
    });
    expect(ranks).toHaveLength(2);
    const seen = async (rank: number) => {
      for (let i = 0; i < 400; i++) {
        const text = (() => {
          try {
            return readFileSync(path.join(dir, `seen-${rank}`), "utf8");
          } catch {
            return "";
          }
        })();
        if (text.endsWith("\n")) return text.trim();
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error(`rank ${rank} wrote nothing`);
    };
    expect([await seen(0), await seen(1)]).toEqual(["p-0=1", "p-1=0"]);
  });

  it("a gang that cannot start whole leaves no rank of it running", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "sy-launch-"));
    mkdirSync(path.join(dir, "rank-1.log")); // rank 1's log cannot be opened: its launch fails after rank 0's
    const marker = path.join(dir, "rank0-marker");
    const launch = new LocalExecutor().launch({
      jobId: "j-1",
      jobName: "j",
      attempt: 1,
      dir,
      pool,
      nodes: ["p-0"],
      procsPerNode: 2,
      command: ["/bin/sh", "-c", "exec sleep 30", marker],
      env: {},
      workdir: dir,
      masterPort: 1,
      checkpointDir: path.join(dir, "ck"),
      resumeFrom: null,
    });
    await expect(launch).rejects.toThrow(/EISDIR/);
    // Rank 0's wrapper (its command line names the marker) must be gone, not left waiting on `sleep 30`.
    let left = withArg(marker);
    for (let i = 0; i < 200 && left.length > 0; i++) {
      await new Promise((r) => setTimeout(r, 25));
      left = withArg(marker);
    }
    expect(left).toEqual([]);
  });
});
