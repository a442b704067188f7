import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { RankRecord } from "../store/port.js";
import { injectChaos, type ChaosTarget } from "./chaos.js";

const rank: RankRecord = {
  jobId: "j",
  attempt: 1,
  rank: 0,
  node: "n-0",
  pid: 1,
  startTicks: null,
  logPath: "",
  reportPath: "",
  reportOffset: 0,
  exitCode: null,
  exitSignal: null,
  exitedAt: null,
};

function target(): ChaosTarget & { root: string } {
  const root = mkdtempSync(path.join(os.tmpdir(), "sy-chaos-"));
  mkdirSync(path.join(root, "attempt"));
  mkdirSync(path.join(root, "ckpt"));
  return {
    root,
    ranks: [rank],
    attemptDir: path.join(root, "attempt"),
    checkpointDir: path.join(root, "ckpt"),
    signalRank: () => true,
  };
}

describe("chaos on files a rank can write", () => {
  it("corrupt-checkpoint flips one byte of the newest checkpoint's first data file, in place", async () => {
    const t = target();
    mkdirSync(path.join(t.checkpointDir, "step-00000005"));
    mkdirSync(path.join(t.checkpointDir, "step-00000010"));
    writeFileSync(path.join(t.checkpointDir, "step-00000005", "a.pt"), "old");
    writeFileSync(path.join(t.checkpointDir, "step-00000010", "a.pt"), "abcd");
    const r = await injectChaos("corrupt-checkpoint", t, undefined);
    expect(r.message).toBe(`flipped byte 2 of ${path.join(t.checkpointDir, "step-00000010", "a.pt")}`);
    const after = readFileSync(path.join(t.checkpointDir, "step-00000010", "a.pt"));
    expect([...after]).toEqual([0x61, 0x62, 0x63 ^ 0xff, 0x64]);
  });

  it("corrupt-checkpoint never writes through a symlink planted in a checkpoint (or a symlinked step folder)", async () => {
    const t = target();
    const victim = path.join(t.root, "victim");
    writeFileSync(victim, "precious");
    mkdirSync(path.join(t.checkpointDir, "step-00000010"));
    symlinkSync(victim, path.join(t.checkpointDir, "step-00000010", "a.pt"));
    await expect(injectChaos("corrupt-checkpoint", t, undefined)).rejects.toThrow(
      "checkpoint step-00000010 holds no regular data file",
    );
    const elsewhere = path.join(t.root, "elsewhere");
    mkdirSync(elsewhere);
    writeFileSync(path.join(elsewhere, "a.pt"), "precious");
    symlinkSync(elsewhere, path.join(t.checkpointDir, "step-00000020"));
    await expect(injectChaos("corrupt-checkpoint", t, undefined)).rejects.toThrow(
      "checkpoint step-00000010 holds no regular data file",
    );
    expect(readFileSync(victim, "utf8")).toBe("precious");
    expect(readFileSync(path.join(elsewhere, "a.pt"), "utf8")).toBe("precious");
  });

  it("the nan marker is never created through a symlink", async () => {
    const t = target();
    const victim = path.join(t.root, "victim");
    writeFileSync(victim, "precious");
    symlinkSync(victim, path.join(t.attemptDir!, "chaos-nan-rank-0"));
    await expect(injectChaos("nan", t, 0)).rejects.toThrow("a symlink is in the way");
    expect(readFileSync(victim, "utf8")).toBe("precious");
    const ok = target();
    expect((await injectChaos("nan", ok, 0)).rank).toBe(0);
    expect(readFileSync(path.join(ok.attemptDir!, "chaos-nan-rank-0"), "utf8")).toBe("");
  });
});

describe("chaos on a host's link (the Slurm testbed)", () => {
  const shaper = () => {
    const calls: string[][] = [];
    return {
      calls,
      degrade: async (node: string, rate: string, opts?: { burst?: string }) => {
        calls.push(["degrade", node, rate, opts?.burst ?? ""]);
        return "";
      },
      heal: async (node: string) => {
        calls.push(["heal", node]);
        return "";
      },
    };
  };

  it("degrade-link shapes the named host's link (rates as people write them are rewritten), heal-link undoes it", async () => {
    const s = shaper();
    const t = { ...target(), poolExecutor: "slurm", shaper: s };
    const r = await injectChaos("degrade-link", { ...t, link: { node: "a2", rate: "5Mbit/s" } }, undefined);
    expect(r).toMatchObject({ action: "degrade-link", node: "a2", rate: "5mbit" });
    expect(r.message).toBe("a2's link shaped to 5mbit both ways");
    await injectChaos("degrade-link", { ...t, link: { rate: "100mbit", burst: "40mb" } }, undefined);
    await injectChaos("heal-link", { ...t, link: { node: "a2" } }, undefined);
    expect(s.calls).toEqual([
      ["degrade", "a2", "5mbit", ""],
      ["degrade", "n-0", "100mbit", "40mb"], // no host named: the highest running rank's
      ["heal", "a2"],
    ]);
  });

  it("refuses a local pool, a missing or bad rate, with the fix", async () => {
    const s = shaper();
    await expect(
      injectChaos(
        "degrade-link",
        { ...target(), poolExecutor: "local", shaper: s, link: { rate: "5mbit" } },
        undefined,
      ),
    ).rejects.toThrow(/Slurm testbed.*use slow-rank/);
    const t = { ...target(), poolExecutor: "slurm", shaper: s };
    await expect(injectChaos("degrade-link", { ...t, link: { node: "a2" } }, undefined)).rejects.toThrow(
      /needs a rate \(fix: --rate 5mbit\)/,
    );
    await expect(injectChaos("degrade-link", { ...t, link: { node: "a2", rate: "fast" } }, undefined)).rejects.toThrow(
      /bad rate "fast"/,
    );
    expect(s.calls).toEqual([]);
  });
});
