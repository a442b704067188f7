import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
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

  describe("hostile folders: only regular files verify, nothing blocks, nothing throws", () => {
    /** A checkpoint whose manifest lists `name` with the given size and hash, and `name` replaced by `make`. */
    function hostile(name: string, make: (full: string) => void, size = 5, content = "hello"): string {
      const dir = writeCheckpoint(root(), 10, { [name]: content });
      const full = path.join(dir, name);
      rmSync(full, { force: true, recursive: true });
      make(full);
      const manifestPath = path.join(dir, "MANIFEST.json");
      const manifest = JSON.parse(readFileSync(manifestPath, "utf8")) as {
        files: Array<{ size: number }>;
      };
      manifest.files[0]!.size = size;
      writeFileSync(manifestPath, JSON.stringify(manifest));
      return dir;
    }

    it("refuses a symlink to /dev/zero instead of hashing forever", async () => {
      const dir = hostile("model.pt", (f) => symlinkSync("/dev/zero", f), 0);
      expect(await verifyCheckpoint(dir, 10)).toEqual({
        ok: false,
        reason: "model.pt is a symlink, not a regular file",
      });
    });

    it("refuses a symlink to a readable file outside the checkpoint whose size and hash match", async () => {
      const outside = path.join(root(), "secret");
      writeFileSync(outside, "hello");
      const dir = hostile("model.pt", (f) => symlinkSync(outside, f));
      const v = await verifyCheckpoint(dir, 10);
      expect(v).toEqual({ ok: false, reason: "model.pt is a symlink, not a regular file" });
      const { chosen, skipped } = await findResumePoint(path.dirname(dir));
      expect(chosen).toBeNull();
      expect(skipped.map((s) => s.step)).toEqual([10]);
    });

    it("refuses a file reached through a symlinked folder", async () => {
      const outside = root();
      writeFileSync(path.join(outside, "shard.pt"), "hello");
      const dir = writeCheckpoint(root(), 10, { "optim/shard.pt": "hello" });
      rmSync(path.join(dir, "optim"), { recursive: true });
      symlinkSync(outside, path.join(dir, "optim"));
      expect(await verifyCheckpoint(dir, 10)).toEqual({
        ok: false,
        reason: "optim/shard.pt: folder optim is a symlink (only real files verify)",
      });
    });

    it("refuses a FIFO without blocking on it", async () => {
      const dir = hostile("model.pt", (f) => execFileSync("mkfifo", [f]));
      expect(statSync(path.join(dir, "model.pt")).isFIFO()).toBe(true);
      expect(await verifyCheckpoint(dir, 10)).toEqual({ ok: false, reason: "model.pt is a FIFO, not a regular file" });
    });

    it("refuses a symlinked or FIFO MANIFEST.json", async () => {
      const dir = writeCheckpoint(root(), 10, { "model.pt": "hello" });
      rmSync(path.join(dir, "MANIFEST.json"));
      symlinkSync("/dev/zero", path.join(dir, "MANIFEST.json"));
      expect(await verifyCheckpoint(dir, 10)).toEqual({
        ok: false,
        reason: "MANIFEST.json is a symlink, not a regular file",
      });
      rmSync(path.join(dir, "MANIFEST.json"));
      execFileSync("mkfifo", [path.join(dir, "MANIFEST.json")]);
      expect(await verifyCheckpoint(dir, 10)).toEqual({
        ok: false,
        reason: "MANIFEST.json is a FIFO, not a regular file",
      });
    });

    it("skips a manifest that lists '.' (or a folder) with a reason instead of throwing EISDIR", async () => {
      const r = root();
      writeCheckpoint(r, 5, { "m.pt": "good" });
      const dot = writeCheckpoint(r, 10, { "m.pt": "x" }, (m) => ((m.files as Array<{ path: string }>)[0]!.path = "."));
      expect(await verifyCheckpoint(dot, 10)).toEqual({
        ok: false,
        reason: 'manifest lists a path with an empty or "." component: "."',
      });
      const folder = writeCheckpoint(r, 20, { "sub/m.pt": "x" }, (m) => {
        (m.files as Array<{ path: string; size: number }>)[0]!.path = "sub";
        (m.files as Array<{ path: string; size: number }>)[0]!.size = statSync(
          path.join(r, "step-00000020", "sub"),
        ).size;
      });
      expect(await verifyCheckpoint(folder, 20)).toEqual({ ok: false, reason: "sub is a folder, not a regular file" });
      const { chosen, skipped } = await findResumePoint(r);
      expect(chosen?.step).toBe(5);
      expect(skipped.map((s) => s.step)).toEqual([20, 10]);
    });

    it("checks the size before hashing and refuses malformed sizes, hashes and duplicate entries", async () => {
      const dir = writeCheckpoint(root(), 10, { "m.pt": "hello" });
      const manifestPath = path.join(dir, "MANIFEST.json");
      const good = JSON.parse(readFileSync(manifestPath, "utf8")) as {
        files: Array<Record<string, unknown>>;
      };
      const variants: Array<[(f: Record<string, unknown>, m: typeof good) => void, string]> = [
        [(f) => (f.size = -1), 'manifest size of "m.pt" is not a byte count'],
        [(f) => (f.size = 1e300), 'manifest size of "m.pt" is not a byte count'],
        [(f) => (f.sha256 = "zz"), 'manifest sha256 of "m.pt" is not 64 hex digits'],
        [(f, m) => m.files.push({ ...f }), 'manifest lists "m.pt" twice'],
        [(f) => (f.size = 6), "m.pt has 5 bytes, manifest says 6"],
      ];
      for (const [tamper, reason] of variants) {
        const m = structuredClone(good);
        tamper(m.files[0]!, m);
        writeFileSync(manifestPath, JSON.stringify(m));
        expect(await verifyCheckpoint(dir, 10)).toEqual({ ok: false, reason });
      }
    });

    it("lists only real step folders: a symlinked step folder is not a checkpoint", async () => {
      const r = root();
      const real = writeCheckpoint(root(), 30, { "m.pt": "thirty" });
      symlinkSync(real, path.join(r, "step-00000030"));
      writeCheckpoint(r, 10, { "m.pt": "ten" });
      const { chosen, skipped } = await findResumePoint(r);
      expect(chosen?.step).toBe(10);
      expect(skipped).toEqual([]);
      expect(await verifyCheckpoint(path.join(r, "step-00000030"), 30)).toEqual({
        ok: false,
        reason: "the checkpoint folder is a symlink, not a folder",
      });
    });

    it("hashes a large file in chunks without holding the event loop", async () => {
      const big = Buffer.alloc(8 << 20, 7);
      const dir = path.join(root(), "step-00000001");
      mkdirSync(dir);
      writeFileSync(path.join(dir, "big.pt"), big);
      writeFileSync(
        path.join(dir, "MANIFEST.json"),
        JSON.stringify({
          format: "switchyard-checkpoint/1",
          step: 1,
          shards: 1,
          files: [{ path: "big.pt", size: big.length, sha256: createHash("sha256").update(big).digest("hex") }],
        }),
      );
      let turns = 0;
      const spin = setInterval(() => turns++, 0);
      const v = await verifyCheckpoint(dir, 1);
      clearInterval(spin);
      expect(v.ok).toBe(true);
      // 8 chunks of 1 MiB, each its own read: timers got to run in between.
      expect(turns).toBeGreaterThan(0);
    });
  });
});
