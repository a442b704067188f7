import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import type { PoolSpec } from "../core/spec.js";
import type { AttemptRecord, RankRecord } from "../store/port.js";

/**
 * Progress for scripts that print nothing a progress source matches (no SDK report, no line of `progress.regex`):
 * hang detection falls back to "any output or CPU activity". A rank is active when its log or report file was written
 * (the file's mtime: right across a restart of the server) or, on a CPU pool only (`cpuTellsLongSteps`), when it used
 * CPU: at least 5% of a core since it was last found active, and 3 clock ticks (a rank blocked in a collective behind
 * a stopped peer uses almost none: about a tick in 3 s, measured on gloo). On an accelerator pool a rank hung in a
 * collective behind a dead peer spins on the CPU (a CUDA stream sync, NCCL's and HCCL's proxy threads), so there the
 * fallback goes by output alone; CPU is still sampled and reported (`cpuActiveAt`). CPU comes from /proc for ranks on
 * this host, from the node agent's heartbeat (`rank-N.hb`, the rank's process group) elsewhere. The gang's pace is
 * the gaps between its moments of activity.
 */

export interface ActivityLook {
  /** Per rank: when it last showed activity (output, and CPU where `cpuCounts`), or null when never. */
  lastActiveAt: Map<number, number | null>;
  /** Gaps (ms) between the gang's moments of activity this attempt, oldest first (at most `maxGaps`). */
  gapsMs: number[];
  /** Per rank: when it last used CPU (output left out), or null when never seen to; sampled on every pool. */
  cpuActiveAt: Map<number, number | null>;
  /** Whether CPU counted as activity in `lastActiveAt` (the pool's ranks compute on the CPU), or output alone did. */
  cpuCounts: boolean;
}

/** CPU is sampled for gangs up to this size (as the gray-failure detector does); bigger ones go by output alone. */
const maxCpuSampledRanks = 512;
const maxGaps = 200;
/** A job not looked at for this long is forgotten. */
const forgetMs = 10 * 60_000;
/** Share of one core, and clock ticks at least, that count as CPU activity. */
const cpuShare = 0.05;
const minTicks = 3;
const ticksPerSecond = 100;

interface RankActivity {
  anchor: { t: number; ticks: number } | null;
  cpuActiveAt: number | null;
}

interface JobActivity {
  attempt: number;
  seenAt: number;
  ranks: Map<number, RankActivity>;
  gangLast: number | null;
  gaps: number[];
}

export class ActivityWatch {
  private readonly jobs = new Map<string, JobActivity>();

  /**
   * Samples the gang's output and CPU. `pool` is the attempt's pool: CPU counts as activity only where
   * `cpuTellsLongSteps(pool)` (a CPU pool); elsewhere, or with the pool unknown, output alone does.
   */
  async look(
    jobId: string,
    attempt: AttemptRecord,
    ranks: readonly RankRecord[],
    now: number,
    pool: Pick<PoolSpec, "accelerator"> | undefined,
  ): Promise<ActivityLook> {
    const cpuCounts = cpuTellsLongSteps(pool);
    for (const [id, e] of this.jobs) if (now - e.seenAt > forgetMs) this.jobs.delete(id);
    let job = this.jobs.get(jobId);
    if (!job || job.attempt !== attempt.n) {
      job = { attempt: attempt.n, seenAt: now, ranks: new Map(), gangLast: null, gaps: [] };
      this.jobs.set(jobId, job);
    }
    job.seenAt = now;
    const sampleCpu = ranks.length <= maxCpuSampledRanks;
    const lastActiveAt = new Map<number, number | null>();
    const cpuActiveAt = new Map<number, number | null>();
    for (const r of ranks) {
      let ra = job.ranks.get(r.rank);
      if (!ra) {
        ra = { anchor: null, cpuActiveAt: null };
        job.ranks.set(r.rank, ra);
      }
      if (sampleCpu && r.exitedAt === null) {
        const cpu = await readCpuTicks(attempt.dir, r);
        if (cpu) {
          if (!ra.anchor || cpu.ticks < ra.anchor.ticks) ra.anchor = { t: now, ticks: cpu.ticks };
          const used = cpu.ticks - ra.anchor.ticks;
          const seconds = Math.max(0, now - ra.anchor.t) / 1000;
          if (used >= Math.max(minTicks, cpuShare * seconds * ticksPerSecond)) {
            ra.cpuActiveAt = now;
            ra.anchor = { t: now, ticks: cpu.ticks };
          }
        }
      }
      const written = await lastWrite([r.logPath, r.reportPath], attempt.startedAt, now);
      lastActiveAt.set(r.rank, cpuCounts ? latest(written, ra.cpuActiveAt) : written);
      cpuActiveAt.set(r.rank, ra.cpuActiveAt);
    }
    const gang = [...lastActiveAt.values()].reduce<number | null>(latest, null);
    if (gang !== null && job.gangLast !== null && gang > job.gangLast) {
      job.gaps.push(gang - job.gangLast);
      if (job.gaps.length > maxGaps) job.gaps.splice(0, job.gaps.length - maxGaps);
    }
    if (gang !== null) job.gangLast = Math.max(job.gangLast ?? gang, gang);
    return { lastActiveAt, gapsMs: [...job.gaps], cpuActiveAt, cpuCounts };
  }
}

/**
 * Whether a busy CPU can tell a long step from a hang on this pool: only where the ranks compute on the CPU. On an
 * accelerator a rank waiting for its device spins on the CPU (a CUDA stream sync, NCCL's and HCCL's proxy threads), so
 * a collective hung behind a dead peer looks busy, and such a hang must keep the progress timeout (seconds), not wait
 * out the startup timeout.
 */
export function cpuTellsLongSteps(pool: Pick<PoolSpec, "accelerator"> | undefined): boolean {
  return pool?.accelerator.vendor === "cpu";
}

/** How recent a rank's activity must be for the gang to count as busy (the Slurm heartbeat is written every second). */
export const busyWithinMs = 3000;

/**
 * Whether every rank of the gang used CPU within `busyWithinMs` of `now`: a gang silent on its progress source but
 * computing is in a long step (core/hang.ts busyStepTimeoutMs), not hung. Output does not count (peers of a hung rank
 * may print timeouts and warnings).
 */
export function gangBusy(look: ActivityLook, now: number): boolean {
  const at = [...look.cpuActiveAt.values()];
  return at.length > 0 && at.every((t) => t !== null && now - t <= busyWithinMs);
}

function latest(a: number | null, b: number | null): number | null {
  return a === null ? b : b === null ? a : Math.max(a, b);
}

/** The newest mtime of the files that were written during the attempt, clamped to now; null when none was. */
async function lastWrite(files: readonly string[], startedAt: number, now: number): Promise<number | null> {
  let at: number | null = null;
  for (const f of files) {
    const st = await stat(f).catch(() => null);
    if (st && st.size > 0 && st.mtimeMs >= startedAt) at = latest(at, Math.min(now, st.mtimeMs));
  }
  return at;
}

/** A rank's CPU clock ticks: the node agent's heartbeat (its process group), else /proc for a rank on this host. */
async function readCpuTicks(attemptDir: string, r: RankRecord): Promise<{ ticks: number } | null> {
  const hb = await readFile(path.join(attemptDir, `rank-${r.rank}.hb`), "utf8").catch(() => null);
  if (hb !== null) {
    try {
      const o = JSON.parse(hb) as { cpuTicks?: unknown };
      return typeof o.cpuTicks === "number" && Number.isFinite(o.cpuTicks) ? { ticks: o.cpuTicks } : null;
    } catch {
      return null;
    }
  }
  const pid = r.rankPid ?? null;
  if (pid === null || process.platform !== "linux") return null;
  const text = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => null);
  if (text === null) return null;
  // Fields after the command name (which may hold spaces) in parentheses: utime, stime, cutime, cstime.
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  return Number.isFinite(ticks) ? { ticks } : null;
}
