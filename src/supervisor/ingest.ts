import { randomBytes } from "node:crypto";
import { rename, rm, stat, symlink } from "node:fs/promises";
import path from "node:path";
import { linearOrNull } from "../core/linear-regex.js";
import type { AttemptRecord, JobRecord, RankCursor, RankRecord, StepSample } from "../store/port.js";
import { pruneCheckpoints, verifyCheckpoint } from "./checkpoint-scan.js";
import type { SupervisorContext } from "./context.js";
import { readRank } from "./reports.js";

/** Bytes of report files read per job and pass (split over its ranks): ingestion is bounded and fair across jobs. */
const jobReadBudget = 8 << 20;
/** Passes at most when a finished attempt's files are read to their end. */
const maxDrainPasses = 64;

export interface Ingested {
  steps: boolean;
  nan: { rank: number; step: number; t: number } | null;
}

/**
 * Reads new report lines (and log lines in regex mode) into the store; returns whether any step was seen, and the
 * first non-finite loss. Each pass reads at most `jobReadBudget` bytes per job (split over its ranks), so a flooding
 * rank cannot starve other jobs; `drain` repeats passes until the files are read to their end (a finished attempt's
 * last reports count). Checkpoints rank 0 reports are verified as they come.
 */
export async function ingest(
  ctx: SupervisorContext,
  job: JobRecord,
  attempt: AttemptRecord,
  ranks: RankRecord[],
  drain = false,
): Promise<Ingested> {
  let saw = false;
  let nan: Ingested["nan"] = null;
  // Linear-time matching: a user's regex must never stall supervision on a hostile log line.
  const regex = job.spec.progress.regex ? linearOrNull(job.spec.progress.regex) : null;
  const budgetBytes = Math.floor(jobReadBudget / Math.max(1, ranks.length));
  for (let pass = 0; pass < (drain ? maxDrainPasses : 1); pass++) {
    let pending = false;
    // One write per pass for all ranks: one commit instead of one per rank (4,096 ranks: one WAL sync, not 4,096).
    const chunks: Array<{ rank: RankRecord; cursor: RankCursor; samples: StepSample[] }> = [];
    for (const r of ranks) {
      await noteRankPid(ctx, r);
      const read = await readRank(r, {
        jobId: job.id,
        attempt: attempt.n,
        startedAt: attempt.startedAt,
        regex,
        now: () => ctx.now(),
        budgetBytes,
      });
      if (r.rank === 0) for (const c of read.checkpoints) await onCheckpointReported(ctx, job, attempt, c);
      if (read.nan && nan === null) nan = { rank: r.rank, ...read.nan };
      const before = r.badReports ?? 0;
      if (Object.keys(read.cursor).length > 0) chunks.push({ rank: r, cursor: read.cursor, samples: read.samples });
      if (before === 0 && read.bad > 0) {
        await ctx.event(
          job.id,
          "report.malformed",
          `rank ${r.rank}: skipped ${read.bad} report line(s) that are not valid reports (first: ${read.firstBad}); ` +
            "later ones are only counted (see the rank's badReports)",
          { rank: r.rank, attempt: attempt.n, count: read.bad, first: read.firstBad },
        );
      }
      saw ||= read.samples.length > 0;
      pending ||= read.pending;
    }
    await ctx.store.ingestReportsBatch(
      job.id,
      attempt.n,
      chunks.map((c) => ({ rank: c.rank.rank, cursor: c.cursor, samples: c.samples })),
    );
    for (const c of chunks) Object.assign(c.rank, c.cursor);
    if (!pending) break;
  }
  return { steps: saw, nan };
}

/** Records the rank process's own pid (the wrapper's child) once the executor can tell it. */
async function noteRankPid(ctx: SupervisorContext, r: RankRecord): Promise<void> {
  if (r.rankPid != null || r.exitedAt !== null || !ctx.executor.rankPid) return;
  const pid = ctx.executor.rankPid(r);
  if (pid === null) return;
  r.rankPid = pid;
  await ctx.store.upsertRank(r);
}

/** A checkpoint a rank reported: verified now, recorded (saved or invalid), and older ones pruned beyond `keep`. */
async function onCheckpointReported(
  ctx: SupervisorContext,
  job: JobRecord,
  attempt: AttemptRecord,
  report: { step: number; path: string; t: number; saveS: number | null },
): Promise<void> {
  const { step, path: dir } = report;
  const protect = attempt.resumeFrom;
  const verification = await verifyCheckpoint(dir, step);
  if (!verification.ok) {
    // A report read a second time (a restarted server re-reads what it had not yet marked as read) may name a
    // checkpoint that was verified then and pruned since, behind newer verified ones: nothing to say about it.
    const known = await ctx.store.listCheckpoints(job.id);
    const pruned = known.some((c) => c.verified && c.step > step) && !(await exists(dir));
    if (pruned) return;
  }
  await ctx.store.upsertCheckpoint({
    jobId: job.id,
    step,
    path: dir,
    verified: verification.ok,
    reason: verification.ok ? null : verification.reason,
    seenAt: ctx.now(),
  });
  await ctx.event(
    job.id,
    verification.ok ? "checkpoint.saved" : "checkpoint.invalid",
    verification.ok
      ? `checkpoint at step ${step} verified`
      : `checkpoint at step ${step} does not verify: ${verification.reason}`,
    { step, path: dir, attempt: attempt.n, t: report.t, saveMs: (report.saveS ?? 0) * 1000 },
  );
  if (verification.ok && job.spec.checkpoint.perRun) await pointLatestAt(job.spec.checkpoint.dir);
  if (verification.ok) {
    for (const removed of await pruneCheckpoints(job.spec.checkpoint.dir, job.spec.checkpoint.keep, protect)) {
      const m = /step-(\d+)$/.exec(removed);
      if (m) await ctx.store.deleteCheckpoint(job.id, Number(m[1]));
    }
  }
}

/**
 * `checkpoints/<name>/latest` points at the run (`<job id>` folder) that verified a checkpoint last: what `serve` and
 * people load "the newest trained weights of <name>" from. Replaced atomically (a new link renamed over the old).
 */
export async function pointLatestAt(runDir: string): Promise<void> {
  const link = path.join(path.dirname(runDir), "latest");
  const tmp = `${link}.tmp-${process.pid}-${randomBytes(3).toString("hex")}`;
  try {
    await symlink(path.basename(runDir), tmp);
    await rename(tmp, link);
  } catch {
    await rm(tmp, { force: true }).catch(() => undefined);
  }
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}
