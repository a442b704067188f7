import { JobState } from "../core/states.js";
import type { RankStatus } from "../executors/port.js";
import type { AttemptRecord, JobRecord, RankRecord } from "../store/port.js";
import type { JobRuntime, SupervisorContext } from "./context.js";
import { crashed, exitFields, judgeCrash, toRankExits } from "./detectors/crash.js";
import { hangWithStacks, judgeHangVerdict } from "./detectors/hang.js";
import { judgeNan } from "./detectors/nan.js";
import { judgeSlowdownVerdict, slowdownLookMs, slowdownSampleLimit } from "./detectors/slowdown.js";
import { ingest } from "./ingest.js";
import type { PoolFaults } from "./pool-faults.js";
import { tailLines, unreadActivity } from "./reports.js";
import type { Verdict } from "./verdict.js";

/**
 * One look at a running attempt (TorchElastic's monitor step): read what the ranks reported, poll them, record their
 * exits, and ask the detectors in order (crash, success, NaN, hang, slowdown) for a verdict. The watch records what it sees
 * (reports, exits) but decides nothing: the loop acts on the verdict.
 */
export async function watchAttempt(
  ctx: SupervisorContext,
  job: JobRecord,
  attempt: AttemptRecord,
  rt: JobRuntime,
  faults: PoolFaults,
): Promise<Verdict> {
  if (rt.hangDump && rt.hangDump.attempt === attempt.n) {
    // Hung ranks are writing their stacks: nothing else is judged until the dump deadline, then the hang is recorded.
    if (ctx.now() < rt.hangDump.deadline) return { kind: "waiting-for-stacks" };
    return { kind: "failed", facts: hangWithStacks(rt.hangDump, await tailLines(rt.hangDump.logPath, 80)) };
  }
  const ranks = await ctx.store.listRanks(job.id, attempt.n);
  const seen = await ingest(ctx, job, attempt, ranks);
  if (seen.steps && job.state === JobState.Starting) await ctx.setJobState(job, JobState.Running, null);

  const statuses = await ctx.executor.poll(attempt.dir, ranks);
  await recordExits(ctx, ranks, statuses);
  const exits = toRankExits(ranks, statuses);
  if (job.state === JobState.Running) await faults.inject(job, attempt, ranks);
  if (crashed(exits)) {
    await ingest(ctx, job, attempt, ranks, true); // the last reports before the crash count
    const detectedAt = ctx.now();
    const progress = await ctx.store.rankProgress(job.id, attempt.n);
    const facts = await judgeCrash({
      ranks,
      statuses,
      detectedAt,
      lastStepOf: (rank) => progress.find((p) => p.rank === rank)?.lastStep ?? null,
      resumeStep: attempt.resumeStep,
      causePatterns: ctx.cluster.causePatterns ?? [],
      tail: (r) => tailLines(r.logPath, 40),
      repoll: () => ctx.executor.poll(attempt.dir, ranks),
    });
    return { kind: "failed", facts };
  }
  if (exits.length === ranks.length && ranks.length > 0) {
    await ingest(ctx, job, attempt, ranks, true);
    return { kind: "succeeded" };
  }
  const nan = judgeNan(seen.nan, ranks, job.spec.detection.nanIsFailure, ctx.now());
  if (nan) return { kind: "failed", facts: nan };
  const hung = judgeHangVerdict({
    now: ctx.now(),
    attempt,
    ranks,
    detection: job.spec.detection,
    progress: await ctx.store.rankProgress(job.id, attempt.n),
    recent: await ctx.store.recentSteps(job.id, attempt.n, 0, 50),
    unread: new Map(
      await Promise.all(
        ranks.map(async (r) => [r.rank, await unreadActivity(r, job.spec.progress.regex !== null)] as const),
      ),
    ),
    processState: (r) => ctx.executor.processState(r),
  });
  if (hung) return hung;
  // The slowdown detector reads thousands of samples: it looks about once a second, not every tick.
  if (job.state !== JobState.Running) return { kind: "healthy" };
  const lookedAt = slowdownLooks.get(rt);
  if (lookedAt !== undefined && lookedAt.attempt === attempt.n && ctx.now() - lookedAt.t < slowdownLookMs) {
    return { kind: "healthy" };
  }
  slowdownLooks.set(rt, { attempt: attempt.n, t: ctx.now() });
  const pace = judgeSlowdownVerdict({
    now: ctx.now(),
    detection: job.spec.detection,
    samples: await ctx.store.recentSteps(job.id, attempt.n, 0, slowdownSampleLimit),
    checkpointSteps: (await ctx.store.listCheckpoints(job.id)).map((c) => c.step),
  });
  return pace.slow ? { kind: "slow", pace } : { kind: "healthy", pace };
}

/** When the slowdown detector last looked at a job's attempt (kept beside the runtime, lost with it). */
const slowdownLooks = new WeakMap<JobRuntime, { attempt: number; t: number }>();

/** Records the exits the executor reports (once per rank: the first observed exit stays). */
async function recordExits(ctx: SupervisorContext, ranks: RankRecord[], statuses: RankStatus[]): Promise<void> {
  for (const s of statuses) {
    const r = ranks.find((x) => x.rank === s.rank);
    if (!r || r.exitedAt !== null || s.state === "running") continue;
    const updated: RankRecord = { ...r, ...exitFields(s), exitedAt: s.at };
    await ctx.store.upsertRank(updated);
    Object.assign(r, updated);
  }
}
