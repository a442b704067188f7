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
