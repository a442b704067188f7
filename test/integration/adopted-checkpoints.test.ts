import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, statSync, truncateSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/cli/client.js";
import { packageRoot } from "../../src/paths.js";
import type { EventRecord } from "../../src/store/port.js";
import { events, hasTorch, job, sleep, submit, useServer, waitFor, waitForEnd, type JobView } from "./harness.js";

/**
 * Checkpoints an unmodified script writes itself (`checkpoint.watch`), with real PyTorch: the DDP tutorial's script
 * (test/fixtures/unmodified/ddp_snapshot.py) saves `snapshot.pt` with torch.save every 4 epochs and loads it when it
 * starts. switchyard adopts each save, and before every restart verifies the live file: a corrupted or torn one is
 * never loaded, the newest verified generation is restored instead, and the events say what the script loads.
 */

const script = path.join(packageRoot, "test", "fixtures", "unmodified", "ddp_snapshot.py");
const sha = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

function spec(name: string, workdir: string, epochs: number, settleSeconds = 0.5): string {
  return [
    `name: ${name}`,
    "pools: [reliable]",
    "nodes: 1",
    "procsPerNode: 2",
    `command: ${JSON.stringify(["{python}", script, String(epochs), "4", "--batch_size", "32", "--batch_delay", "0.15", "--dataset_size", "256"])}`,
    `workdir: ${JSON.stringify(workdir)}`,
    `progress: { regex: '\\[GPU0\\] Epoch (?<step>\\d+)' }`,
    `checkpoint: { watch: snapshot.pt, keep: 3, settleSeconds: ${settleSeconds} }`,
    "recovery: { maxRestarts: 8, backoffSeconds: 0.2, strikesBeforeCordon: 100, graceSeconds: 2 }",
    "detection: { hangMinSeconds: 60 }",
  ].join("\n");
}

const adoptedSaves = (evs: EventRecord[]) => evs.filter((e) => e.kind === "checkpoint.saved" && e.data.adopted);

async function rankLog(client: ApiClient, id: string, attempt: number, rank = 0): Promise<string> {
  return (await client.get<{ text: string }>(`/api/jobs/${id}/logs?rank=${rank}&attempt=${attempt}`)).text;
}

/** Waits for a save adopted during `attempt` (after `after` of them), returns the event. */
async function nextAdoption(client: ApiClient, id: string, attempt: number, after = 0): Promise<EventRecord> {
  return waitFor(`a snapshot adopted in attempt ${attempt}`, async () => {
    const saves = adoptedSaves(await events(client, id)).filter((e) => e.data.attempt === attempt);
    return saves.length > after ? saves[saves.length - 1] : null;
  });
}

/** Waits for attempt `n` to run with its first epoch printed; returns the job. */
async function attemptRunning(client: ApiClient, id: string, n: number): Promise<JobView> {
  return waitFor(`attempt ${n} training`, async () => {
    const j = await job(client, id);
    if (["FAILED", "CANCELLED"].includes(j.state)) throw new Error(`job ended ${j.state}: ${j.reason}`);
    if (j.attempts.length < n) return null;
    return /\[GPU0\] Epoch \d+/.test(await rankLog(client, id, n).catch(() => "")) ? j : null;
  });
}

async function chaos(client: ApiClient, id: string, action: string, rank?: number): Promise<{ path?: string }> {
  return client.post(`/api/jobs/${id}/chaos`, { action, ...(rank !== undefined ? { rank } : {}) });
}

function launched(evs: EventRecord[], attempt: number): EventRecord {
  const e = evs.find((x) => x.kind === "attempt.launched" && x.data.attempt === attempt);
  if (!e) throw new Error(`no attempt.launched for attempt ${attempt}`);
  return e;
}

describe.skipIf(!hasTorch)("checkpoints an unmodified script writes itself (checkpoint.watch)", () => {
  const ctx = useServer("adopted");
  const workdir = path.join(ctx.home, "work");
  mkdirSync(workdir, { recursive: true });
  const live = path.join(workdir, "snapshot.pt");
  let firstId = "";

  it("resumes from the adopted snapshot after a kill; never loads a corrupted or torn one; survives a server kill", async () => {
    const id = await submit(ctx.client, ctx.home, "snap", spec("snap", workdir, 200));
    firstId = id;
    try {
      await firstJob(id);
    } finally {
      await ctx.client.post(`/api/jobs/${id}/cancel`, {}).catch(() => undefined);
    }
  }, 600_000);

  async function firstJob(id: string): Promise<void> {
    // 1. Killed mid-run: the next attempt loads the snapshot switchyard adopted, and the event says so.
    await attemptRunning(ctx.client, id, 1);
    const first = await nextAdoption(ctx.client, id, 1);
    expect(first.message).toMatch(/^snapshot\.pt adopted as generation 1 \(step\/epoch ~\d+, saved .*\): .*sha256/);
    await chaos(ctx.client, id, "kill-rank", 1);
    await attemptRunning(ctx.client, id, 2);
    let evs = await events(ctx.client, id);
    expect(launched(evs, 2).message).toMatch(/the script will load snapshot\.pt \(generation \d+ .*verified\)/);
    expect(launched(evs, 2).message).not.toMatch(/starting fresh/);
    const log2 = await rankLog(ctx.client, id, 2);
    expect(log2).toMatch(/Resuming training from snapshot at Epoch \d+/);

    // 2. corrupt-checkpoint flips a byte of the live snapshot (rank 0, the saver, is stopped first so that no new
    //    save replaces it): the next attempt must not load it; the newest verified generation is restored.
    await nextAdoption(ctx.client, id, 2);
    await chaos(ctx.client, id, "hang-rank", 0);
    const corrupted = await chaos(ctx.client, id, "corrupt-checkpoint");
    expect(corrupted.path).toBe(live);
    await chaos(ctx.client, id, "kill-rank", 0);
    await attemptRunning(ctx.client, id, 3);
    evs = await events(ctx.client, id);
    const restored = evs.filter((e) => e.kind === "checkpoint.restored");
    expect(restored).toHaveLength(1);
    expect(restored[0]!.message).toMatch(
      /^snapshot\.pt failed verification \(sha mismatch\); restored generation \d+ \(step\/epoch ~\d+, saved .*\)$/,
    );
    expect(launched(evs, 3).message).toMatch(/snapshot\.pt \(generation \d+ .*restored\)/);
    const log3 = await rankLog(ctx.client, id, 3);
    expect(log3).toMatch(/Resuming training from snapshot at Epoch \d+/);
    expect(log3).not.toMatch(/Traceback|Error/);

    // 3. A torn write (the saver killed during torch.save: the file cut short) is never loaded either.
    await nextAdoption(ctx.client, id, 3);
    await chaos(ctx.client, id, "hang-rank", 0);
    truncateSync(live, Math.floor(statSync(live).size / 2));
    await chaos(ctx.client, id, "kill-rank", 0);
    await attemptRunning(ctx.client, id, 4);
    evs = await events(ctx.client, id);
    const torn = evs.filter((e) => e.kind === "checkpoint.restored")[1];
    expect(torn?.message).toMatch(
      /^snapshot\.pt failed verification \(changed after generation \d+ was adopted and never settled: .*; torn write\?\); restored generation \d+/,
    );
    const log4 = await rankLog(ctx.client, id, 4);
    expect(log4).toMatch(/Resuming training from snapshot at Epoch \d+/);
    expect(log4).not.toMatch(/Traceback|Error/);

    // 4. The control plane is SIGKILLed while the run goes on and the script saves again; the restarted server
    //    adopts the saves it missed, and the generations on disk are right.
    await nextAdoption(ctx.client, id, 4);
    const before = statSync(live).mtimeMs;
    ctx.server.kill9();
    await waitFor("a save while the server is down", async () => statSync(live).mtimeMs > before, 60_000);
    await sleep(500);
    ctx.client = await ctx.server.start();
    const adoptedBefore = adoptedSaves(await events(ctx.client, id)).length;
    await waitFor("a save adopted by the restarted server", async () => {
      return adoptedSaves(await events(ctx.client, id)).length > adoptedBefore;
    });
    const detail = await ctx.client.get<{ spec: { checkpoint: { dir: string } } }>(`/api/jobs/${id}`);
    const dir = path.join(detail.spec.checkpoint.dir, "adopted");
    const manifest = JSON.parse(readFileSync(path.join(dir, "manifest.json"), "utf8")) as {
      generations: Array<{ generation: number; stored: string; size: number; sha256: string }>;
    };
    expect(manifest.generations.length).toBeGreaterThan(0);
    expect(manifest.generations.length).toBeLessThanOrEqual(3); // keep: 3
    for (const g of manifest.generations) {
      const stored = path.join(dir, g.stored);
      expect(statSync(stored).size).toBe(g.size);
      expect(sha(stored)).toBe(g.sha256);
      expect(statSync(stored).mode & 0o777).toBe(0o600);
    }
    expect(statSync(dir).mode & 0o777).toBe(0o700);

    // The interval advisor has the saves, timed from the file's writes.
    const report = await ctx.client.get<{ advice: { saveMs: number | null } }>(`/api/jobs/${id}/report`);
    expect(report.advice.saveMs).not.toBeNull();
    await ctx.client.post(`/api/jobs/${id}/cancel`, {});
    await waitForEnd(ctx.client, id);
  }

  it("a second job in the same workdir does not silently resume the first one's snapshot", async () => {
    expect(existsSync(live)).toBe(true); // left by the first job, which is over
    await waitFor("the first job's end", async () =>
      (await ctx.client.get<Array<{ state: string }>>("/api/jobs")).every((j) =>
        ["FAILED", "CANCELLED", "SUCCEEDED"].includes(j.state),
      ),
    );
    const leftover = sha(live);
    // 9 epochs: saves after epochs 0, 4 and 8 (2.4 s apart: none settles in 30 s), the last one as the script ends:
    // adopted when every rank has exited 0, without waiting for it to settle.
    const id = await submit(ctx.client, ctx.home, "snap2", spec("snap2", workdir, 9, 30));
    await attemptRunning(ctx.client, id, 1);
    const evs = await events(ctx.client, id);
    const aside = evs.find((e) => e.kind === "checkpoint.set-aside");
    expect(aside?.message).toMatch(
      new RegExp(
        `^snapshot\\.pt was in the workdir when this new run started .*moved aside to snapshot\\.pt\\.switchyard-prev-${id}$`,
      ),
    );
    expect(sha(path.join(workdir, `snapshot.pt.switchyard-prev-${id}`))).toBe(leftover);
    expect(launched(evs, 1).message).toMatch(/starting fresh/);
    const log = await rankLog(ctx.client, id, 1);
    expect(log).not.toMatch(/Loading snapshot|Resuming training/);
    expect(log).toMatch(/\[GPU0\] Epoch 0 /);
    expect((await waitForEnd(ctx.client, id)).state).toBe("SUCCEEDED");
    const second = await ctx.client.get<{ spec: { checkpoint: { dir: string } } }>(`/api/jobs/${id}`);
    const secondManifest = JSON.parse(
      readFileSync(path.join(second.spec.checkpoint.dir, "adopted", "manifest.json"), "utf8"),
    ) as { generations: Array<{ sha256: string; step: number }> };
    expect(secondManifest.generations).toHaveLength(1);
    expect(secondManifest.generations[0]!.sha256).toBe(sha(live)); // the final save is adopted

    // A third run that names the first with --resume-from continues from its newest verified generation; the second
    // run's snapshot is kept beside.
    const first = await ctx.client.get<{ spec: { checkpoint: { dir: string } } }>(`/api/jobs/${firstId}`);
    const firstManifest = JSON.parse(
      readFileSync(path.join(first.spec.checkpoint.dir, "adopted", "manifest.json"), "utf8"),
    ) as { generations: Array<{ generation: number; sha256: string }> };
    const newest = firstManifest.generations.at(-1)!;
    const yaml = spec("snap3", workdir, 200);
    const file = path.join(ctx.home, "snap3.yaml");
    const third = (
      await ctx.client.post<{ id: string }>("/api/jobs", { yaml, file, resumeFrom: first.spec.checkpoint.dir })
    ).id;
    try {
      await attemptRunning(ctx.client, third, 1);
      const evs3 = await events(ctx.client, third);
      expect(launched(evs3, 1).message).toMatch(
        new RegExp(`the script will load snapshot\\.pt \\(run ${firstId}'s generation ${newest.generation} `),
      );
      expect(evs3.find((e) => e.kind === "checkpoint.set-aside")?.message).toMatch(
        new RegExp(`^snapshot\\.pt is not run ${firstId}'s generation`),
      );
      expect(await rankLog(ctx.client, third, 1)).toMatch(/Resuming training from snapshot at Epoch \d+/);
    } finally {
      await ctx.client.post(`/api/jobs/${third}/cancel`, {}).catch(() => undefined);
    }
    await waitForEnd(ctx.client, third);
  }, 300_000);
});
