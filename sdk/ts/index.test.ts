import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { MANIFEST_FORMAT, Rank, checkpointDirName, loadManifest, readManifest } from "./index.js";

let tmp: string;
let reportFile: string;
let ckptRoot: string;

const readLines = (): Record<string, unknown>[] =>
  fs
    .readFileSync(reportFile, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, unknown>);

const sha256 = (data: string | Buffer): string => createHash("sha256").update(data).digest("hex");

const rankWith = (extra: Record<string, string> = {}): Rank =>
  new Rank({
    RANK: "1",
    WORLD_SIZE: "2",
    SWITCHYARD_ATTEMPT: "3",
    SWITCHYARD_REPORT: reportFile,
    SWITCHYARD_CHECKPOINT_DIR: ckptRoot,
    ...extra,
  });

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "switchyard-sdk-"));
  reportFile = path.join(tmp, "reports", "rank1.jsonl");
  ckptRoot = path.join(tmp, "ckpt");
});

afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe("reports", () => {
  it("writes a start line, then one JSON line per step with the rank contract fields", () => {
    const r = rankWith();
    r.step(0, { loss: 4.2, tokens: 128, computeS: 0.05, lr: 0.001 });
    r.step(1);
    r.done(1);
    r.close();
    const lines = readLines();
    expect(lines.map((l) => l.kind)).toEqual(["start", "step", "step", "done"]);
    expect(lines[0]).toMatchObject({ kind: "start", pid: process.pid, rank: 1, attempt: 3 });
    expect(lines[1]).toMatchObject({ kind: "step", step: 0, loss: 4.2, tokens: 128, compute_s: 0.05, lr: 0.001 });
    expect(lines[2]).not.toHaveProperty("loss");
    expect(lines[3]).toMatchObject({ kind: "done", step: 1 });
    expect(typeof lines[1]?.t).toBe("number");
  });

  it('writes non-finite numbers as "nan", "inf", "-inf" strings', () => {
    const r = rankWith();
    r.step(5, { loss: NaN, gradNorm: Infinity, nested: [-Infinity] });
    r.close();
    const raw = fs.readFileSync(reportFile, "utf8");
    expect(raw).not.toMatch(/NaN|Infinity|null/);
    expect(readLines()[1]).toMatchObject({ loss: "nan", gradNorm: "inf", nested: ["-inf"] });
  });

  it("does not let extra fields overwrite the contract fields", () => {
    const r = rankWith();
    r.step(2, { kind: "bogus", rank: 9, step: 7 });
    r.close();
    expect(readLines()[1]).toMatchObject({ kind: "step", rank: 1, step: 2 });
  });

  it("is a no-op without SWITCHYARD_REPORT", () => {
    const r = new Rank({});
    r.step(0, { loss: 1 });
    r.done(0);
    expect(fs.existsSync(reportFile)).toBe(false);
    expect(r.rank).toBe(0);
    expect(r.worldSize).toBe(1);
    expect(r.attempt).toBeNull();
  });

  it("reads resumePath from SWITCHYARD_RESUME_FROM, empty meaning a fresh start", () => {
    expect(rankWith({ SWITCHYARD_RESUME_FROM: "" }).resumePath()).toBeNull();
    expect(rankWith({ SWITCHYARD_RESUME_FROM: "/x/step-00000020" }).resumePath()).toBe("/x/step-00000020");
  });
});

describe("checkpoint", () => {
  it("moves a manifest-verified directory into place and reports it", async () => {
    const r = rankWith();
    let tmpDir = "";
    const final = await r.checkpoint(
      42,
      async (dir) => {
        tmpDir = dir;
        expect(path.basename(dir)).toBe(`.tmp-step-00000042-${process.pid}`);
        fs.writeFileSync(path.join(dir, "state.bin"), "weights");
        fs.mkdirSync(path.join(dir, "optim"));
        fs.writeFileSync(path.join(dir, "optim", "adam.bin"), Buffer.alloc(70_000, 7));
      },
      { shards: 2 },
    );
    r.close();
    expect(final).toBe(path.join(ckptRoot, "step-00000042"));
    expect(fs.existsSync(tmpDir)).toBe(false);
    expect(fs.readdirSync(ckptRoot)).toEqual(["step-00000042"]);

    const manifest = await readManifest(final);
    expect(manifest).toMatchObject({ format: MANIFEST_FORMAT, step: 42, shards: 2 });
    expect(manifest.files).toEqual([
      { path: "optim/adam.bin", size: 70_000, sha256: sha256(Buffer.alloc(70_000, 7)) },
      { path: "state.bin", size: 7, sha256: sha256("weights") },
    ]);
    expect(await loadManifest(final)).toBe(42);

    const line = readLines().find((l) => l.kind === "checkpoint");
    expect(line).toMatchObject({ step: 42, path: final, bytes: 70_007 });
    expect(line?.save_s).toBeGreaterThanOrEqual(0);
  });

  it("replaces an existing checkpoint of the same step (a re-run after resume)", async () => {
    const r = rankWith();
    await r.checkpoint(3, (dir) => fs.writeFileSync(path.join(dir, "a"), "old"));
    const final = await r.checkpoint(3, (dir) => fs.writeFileSync(path.join(dir, "a"), "new"));
    r.close();
    expect(fs.readFileSync(path.join(final, "a"), "utf8")).toBe("new");
    expect(fs.readdirSync(ckptRoot)).toEqual([checkpointDirName(3)]);
    expect((await readManifest(final)).files[0]?.sha256).toBe(sha256("new"));
  });

  it("removes the temp directory and rethrows when the writer throws", async () => {
    const r = rankWith();
    await expect(
      r.checkpoint(7, (dir) => {
        fs.writeFileSync(path.join(dir, "half"), "x");
        throw new Error("disk on fire");
      }),
    ).rejects.toThrow("disk on fire");
    r.close();
    expect(fs.readdirSync(ckptRoot)).toEqual([]);
    expect(fs.existsSync(reportFile)).toBe(false); // no checkpoint line (and no other report was made)
  });

  it("refuses an empty checkpoint, which could never be resumed from", async () => {
    const r = rankWith();
    await expect(r.checkpoint(8, () => undefined)).rejects.toThrow(/checkpoint\(8\): nothing was written/);
    r.close();
    expect(fs.readdirSync(ckptRoot)).toEqual([]);
  });

  it("rejects a manifest of an unknown format", async () => {
    fs.mkdirSync(path.join(tmp, "weird"));
    fs.writeFileSync(path.join(tmp, "weird", "MANIFEST.json"), JSON.stringify({ format: "other/9", step: 1 }));
    await expect(readManifest(path.join(tmp, "weird"))).rejects.toThrow(/unknown checkpoint format "other\/9"/);
  });
});
