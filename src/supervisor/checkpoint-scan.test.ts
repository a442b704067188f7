import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { findResumePoint, pruneCheckpoints, verifyCheckpoint } from "./checkpoint-scan.js";

function writeCheckpoint(
  root: string,
  step: number,
  files: Record<string, string>,
  tamper?: (m: Record<string, unknown>) => void,
): string {
  const dir = path.join(root, `step-${String(step).padStart(8, "0")}`);
  mkdirSync(dir, { recursive: true });
  const entries = Object.entries(files).map(([p, content]) => {
    mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
    writeFileSync(path.join(dir, p), content);
    return { path: p, size: Buffer.byteLength(content), sha256: createHash("sha256").update(content).digest("hex") };
  });
  const manifest: Record<string, unknown> = {
    format: "switchyard-checkpoint/1",
    step,
    shards: 1,
    created: 1,
    files: entries,
  };
  tamper?.(manifest);
  writeFileSync(path.join(dir, "MANIFEST.json"), JSON.stringify(manifest));
  return dir;
}

const root = () => mkdtempSync(path.join(os.tmpdir(), "sy-ckpt-"));

describe("checkpoint manifests", () => {
  it("verifies intact files, nested paths included", async () => {
    const dir = writeCheckpoint(root(), 10, { "model.pt": "weights", "optim/shard0.pt": "state" });
    expect((await verifyCheckpoint(dir, 10)).ok).toBe(true);
  });

  it("catches a flipped byte (same size, different hash)", async () => {
    const dir = writeCheckpoint(root(), 10, { "model.pt": "weights" });
    writeFileSync(path.join(dir, "model.pt"), "weightz");
    expect(await verifyCheckpoint(dir)).toEqual({ ok: false, reason: "model.pt fails its SHA-256 check (corrupted)" });
  });

  it("catches a truncated or missing file", async () => {
    const dir = writeCheckpoint(root(), 10, { "a.pt": "12345", "b.pt": "x" });
    writeFileSync(path.join(dir, "a.pt"), "12");
    expect(await verifyCheckpoint(dir)).toEqual({ ok: false, reason: "a.pt has 2 bytes, manifest says 5" });
  });

  it("refuses a folder without a manifest, a manifest for another step, and paths that escape", async () => {
    const r = root();
    mkdirSync(path.join(r, "step-00000005"));
    expect(await verifyCheckpoint(path.join(r, "step-00000005"))).toEqual({
      ok: false,
      reason: "no MANIFEST.json (torn write?)",
    });
    expect((await verifyCheckpoint(writeCheckpoint(r, 7, { a: "1" }), 8)).ok).toBe(false);
    const escaping = writeCheckpoint(r, 9, { a: "1" }, (m) => ((m.files as Array<{ path: string }>)[0]!.path = "../a"));
    expect(await verifyCheckpoint(escaping)).toEqual({ ok: false, reason: "manifest path escapes: ../a" });
  });

  it("resumes from the newest checkpoint that verifies and reports the ones it skipped", async () => {
    const r = root();
    writeCheckpoint(r, 10, { "m.pt": "ten" });
    writeCheckpoint(r, 20, { "m.pt": "twenty" });
    const bad = writeCheckpoint(r, 30, { "m.pt": "thirty" });
    writeFileSync(path.join(bad, "m.pt"), "thirtY");
    mkdirSync(path.join(r, ".tmp-step-00000040-123")); // a torn write in progress never counts
    const { chosen, skipped } = await findResumePoint(r);
    expect(chosen?.step).toBe(20);
    expect(skipped.map((s) => s.step)).toEqual([30]);
  });

  it("prunes the oldest beyond `keep` but never the protected resume point", async () => {
    const r = root();
    for (const s of [10, 20, 30, 40]) writeCheckpoint(r, s, { m: String(s) });
    const protect = path.join(r, "step-00000010");
    await pruneCheckpoints(r, 2, protect);
    expect(readdirSync(r).sort()).toEqual(["step-00000010", "step-00000030", "step-00000040"]);
  });
});
