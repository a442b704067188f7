import type { CompiledJobSpec } from "../../core/spec.js";
import {
  busyStepTimeoutMs,
  hangCulprit,
  hangTimeoutMs,
  judgeHang,
  percentile,
  type RankProgress,
} from "../../core/hang.js";
import { nativeStacksExcerpt, nativeStacksPath } from "../../executors/native-stacks.js";
import type { AttemptRecord, RankRecord, StepSample } from "../../store/port.js";
import type { HangDump } from "../context.js";
import type { IncidentFacts, Verdict } from "../verdict.js";

export interface HangInput {
  now: number;
  attempt: AttemptRecord;
  ranks: RankRecord[];
  detection: CompiledJobSpec["detection"];
  /** Each rank's newest report of this attempt (store.rankProgress). */
  progress: ReadonlyArray<{ rank: number; lastT: number; lastStep: number }>;
  /** Rank 0's recent steps, oldest first: the job's own pace. */
  recent: readonly StepSample[];
  /** Per rank: when its files last grew past what was read (unread bytes show it alive), or null. */
  unread: ReadonlyMap<number, number | null>;
  /** The rank process's state letter (R, S, D, T...), or null when unknown. */
  processState: (rank: RankRecord) => string | null;
  /**
   * Set when no progress source matched in this attempt (no step reported, no log line matched the regex): `unread`
   * then holds each rank's last output or CPU activity (supervisor/activity.ts; `cpu`: whether CPU counted, only on
   * CPU pools), and the timeout follows the gaps between the gang's moments of activity, after the startup window.
   */
  fallback?: { gapsMs: readonly number[]; active: boolean; cpu: boolean };
  /**
   * Set when every rank has been busy on CPU in the last few seconds (watch.ts samples it once the gang has been silent
   * for a while): the silence is a long step up to the startup timeout (core/hang.ts busyStepTimeoutMs).
   */
  busy?: boolean;
}

/** Moments of activity after which the gang's rhythm is known and the fallback's startup window ends early. */
export const fallbackRhythmGaps = 5;

/**
 * The timeout of the output-or-CPU fallback: the startup timeout until the gang's rhythm is known, then the job's own
 * rhythm of activity. The rhythm is known past the startup window, or earlier: once the fallback is in force
 * (min(startupSeconds, 30 s) into the attempt, when progress.fallback is said) and the gang has been seen active
 * `fallbackRhythmGaps` times. Without that, an unmodified script hung in the first 5 minutes of an attempt waited out
 * the whole default startup window (280 s measured on the DDP tutorial script) however steady its output had been.
 */
export function fallbackTimeoutMs(
  d: CompiledJobSpec["detection"],
  ageMs: number,
  gapsMs: readonly number[],
  active: boolean,
): number {
  const startup = d.startupSeconds * 1000;
  const inForce = Math.min(startup, 30_000);
  const rhythmKnown = ageMs > startup || (ageMs >= inForce && gapsMs.length >= fallbackRhythmGaps);
  // Never seen active at all (silent since launch), or too early to know its rhythm: the startup timeout, as before.
  if (!rhythmKnown || !active) return startup;
  return Math.max(d.hangMinSeconds * 1000, d.hangMultiple * percentile(gapsMs, 0.95));
}

/** Per job: the longest step seen in any window of any attempt (ms), kept across attempts (not across servers). */
const longestSteps = new Map<string, number>();
const maxJobsRemembered = 10_000;

/** The longest step `jobId` has been seen to make, this look's intervals included; remembered for later attempts. */
export function longestStep(jobId: string, intervals: readonly number[]): number {
  const longest = Math.max(longestSteps.get(jobId) ?? 0, ...intervals);
  if (!longestSteps.has(jobId) && longestSteps.size >= maxJobsRemembered) longestSteps.clear();
  longestSteps.set(jobId, longest);
  return longest;
}

const latest = (a: number | null, b: number | null): number | null =>
  a === null ? b : b === null ? a : Math.max(a, b);

/**
 * The hang detector: the gang is hung when no rank has made progress for longer than the job's own pace allows (see
 * core/hang.ts). Returns the "hung" verdict (stacks to ask for, the incident to record at the dump deadline) or null.
 */
export function judgeHangVerdict(input: HangInput): Extract<Verdict, { kind: "hung" }> | null {
  const { now, attempt, ranks, progress, recent } = input;
  // Per step: stored steps are thinned, so two neighbours may be several steps apart.
  const intervals = recent
    .slice(1)
    .map((s, i) => (s.t - recent[i]!.t) / Math.max(1, s.step - recent[i]!.step))
    .filter((d) => d >= 0);
  const d = input.detection;
  const policy = {
    startupSeconds: d.startupSeconds,
    minSeconds: d.hangMinSeconds,
    multiple: d.hangMultiple,
    percentile: 0.95,
  };
  const paceMs = hangTimeoutMs(policy, intervals, longestStep(attempt.jobId, intervals));
  const timeoutMs = input.fallback
    ? fallbackTimeoutMs(d, now - attempt.startedAt, input.fallback.gapsMs, input.fallback.active)
    : input.busy
      ? busyStepTimeoutMs(policy, paceMs)
      : paceMs;
  // A rank whose report file (or log, in regex mode) holds bytes not read yet is alive as of the file's mtime:
  // ingestion lagging behind a flood must never look like a hang.
  const lastBy = new Map(progress.map((p) => [p.rank, p.lastT]));
  const seen: RankProgress[] = ranks.map((r) => ({
    rank: r.rank,
    lastReportAt: latest(lastBy.get(r.rank) ?? null, input.unread.get(r.rank) ?? null),
    processState: null,
  }));
  const verdict = judgeHang(now, attempt.startedAt, seen, timeoutMs);
  if (!verdict.hung) return null;
  // Only now the process states: reading them costs a file or /proc read per rank, every tick, on big gangs. Every
  // executor can tell (Slurm ranks have no pid on this host: their node agents report the state).
  const view: RankProgress[] = seen.map((v, i) => ({ ...v, processState: input.processState(ranks[i]!) }));
  const culprit = hangCulprit(view)!;
  const rank = ranks.find((r) => r.rank === culprit.rank)!;
  // Ask every rank for its Python stacks (sdk/python/sitecustomize.py registers faulthandler on SIGUSR1 in every
  // Python process a rank starts, SDK or not; executors deliver SIGUSR1 only to processes that catch it, so none is
  // killed by the dump); a stopped process gets SIGCONT so that it can write them.
  const signals: Array<{ rank: RankRecord; signal: NodeJS.Signals }> = ranks.map((r) => ({
    rank: r,
    signal: "SIGUSR1",
  }));
  for (const v of view.filter((x) => x.processState === "T" || x.processState === "t")) {
    signals.push({ rank: ranks.find((x) => x.rank === v.rank)!, signal: "SIGCONT" });
  }
  const lastStep = progress.find((p) => p.rank === culprit.rank)?.lastStep ?? null;
  const silent = Math.round(verdict.silentMs / 100) / 10;
  const facts: IncidentFacts = {
    cause: "hang",
    culpritRank: rank.rank,
    culpritNode: rank.node,
    faultAt: view.find((v) => v.rank === culprit.rank)?.lastReportAt ?? attempt.startedAt,
    detectedAt: now,
    summary: input.fallback
      ? `no output${input.fallback.cpu ? " or CPU activity" : ""} for ${silent}s (timeout ` +
        `${Math.round(verdict.timeoutMs / 100) / 10}s; no progress source matched, so ` +
        `${input.fallback.cpu ? "output and CPU were watched" : "output was watched: CPU does not count on an accelerator pool"}); ` +
        culprit.reason
      : `no progress for ${silent}s (timeout ${Math.round(verdict.timeoutMs / 100) / 10}s` +
        `${input.busy ? ", every rank busy on CPU all along" : ""}); ${culprit.reason}`,
    hard: false,
    signature: "",
    lastStep,
    evidence: {
      silentMs: verdict.silentMs,
      timeoutMs: verdict.timeoutMs,
      processStates: view,
      ...(input.fallback ? { progressSource: input.fallback.cpu ? "output-or-cpu" : "output" } : {}),
      ...(input.busy ? { busy: true } : {}),
    },
  };
  // The stacks take a while to be written: the incident is recorded on a later tick (no job waits for this one).
  const dump: HangDump = {
    attempt: attempt.n,
    deadline: now + d.stackDumpSeconds * 1000,
    logPath: rank.logPath,
    facts,
    ...(d.nativeStacks ? { nativePath: nativeStacksPath(rank.logPath, rank.rank) } : {}),
  };
  return { kind: "hung", dump, signals };
}

/** The faulthandler dump in a log tail ("Thread 0x... (most recent call first):" and its frames). */
export function stackExcerpt(tail: readonly string[]): string[] {
  // A progress bar redrawn with \r leaves no newline before the dump: its header may follow the bar on one line.
  const header = /(Thread|Current thread) 0x[0-9a-f]+ \(most recent call first\):/;
  const start = tail.findIndex((l) => header.test(l));
  if (start < 0) return [];
  const first = tail[start]!;
  return [first.slice(first.search(header)), ...tail.slice(start + 1, start + 40)];
}

/** The hang incident once the dump deadline has passed: the culprit's stacks (from its log's tail) go in. */
export function hangWithStacks(dump: HangDump, culpritTail: readonly string[]): IncidentFacts {
  const native = dump.nativePath ? nativeStacksExcerpt(dump.nativePath) : [];
  return {
    ...dump.facts,
    evidence: {
      stack: stackExcerpt(culpritTail),
      ...(native.length > 0 ? { nativeStack: native } : {}),
      ...dump.facts.evidence,
    },
  };
}
