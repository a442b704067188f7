/**
 * Hang detection from progress alone: no code change in the training script is needed, only step reports (SDK) or
 * log lines (regex). The timeout follows the job's own pace: a multiple of a high percentile of recent step times,
 * never below a floor; before the first step a separate startup timeout applies (imports, data loading, compile).
 */

export interface HangPolicy {
  /** Allowed time from launch to the first step. */
  startupSeconds: number;
  /** The timeout never goes below this. */
  minSeconds: number;
  /** Timeout = multiple x the percentile step time. */
  multiple: number;
  percentile: number;
}

export const defaultHangPolicy: HangPolicy = { startupSeconds: 300, minSeconds: 10, multiple: 3, percentile: 0.95 };

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[index]!;
}

/**
 * A periodic long step (an eval, a save) rarer than the percentile drops out of it: the timeout also covers this many
 * times the longest step the job has made (in this attempt's window or any earlier one). Without it, eval steps every
 * 25 steps were taken for hangs 4 times in 30 minutes of a healthy run under load (bench/gray's soak).
 */
export const longestStepFactor = 2;

/**
 * The silence (ms) after which a running gang counts as hung, given its recent step intervals (ms) and the longest
 * step the job has been seen to make (ms; 0 when none is known beyond the recent intervals).
 */
export function hangTimeoutMs(policy: HangPolicy, stepIntervalsMs: readonly number[], longestSeenMs = 0): number {
  if (stepIntervalsMs.length === 0) return policy.startupSeconds * 1000;
  const longest = Math.max(longestSeenMs, ...stepIntervalsMs);
  return Math.max(
    policy.minSeconds * 1000,
    policy.multiple * percentile(stepIntervalsMs, policy.percentile),
    longestStepFactor * longest,
  );
}

/**
 * A long step never seen before (the job's first eval, say) has no longest step to cover it. While every rank is busy
 * on CPU, the silence is taken for such a step, up to the startup timeout (the window a job already has for the step
 * it has not made yet): the soak-wide lane's first eval (25-32 s at load 15) was otherwise a hang in every attempt,
 * which resumed before the eval and met it again. A rank stopped, blocked in a collective behind a hung peer, or
 * waiting on I/O uses next to no CPU, so those hangs keep the progress timeout; a gang whose every rank spins (a
 * busy-wait in every rank) is found at the startup timeout.
 */
export function busyStepTimeoutMs(policy: HangPolicy, timeoutMs: number): number {
  return Math.max(timeoutMs, policy.startupSeconds * 1000);
}

export interface RankProgress {
  rank: number;
  /** Last report time (ms), or null if the rank never reported in this attempt. */
  lastReportAt: number | null;
  /** Process state letter from /proc (R, S, D, T, t, Z...), when known. */
  processState: string | null;
}

export interface HangVerdict {
  hung: boolean;
  /** Milliseconds since the gang last made progress. */
  silentMs: number;
  timeoutMs: number;
}

/**
 * The gang is hung when no rank has reported for longer than the timeout (in a synchronous job one stuck rank stops
 * every peer at the next collective, so the newest report of any rank is the gang's progress).
 */
export function judgeHang(
  now: number,
  launchedAt: number,
  ranks: readonly RankProgress[],
  timeoutMs: number,
): HangVerdict {
  const reports = ranks.map((r) => r.lastReportAt).filter((t): t is number => t !== null);
  const lastProgress = reports.length > 0 ? Math.max(...reports) : launchedAt;
  const silentMs = now - lastProgress;
  return { hung: silentMs > timeoutMs, silentMs, timeoutMs };
}

/**
 * The rank that stopped first: a process found stopped (T) or in uninterruptible sleep (D) beats report times; else
 * the rank with the oldest last report (never reporting is oldest of all).
 */
export function hangCulprit(ranks: readonly RankProgress[]): { rank: number; reason: string } | null {
  const stopped = ranks.find((r) => r.processState === "T" || r.processState === "t");
  if (stopped) return { rank: stopped.rank, reason: `rank ${stopped.rank}'s process is stopped (state T)` };
  const blocked = ranks.find((r) => r.processState === "D");
  if (blocked)
    return { rank: blocked.rank, reason: `rank ${blocked.rank}'s process is in uninterruptible sleep (state D)` };
  const sorted = [...ranks].sort(
    (a, b) => (a.lastReportAt ?? -Infinity) - (b.lastReportAt ?? -Infinity) || a.rank - b.rank,
  );
  const first = sorted[0];
  if (!first) return null;
  const tied = sorted.filter((r) => r.lastReportAt === first.lastReportAt).length;
  return {
    rank: first.rank,
    reason:
      first.lastReportAt === null
        ? `rank ${first.rank} never reported a step`
        : tied === ranks.length
          ? `every rank stopped at the same time; rank ${first.rank} is named by order`
          : `rank ${first.rank} reported last at the oldest time`,
  };
}
