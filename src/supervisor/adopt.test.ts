import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  statSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { AdoptedManifest } from "../core/adopted.js";
import type { CompiledJobSpec } from "../core/spec.js";
import type { Executor } from "../executors/port.js";
import type { AttemptRecord, EventRecord, JobRecord, Store } from "../store/port.js";
import { adoptedDir, Adopter, listLive, newestAdoptedFile } from "./adopt.js";
import { injectChaos } from "./chaos.js";
import { SupervisorContext } from "./context.js";
import { FakeClock } from "./testing/fakes.js";
import { compilePattern } from "../core/adopted.js";

const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

/** A workdir, a checkpoint root, a context whose store keeps events and says the last step is `step.value`. */
function setup(opts: { pattern?: string; keep?: number; settleSeconds?: number; jobId?: string } = {}) {
  const root = mkdtempSync(path.join(os.tmpdir(), "sy-adopt-"));
  const workdir = path.join(root, "work");
  mkdirSync(workdir);
  const events: Array<Omit<EventRecord, "id">> = [];
  /** What rank 0 reported: `value` at time 0 unless `samples` are given. */
  const step = { value: 4 as number | null, samples: null as Array<{ step: number; t: number }> | null };
  const active: JobRecord[] = [];
  const store = {
    addEvent: async (e: Omit<EventRecord, "id">) => void events.push(e),
    listJobs: async () => active,
    listAttempts: async () => [{ n: 1, resumeStep: null, endedAt: null }],
    recentSteps: async () =>
      (step.samples ?? (step.value === null ? [] : [{ step: step.value, t: 0 }])).map((s) => ({
        jobId: "j",
        attempt: 1,
        rank: 0,
        ...s,
      })),
  } as unknown as Store;
  const clock = new FakeClock(Date.now());
  const ctx = new SupervisorContext({
    store,
    executor: {} as Executor,
    clock,
    cluster: { pools: [] },
    home: root,
  });
  const jobFor = (id: string, resumeFrom: string | null = null): JobRecord => ({
    id,
    name: "train",
    state: "RUNNING",
    reason: null,
    restarts: 0,
    createdAt: 0,
    updatedAt: 0,
    endedAt: null,
    spec: {
      workdir,
      checkpoint: {
        dir: path.join(root, "checkpoints", "train", id),
        keep: opts.keep ?? 3,
        perRun: true,
        resumeFrom,
        watch: { pattern: opts.pattern ?? "snapshot.pt", settleSeconds: opts.settleSeconds ?? 2 },
      },
    } as unknown as CompiledJobSpec,
  });
  const job = jobFor(opts.jobId ?? "train-aaaaaa");
  const attempt = { n: 1, resumeStep: null } as AttemptRecord;
  const adopter = new Adopter(ctx);
  /** Looks until the file settles (the clock moves past the settle time) and waits for the adoption. */
  const adoptNow = async (a = adopter, j = job, at = attempt) => {
    await a.look(j, at);
    clock.advance(((opts.settleSeconds ?? 2) + 0.1) * 1000);
    await a.look(j, at);
    await a.settled(j.id);
  };
  const manifest = (j = job) =>
    JSON.parse(readFileSync(path.join(adoptedDir(j.spec, j.id), "manifest.json"), "utf8")) as AdoptedManifest;
  const live = (p = "snapshot.pt") => path.join(workdir, p);
  return { root, workdir, events, step, clock, ctx, job, jobFor, attempt, adopter, adoptNow, manifest, live, active };
}

describe("adopting the files a script saves", () => {
  it("adopts a settled file once: size and SHA-256 in a 0600 manifest, a 0600 copy in a 0700 folder", async () => {
    const t = setup();
    writeFileSync(t.live(), "epoch 4 weights");
    await t.adopter.look(t.job, t.attempt);
    await t.adopter.settled(t.job.id);
    expect(t.events).toEqual([]); // not settled yet
    await t.adoptNow();
    const m = t.manifest();
    expect(m.generations).toHaveLength(1);
    const g = m.generations[0]!;
    expect(g).toMatchObject({ generation: 1, path: "snapshot.pt", size: 15, sha256: sha("epoch 4 weights"), step: 4 });
    const dir = adoptedDir(t.job.spec, t.job.id);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(path.join(dir, "manifest.json")).mode & 0o777).toBe(0o600);
    expect(statSync(path.join(dir, g.stored)).mode & 0o777).toBe(0o600);
    expect(readFileSync(path.join(dir, g.stored), "utf8")).toBe("epoch 4 weights");
    const saved = t.events.filter((e) => e.kind === "checkpoint.saved");
    expect(saved).toHaveLength(1);
    expect(saved[0]!.message).toMatch(/^snapshot\.pt adopted as generation 1 \(step\/epoch ~4, saved .*\): 15 B/);
    expect(saved[0]!.data).toMatchObject({ adopted: true, generation: 1, attempt: 1, step: 4 });
    expect(typeof saved[0]!.data.saveMs).toBe("number");
    // Unchanged: never adopted again.
    await t.adoptNow();
    expect(t.manifest().generations).toHaveLength(1);
  });

  it("measures the save from the first change seen to the file's last write", async () => {
    const t = setup();
    writeFileSync(t.live(), "part");
    await t.adopter.look(t.job, t.attempt); // the write starts: first seen now
    const started = t.clock.now();
    t.clock.advance(800);
    writeFileSync(t.live(), "part and the rest");
    const end = started + 800;
    utimesSync(t.live(), new Date(end), new Date(end));
    await t.adoptNow();
    const saved = t.events.find((e) => e.kind === "checkpoint.saved")!;
    expect(saved.data.saveMs).toBeCloseTo(800, -1);
    expect(saved.data.t).toBeCloseTo(end, -1);
  });

  it("records the step the job had reported before the file's last write, not the next one", async () => {
    const t = setup();
    writeFileSync(t.live(), "epoch 6 weights");
    const mtime = statSync(t.live()).mtimeMs;
    // Epoch 6 began before the save; epoch 7 was printed right after it returned.
    t.step.samples = [
      { step: 5, t: mtime - 2000 },
      { step: 6, t: mtime - 1000 },
      { step: 7, t: mtime - 1 }, // printed as the save returned: the same millisecond, give or take
    ];
    await t.adoptNow();
    expect(t.manifest().generations[0]!.step).toBe(6);
  });

  it("records the step the attempt resumed from when the script saves before it reports", async () => {
    const t = setup();
    t.step.value = null;
    writeFileSync(t.live(), "weights as loaded");
    await t.adoptNow(t.adopter, t.job, { n: 2, resumeStep: 12 } as AttemptRecord);
    expect(t.manifest().generations[0]!.step).toBe(12);
  });

  it("keeps the newest `keep` generations, deleting the older copies", async () => {
    const t = setup({ keep: 2 });
    for (let i = 1; i <= 4; i++) {
      t.step.value = i * 10;
      writeFileSync(t.live(), `weights of epoch ${i}`);
      utimesSync(t.live(), new Date(t.clock.now()), new Date(t.clock.now()));
      await t.adoptNow();
    }
    const m = t.manifest();
    expect(m.generations.map((g) => [g.generation, g.step])).toEqual([
      [3, 30],
      [4, 40],
    ]);
    const stored = readdirSync(adoptedDir(t.job.spec, t.job.id)).sort();
    expect(stored).toEqual(["gen-000003.ckpt", "gen-000004.ckpt", "manifest.json"]);
    expect(t.events.at(-1)!.message).toContain("dropped generation 2");
  });

  it("hard-links a generation only when the script replaces its file; copies an in-place writer's", async () => {
    const { renameSync } = await import("node:fs");
    const t = setup({ keep: 5 });
    const dir = adoptedDir(t.job.spec, t.job.id);
    const storedOf = (g: number) => path.join(dir, t.manifest().generations.find((x) => x.generation === g)!.stored);
    // A writer that saves to a temp file and renames it over the old one: a new inode per save.
    const saveByRename = (text: string) => {
      writeFileSync(t.live("snapshot.pt.tmp"), text);
      renameSync(t.live("snapshot.pt.tmp"), t.live());
    };
    saveByRename("save 1");
    await t.adoptNow();
    expect(statSync(storedOf(1)).ino).not.toBe(statSync(t.live()).ino); // the first save: nothing seen yet, a copy
    saveByRename("save 2, longer");
    await t.adoptNow();
    expect(statSync(storedOf(2)).ino).toBe(statSync(t.live()).ino);
    expect(t.manifest().generations.at(-1)).toMatchObject({ generation: 2, linked: true });
    expect(t.events.at(-1)!.message).toContain("kept as a hard link");
    saveByRename("save 3, longer still");
    await t.adoptNow();
    // The earlier link kept its bytes: the rename gave the live name a new inode.
    expect(readFileSync(storedOf(2), "utf8")).toBe("save 2, longer");
    expect(sha(readFileSync(storedOf(2)))).toBe(t.manifest().generations[1]!.sha256);

    // torch.save(obj, path) rewrites in place: same inode, so every generation is a copy.
    writeFileSync(t.live(), "in place 4");
    await t.adoptNow();
    expect(statSync(storedOf(4)).ino).not.toBe(statSync(t.live()).ino);
    writeFileSync(t.live(), "in place 5, longer");
    await t.adoptNow();
    expect(readFileSync(storedOf(4), "utf8")).toBe("in place 4");
    expect(
      t
        .manifest()
        .generations.filter((g) => g.linked)
        .map((g) => g.generation),
    ).toEqual([2, 3]);
  });

  it("refuses a zip without its end record (torch.save cut short) until it changes", async () => {
    const t = setup();
    writeFileSync(t.live(), Buffer.concat([Buffer.from([0x50, 0x4b, 0x03, 0x04]), Buffer.alloc(100, 7)]));
    await t.adoptNow();
    expect(existsSync(path.join(adoptedDir(t.job.spec, t.job.id), "manifest.json"))).toBe(false);
    expect(t.events.map((e) => e.kind)).toEqual(["checkpoint.invalid"]);
    expect(t.events[0]!.message).toMatch(/zip without its end record/);
    await t.adoptNow();
    expect(t.events).toHaveLength(1); // said once, not copied again
    // A complete zip (end of central directory record at the end) is adopted.
    const eocd = Buffer.alloc(22);
    eocd.writeUInt32LE(0x06054b50, 0);
    writeFileSync(t.live(), Buffer.concat([Buffer.from([0x50, 0x4b, 0x03, 0x04]), Buffer.alloc(100, 7), eocd]));
    await t.adoptNow();
    expect(t.manifest().generations).toHaveLength(1);
  });

  it("hashes a big file in chunks: the event loop runs between them", async () => {
    const t = setup();
    writeFileSync(t.live(), Buffer.alloc(24 << 20, 1));
    await t.adopter.look(t.job, t.attempt);
    t.clock.advance(2100);
    let turns = 0;
    let done = false;
    const spin = (): void => {
      turns++;
      if (!done) setImmediate(spin);
    };
    setImmediate(spin);
    await t.adopter.look(t.job, t.attempt);
    await t.adopter.settled(t.job.id);
    done = true;
    expect(t.manifest().generations).toHaveLength(1);
    expect(turns).toBeGreaterThan(5); // at least one turn per 1 MB chunk read or written, give or take
  });

  it("a restarted server reads the manifest back, adopts nothing twice and removes half-written copies", async () => {
    const t = setup();
    writeFileSync(t.live(), "v1");
    await t.adoptNow();
    const dir = adoptedDir(t.job.spec, t.job.id);
    writeFileSync(path.join(dir, ".tmp-gen-1-abc"), "half a copy");
    writeFileSync(path.join(dir, "gen-000009.ckpt"), "a copy the manifest never named");
    const again = new Adopter(t.ctx);
    await t.adoptNow(again);
    expect(t.manifest().generations.map((g) => g.generation)).toEqual([1]);
    expect(readdirSync(dir).sort()).toEqual(["gen-000001.ckpt", "manifest.json"]);
    expect(t.events.filter((e) => e.kind === "checkpoint.saved")).toHaveLength(1);
  });

  it("lists matches of a glob without following symlinks, bounded", async () => {
    const t = setup({ pattern: "ckpt/*.pt" });
    mkdirSync(path.join(t.workdir, "ckpt"));
    writeFileSync(path.join(t.workdir, "ckpt", "e1.pt"), "1");
    writeFileSync(path.join(t.workdir, "ckpt", "e2.pt"), "2");
    writeFileSync(path.join(t.workdir, "ckpt", "e2.pt.switchyard-prev-x"), "set aside");
    writeFileSync(path.join(t.workdir, "ckpt", "notes.txt"), "no");
    const { symlinkSync } = await import("node:fs");
    symlinkSync("/etc/passwd", path.join(t.workdir, "ckpt", "link.pt"));
    const { files, truncated } = await listLive(t.workdir, compilePattern("ckpt/*.pt"));
    expect(files.map((f) => f.path)).toEqual(["ckpt/e1.pt", "ckpt/e2.pt"]);
    expect(truncated).toBe(false);
    for (let i = 0; i < 70; i++) writeFileSync(path.join(t.workdir, "ckpt", `m${i}.pt`), "x");
    const many = await listLive(t.workdir, compilePattern("ckpt/*.pt"));
    expect(many.files).toHaveLength(64);
    expect(many.truncated).toBe(true);
  });
});

describe("before a restart", () => {
  async function threeGenerations(t: ReturnType<typeof setup>) {
    for (let i = 1; i <= 3; i++) {
      t.step.value = i * 5;
      writeFileSync(t.live(), `weights after epoch ${i * 5}`);
      utimesSync(t.live(), new Date(t.clock.now()), new Date(t.clock.now()));
      await t.adoptNow();
    }
  }

  it("verifies an intact live file and says what the script will load", async () => {
    const t = setup();
    await threeGenerations(t);
    const launch = await t.adopter.prepareLaunch(t.job, 2);
    expect(launch.summary).toMatch(
      /^the script will load snapshot\.pt \(generation 3 \(step\/epoch ~15, saved .*\), verified\)$/,
    );
    expect(launch.resumeFrom).toBe(t.live());
    expect(launch.resumeStep).toBe(15);
    expect(t.events.filter((e) => e.kind === "checkpoint.restored")).toEqual([]);
  });

  it("restores the newest generation over a corrupted live file (sha mismatch, same size and mtime)", async () => {
    const t = setup();
    await threeGenerations(t);
    // chaos corrupt-checkpoint flips a byte of the live file, keeping its mtime (bit rot).
    const before = statSync(t.live()).mtimeMs;
    const chaos = await injectChaos(
      "corrupt-checkpoint",
      {
        ranks: [],
        attemptDir: null,
        checkpointDir: t.job.spec.checkpoint.dir,
        adoptedFile: () => newestAdoptedFile(t.job.spec, t.job.id),
        signalRank: () => false,
      },
      undefined,
    );
    expect(chaos.path).toBe(t.live());
    expect(statSync(t.live()).mtimeMs).toBe(before);
    expect(readFileSync(t.live(), "utf8")).not.toBe("weights after epoch 15");
    // The watcher sees no change (size and mtime held): the corruption is not adopted as a generation.
    await t.adoptNow();
    expect(t.manifest().generations.map((g) => g.generation)).toEqual([1, 2, 3]);

    const launch = await t.adopter.prepareLaunch(t.job, 2);
    expect(readFileSync(t.live(), "utf8")).toBe("weights after epoch 15");
    const restored = t.events.find((e) => e.kind === "checkpoint.restored")!;
    expect(restored.message).toMatch(
      /^snapshot\.pt failed verification \(sha mismatch\); restored generation 3 \(step\/epoch ~15, saved .*\)$/,
    );
    expect(launch.summary).toMatch(/snapshot\.pt \(generation 3 .*, restored\)/);
    // The restored file is generation 3 again: not adopted as a new one.
    await t.adoptNow();
    expect(t.manifest().generations.map((g) => g.generation)).toEqual([1, 2, 3]);
  });

  it("restores over a torn write (truncated, never settled), and skips a stored copy that rotted", async () => {
    const t = setup();
    await threeGenerations(t);
    const m = t.manifest();
    const dir = adoptedDir(t.job.spec, t.job.id);
    writeFileSync(path.join(dir, m.generations[2]!.stored), "rotten copy of epoch 15");
    truncateSync(t.live(), 5);
    await t.adopter.prepareLaunch(t.job, 2);
    expect(readFileSync(t.live(), "utf8")).toBe("weights after epoch 10");
    const kinds = t.events.filter((e) => e.kind !== "checkpoint.saved");
    expect(kinds.map((e) => e.kind)).toEqual(["checkpoint.skipped", "checkpoint.restored"]);
    expect(kinds[0]!.message).toMatch(/skipping snapshot\.pt's generation 3 .*: its stored copy sha mismatch/);
    expect(kinds[1]!.message).toMatch(
      /^snapshot\.pt failed verification \(changed after generation 3 was adopted and never settled: 5 B, generation 3 has 22 B; torn write\?\); restored generation 2 \(step\/epoch ~10/,
    );
  });

  it("adopts a complete torch zip saved just before the crash (not settled yet) instead of rolling back past it", async () => {
    const t = setup();
    await threeGenerations(t);
    const eocd = Buffer.alloc(22);
    eocd.writeUInt32LE(0x06054b50, 0);
    const save = Buffer.concat([Buffer.from([0x50, 0x4b, 0x03, 0x04]), Buffer.alloc(64, 9), eocd]);
    t.step.value = 20;
    writeFileSync(t.live(), save); // the save of epoch 20 returned; the rank was killed before it settled
    const launch = await t.adopter.prepareLaunch(t.job, 2);
    expect(readFileSync(t.live())).toEqual(save);
    expect(t.manifest().generations.map((g) => g.generation)).toEqual([2, 3, 4]);
    const late = t.events.find((e) => e.kind === "checkpoint.adopted-late")!;
    expect(late.message).toMatch(
      /^snapshot\.pt was saved .* complete torch zip .* adopted as generation 4 rather than rolled back$/,
    );
    expect(launch.summary).toMatch(/generation 4 \(step\/epoch ~20, .*verified/);
    expect(t.events.some((e) => e.kind === "checkpoint.restored")).toBe(false);
  });

  it("brings back a missing one-file checkpoint; sets aside a file never adopted", async () => {
    const t = setup({ pattern: "ckpt/*.pt" });
    mkdirSync(path.join(t.workdir, "ckpt"));
    writeFileSync(t.live("ckpt/e5.pt"), "epoch 5");
    await t.adoptNow();
    writeFileSync(t.live("ckpt/e10.pt"), "epoch 10, torn"); // killed during the save: never settled
    await t.adopter.look(t.job, t.attempt);
    const launch = await t.adopter.prepareLaunch(t.job, 2);
    expect(existsSync(t.live("ckpt/e10.pt"))).toBe(false);
    expect(readFileSync(t.live("ckpt/e10.pt.switchyard-torn-train-aaaaaa"), "utf8")).toBe("epoch 10, torn");
    expect(t.events.find((e) => e.kind === "checkpoint.set-aside")!.message).toMatch(
      /^ckpt\/e10\.pt was written but never settled .*; moved aside to ckpt\/e10\.pt\.switchyard-torn-train-aaaaaa$/,
    );
    expect(launch.summary).toMatch(/ckpt\/e5\.pt \(generation 1/);
  });
});

describe("restoring safely", () => {
  it("never writes through a folder that became a symlink; recreates a missing folder", async () => {
    const t = setup({ pattern: "ckpt/snap.pt" });
    mkdirSync(path.join(t.workdir, "ckpt"));
    writeFileSync(t.live("ckpt/snap.pt"), "weights");
    await t.adoptNow();
    const { renameSync, rmSync, symlinkSync } = await import("node:fs");
    const elsewhere = mkdtempSync(path.join(os.tmpdir(), "sy-adopt-elsewhere-"));
    renameSync(path.join(t.workdir, "ckpt"), path.join(t.workdir, "ckpt-moved"));
    symlinkSync(elsewhere, path.join(t.workdir, "ckpt"));
    await t.adopter.prepareLaunch(t.job, 2);
    expect(readdirSync(elsewhere)).toEqual([]);
    expect(t.events.at(-1)!.message).toBe(
      "not restoring ckpt/snap.pt: folder ckpt is a symlink (switchyard writes only under real folders)",
    );
    rmSync(path.join(t.workdir, "ckpt"));
    await t.adopter.prepareLaunch(t.job, 3);
    expect(readFileSync(t.live("ckpt/snap.pt"), "utf8")).toBe("weights");
    expect(t.events.at(-1)!.message).toMatch(/^ckpt\/snap\.pt is missing; restored generation 1/);
  });
});

describe("a new run", () => {
  it("sets aside a file an earlier run left in the workdir, and starts fresh", async () => {
    const first = setup({ jobId: "train-111111" });
    writeFileSync(first.live(), "run 1's weights");
    await first.adoptNow();
    const second = first.jobFor("train-222222");
    const launch = await first.adopter.prepareLaunch(second, 1);
    expect(launch).toEqual({ summary: null, resumeFrom: null, resumeStep: null });
    expect(existsSync(first.live())).toBe(false);
    expect(readFileSync(first.live("snapshot.pt.switchyard-prev-train-222222"), "utf8")).toBe("run 1's weights");
    const aside = first.events.find((e) => e.kind === "checkpoint.set-aside" && e.jobId === "train-222222")!;
    expect(aside.message).toMatch(/is none of its checkpoints: the run starts fresh .*--resume-from/);
  });

  it("says when another live run watches the same file in the same workdir", async () => {
    const t = setup({ jobId: "train-111111" });
    t.active.push(t.job);
    const second = t.jobFor("train-222222");
    t.active.push(second);
    await t.adopter.prepareLaunch(second, 1);
    const said = t.events.find((e) => e.kind === "checkpoint.shared-workdir")!;
    expect(said.jobId).toBe("train-222222");
    expect(said.message).toMatch(/^run train-111111 \(RUNNING\) also watches snapshot\.pt in .*: both scripts write/);
  });

  it("takes over the run --resume-from names: its newest verified generation, as this run's own", async () => {
    const t = setup({ jobId: "train-111111" });
    t.step.value = 8;
    writeFileSync(t.live(), "run 1's weights");
    await t.adoptNow();
    writeFileSync(t.live(), "run 1's torn write"); // the first run died while saving
    const second = t.jobFor("train-222222", t.job.spec.checkpoint.dir);
    const launch = await t.adopter.prepareLaunch(second, 1);
    expect(readFileSync(t.live(), "utf8")).toBe("run 1's weights");
    // The file that was there is kept beside, not overwritten.
    expect(readFileSync(t.live("snapshot.pt.switchyard-prev-train-222222"), "utf8")).toBe("run 1's torn write");
    expect(t.events.find((e) => e.kind === "checkpoint.restored")!.message).toMatch(
      /^snapshot\.pt was set aside; restored run train-111111's \(--resume-from\) generation 1 \(step\/epoch ~8/,
    );
    expect(launch.summary).toMatch(/snapshot\.pt \(run train-111111's generation 1 \(step\/epoch ~8/);
    expect(launch.resumeStep).toBe(8);
    const own = t.manifest(second);
    expect(own.generations).toHaveLength(1);
    expect(own.generations[0]).toMatchObject({ generation: 1, from: { jobId: "train-111111", generation: 1 } });
    expect(t.events.find((e) => e.kind === "checkpoint.foreign")!.message).toMatch(/--resume-from/);
    // A restart of the second run verifies against its own manifest.
    writeFileSync(t.live(), "garbage!!!!!!!!"); // same size as the weights
    await t.adopter.prepareLaunch(second, 2);
    expect(readFileSync(t.live(), "utf8")).toBe("run 1's weights");
  });
});

describe("run --resume-from names a run whose script saved its own checkpoints", () => {
  it("is taken (by job or by folder) when the run has adopted files and no step-* folder", async () => {
    const { resolveResumeFrom } = await import("../cli/commands/jobs.js");
    const t = setup({ jobId: "train-111111" });
    writeFileSync(t.live(), "run 1's weights");
    await t.adoptNow();
    const dir = t.job.spec.checkpoint.dir;
    const client = {
      get: async () => ({ id: "train-111111", state: "FAILED", spec: { checkpoint: { dir } } }),
    } as unknown as import("../cli/client.js").ApiClient;
    expect(await resolveResumeFrom(client, "train")).toMatchObject({
      path: dir,
      newest: "newest there: the files its script saved (adopted)",
    });
    expect(await resolveResumeFrom(client, dir)).toMatchObject({ path: dir });
    // A run with neither is still an error that says what to pass.
    const empty = mkdtempSync(path.join(os.tmpdir(), "sy-adopt-empty-"));
    await expect(resolveResumeFrom(client, empty)).rejects.toThrow(/no step-\* checkpoint/);
  });
});
