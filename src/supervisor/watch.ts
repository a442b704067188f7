import { stat } from "node:fs/promises";
import { JobState } from "../core/states.js";
import type { RankStatus } from "../executors/port.js";
import type { AttemptRecord, JobRecord, RankRecord } from "../store/port.js";
import type { JobRuntime, SupervisorContext } from "./context.js";
import { crashed, exitFields, judgeCrash, toRankExits } from "./detectors/crash.js";
import { hangWithStacks, judgeHangVerdict } from "./detectors/hang.js";
import { judgeNan } from "./detectors/nan.js";
import { judgeSlowdownVerdict, slowdownLookMs, slowdownSampleLimit } from "./detectors/slowdown.js";
import { suggestProgressRegex } from "../core/progress-suggest.js";
import { ActivityWatch, cpuTellsLongSteps, gangBusy } from "./activity.js";
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
  const progress = await ctx.store.rankProgress(job.id, attempt.n);
  const unread = new Map(
    await Promise.all(
      ranks.map(async (r) => [r.rank, await unreadActivity(r, job.spec.progress.regex !== null)] as const),
    ),
  );
  // No progress source matched in this attempt (no step reported, no line matched): any output (and CPU activity on a
  // CPU pool) is the gang's progress (activity.ts), and describe says so with a suggested progress.regex.
  const pool = ctx.pool(attempt.pool);
  const fallback =
    progress.length === 0 && !(await hasProgressSource(ctx, job, ranks))
      ? await activity.look(job.id, attempt, ranks, ctx.now(), pool)
      : null;
  if (fallback) {
    for (const [rank, t] of fallback.lastActiveAt) {
      const u = unread.get(rank) ?? null;
      unread.set(rank, u === null ? t : t === null ? u : Math.max(u, t));
    }
    await noteProgressFallback(ctx, job, attempt, ranks, fallback.cpuCounts);
  }
  // Silent on its progress source for half the floor: the gang's CPU is sampled, and a gang whose every rank is busy
  // is in a long step (an eval never seen before), not hung (core/hang.ts busyStepTimeoutMs).
  const lastProgressAt = Math.max(
    attempt.startedAt,
    ...progress.map((p) => p.lastT),
    ...[...unread.values()].filter((t): t is number => t !== null),
  );
  const busy =
    !fallback &&
    cpuTellsLongSteps(pool) &&
    progress.length > 0 &&
    ctx.now() - lastProgressAt >= (job.spec.detection.hangMinSeconds * 1000) / 2 &&
    gangBusy(await busyWatch.look(job.id, attempt, ranks, ctx.now(), pool), ctx.now());
  const hung = judgeHangVerdict({
    now: ctx.now(),
    attempt,
    ranks,
    detection: job.spec.detection,
    progress,
    recent: await ctx.store.recentSteps(job.id, attempt.n, 0, 50),
    unread,
    processState: (r) => ctx.executor.processState(r),
    ...(fallback
      ? {
          fallback: {
            gapsMs: fallback.gapsMs,
            active: [...fallback.lastActiveAt.values()].some((t) => t !== null),
            cpu: fallback.cpuCounts,
          },
        }
      : {}),
    ...(busy ? { busy } : {}),
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

/**
 * Whether the job has a progress source that works, so that a silent start is judged by the startup timeout as
 * before: a rank of this attempt wrote to its report file (the SDK writes a start report at import), or an earlier
 * attempt reported steps (its regex or its SDK matched).
 */
async function hasProgressSource(ctx: SupervisorContext, job: JobRecord, ranks: RankRecord[]): Promise<boolean> {
  if (ranks.some((r) => r.reportOffset > 0)) return true;
  for (const r of ranks) {
    const st = await stat(r.reportPath).catch(() => null);
    if (st && st.size > 0) return true;
  }
  return (await ctx.store.lastStep(job.id)) !== null;
}

/** Output (and CPU activity on CPU pools) of jobs whose progress source matched nothing (see activity.ts). */
const activity = new ActivityWatch();
/** CPU of gangs silent on their progress source for a while: busy is a long step, not a hang. */
const busyWatch = new ActivityWatch();
/** Attempts whose fallback was said (job id -> attempt number): one progress.fallback event per attempt. */
const fallbackNoted = new Map<string, number>();

/**
 * Once per attempt, after min(startupSeconds, 30 s) without a matched step: the progress.fallback event, with a
 * progress.regex suggested from rank 0's recent lines (core/progress-suggest.ts).
 */
async function noteProgressFallback(
  ctx: SupervisorContext,
  job: JobRecord,
  attempt: AttemptRecord,
  ranks: RankRecord[],
  cpuCounts: boolean,
): Promise<void> {
  const ageS = (ctx.now() - attempt.startedAt) / 1000;
  if (fallbackNoted.get(job.id) === attempt.n || ageS < Math.min(job.spec.detection.startupSeconds, 30)) return;
  if (fallbackNoted.size > 10_000) fallbackNoted.clear();
  fallbackNoted.set(job.id, attempt.n);
  const rank0 = ranks.find((r) => r.rank === 0) ?? ranks[0];
  const suggestion = rank0 ? suggestProgressRegex(await tailLines(rank0.logPath, 200)) : null;
  const watched = cpuCounts ? "output and CPU" : "output (not CPU: an accelerator pool)";
  const why = job.spec.progress.regex ? "progress.regex matched no line" : "no SDK step report and no progress.regex";
  const advice = suggestion
    ? `suggest progress.regex: '${suggestion.regex}' (from lines like ${JSON.stringify(suggestion.example.slice(0, 120))})`
    : "no counter seen in its output yet to suggest a progress.regex from";
  await ctx.event(
    job.id,
    "progress.fallback",
    `progress: none matched after ${Math.round(ageS)}s (${why}); watching ${watched} for hangs — ${advice}`,
    { attempt: attempt.n, regex: suggestion?.regex ?? null, example: suggestion?.example ?? null, watched },
  );
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
