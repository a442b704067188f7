import { dalyInterval, youngInterval } from "./checkpoint-interval.js";

/**
 * The goodput ledger: every millisecond of a job's wall time charged to exactly one category, and every
 * non-productive one to an incident or a phase. Pure: built from attempts, step reports, checkpoint saves and
 * incidents, so a report can be recomputed at any time and always adds up.
 *
 * A degraded run (a collapsed link, a slow chip) is not down but crawls: while an incident's `degraded` span lasts,
 * each millisecond the run would have counted as productive is split, the share `1 - speed` charged to the incident
 * (category `degraded`) and `speed` to productive. A run at half speed for 10 minutes lost 5.
 */

export const LedgerCategory = {
  Queued: "queued",
  Starting: "starting",
  Productive: "productive",
  /** The share of running time a degraded run (slow link or chip) lost against its own baseline pace. */
  Degraded: "degraded",
  Lost: "lost",
  Detection: "detection",
  Restart: "restart",
  Checkpoint: "checkpoint",
  Waiting: "waiting",
  Finishing: "finishing",
} as const;
export type LedgerCategory = (typeof LedgerCategory)[keyof typeof LedgerCategory];

export const ledgerCategories: readonly LedgerCategory[] = Object.values(LedgerCategory);

export interface LedgerAttempt {
  n: number;
  pool: string;
  startedAt: number;
  endedAt: number | null;
  resumeStep: number | null;
}

export interface LedgerStep {
  attempt: number;
  step: number;
  t: number;
}

export interface LedgerCheckpoint {
  attempt: number;
  step: number;
  /** When the save finished (the report's time). */
  t: number;
  saveMs: number;
}

export interface LedgerIncident {
  id: number;
  attempt: number;
  cause: string;
  culpritRank: number | null;
  culpritNode: string | null;
  pool: string;
  /** When the fault happened (culprit exit; for a hang, its last report). */
  faultAt: number;
  detectedAt: number;
  /**
   * A slowdown: from `from` to `to` (null: to the end of the attempt, or of the job while it runs) the run went at
   * `speed` (0..1: 1 / the measured slowdown factor) of its baseline pace.
   */
  degraded?: { from: number; to: number | null; speed: number };
  /**
   * False for an incident the run went on through (a slowdown not worth a restart): it does not end its attempt.
   * Absent or true: the attempt ended with it (rollback, detection and restart are charged to it).
   */
  endedAttempt?: boolean;
  /**
   * The chaos action that injected this fault (`switchyard chaos`), absent for a real one. Its time is charged like
   * any incident's, but it is no sample of the fleet's failure rate: the interval advisor leaves it out.
   */
  injected?: string;
}

export interface LedgerInput {
  createdAt: number;
  /** Job end, or now for a running job. */
  endAt: number;
  attempts: readonly LedgerAttempt[];
  /** Progress of one rank (rank 0): in a synchronous job every rank steps together. */
  steps: readonly LedgerStep[];
  checkpoints: readonly LedgerCheckpoint[];
  incidents: readonly LedgerIncident[];
  /** Spans in which no pool could host the job. */
  waits: ReadonlyArray<{ from: number; to: number }>;
}

export interface IncidentCost {
  id: number;
  cause: string;
  culpritRank: number | null;
  culpritNode: string | null;
  pool: string;
  detectionMs: number;
  /** Detection to the first new step of the next attempt (null if none came). */
  timeToFirstStepMs: number | null;
  stepsLost: number;
  /** The part of `costMs` lost to running slowly (degraded). */
  degradedMs: number;
  /** False when the run went on through it (a slowdown ridden out): not a failure for the MTBF. */
  endedAttempt: boolean;
  /** The chaos action that injected it (a drill), null for a real fault: charged here, not counted in the MTBF. */
  injected: string | null;
  /** Everything this incident cost: lost work, detection, restart, the slow share of a degraded run. */
  costMs: number;
}

export interface Ledger {
  wallMs: number;
  totals: Record<LedgerCategory, number>;
  goodput: number;
  stepsLost: number;
  incidents: IncidentCost[];
  byCause: Record<string, number>;
  byNode: Record<string, number>;
  byPool: Record<string, number>;
}

export function buildLedger(input: LedgerInput): Ledger {
  const totals = Object.fromEntries(ledgerCategories.map((c) => [c, 0])) as Record<LedgerCategory, number>;
  const incidentCost = new Map<number, IncidentCost>();
  for (const i of input.incidents) {
    incidentCost.set(i.id, {
      id: i.id,
      cause: i.cause,
      culpritRank: i.culpritRank,
      culpritNode: i.culpritNode,
      pool: i.pool,
      detectionMs: Math.max(0, i.detectedAt - i.faultAt),
      timeToFirstStepMs: null,
      stepsLost: 0,
      degradedMs: 0,
      endedAttempt: i.endedAttempt !== false,
      injected: i.injected ?? null,
      costMs: 0,
    });
  }
  // Degraded spans, oldest first, each clamped to its attempt's time and to the job's.
  const attemptEnds = new Map(input.attempts.map((a) => [a.n, a.endedAt]));
  const degradations = input.incidents
    .filter((i) => i.degraded && Number.isFinite(i.degraded.speed))
    .map((i) => ({
      cost: incidentCost.get(i.id)!,
      from: i.degraded!.from,
      to: i.degraded!.to ?? attemptEnds.get(i.attempt) ?? Number.POSITIVE_INFINITY,
      lostShare: 1 - Math.min(1, Math.max(0, i.degraded!.speed)),
      overlapMs: 0,
      chargedMs: 0,
    }))
    .sort((a, b) => a.from - b.from);

  // A cursor walks time forward; every span is clamped to [cursor, end], so the parts always sum to the wall time.
  let cursor = input.createdAt;
  const end = Math.max(input.endAt, input.createdAt);
  const add = (span: number, category: LedgerCategory, incident?: IncidentCost): void => {
    if (span <= 0) return;
    totals[category] += span;
    if (incident && category !== LedgerCategory.Productive) incident.costMs += span;
    if (incident && category === LedgerCategory.Degraded) incident.degradedMs += span;
  };
  const charge = (until: number, category: LedgerCategory, incident?: IncidentCost): void => {
    const to = Math.min(Math.max(until, cursor), end);
    if (to <= cursor) return;
    if (category === LedgerCategory.Productive) {
      // Productive time inside a degraded span: the slow share goes to the slowdown's incident (whole milliseconds,
      // the rest to productive, so the parts still add up exactly).
      let at = cursor;
      for (const d of degradations) {
        const a = Math.max(at, d.from);
        const b = Math.min(to, d.to);
        if (b <= a) continue;
        add(a - at, LedgerCategory.Productive);
        // Rounded on the running total, so many short spans round no worse than one long one.
        d.overlapMs += b - a;
        const lost = Math.round(d.overlapMs * d.lostShare) - d.chargedMs;
        d.chargedMs += lost;
        add(lost, LedgerCategory.Degraded, d.cost);
        add(b - a - lost, LedgerCategory.Productive);
        at = b;
      }
      add(to - at, LedgerCategory.Productive);
    } else add(to - cursor, category, incident);
    cursor = to;
  };

  const attempts = [...input.attempts].sort((a, b) => a.n - b.n);
  // The newest step any attempt reached; none yet at the start (a run may number its first step 0).
  let highWater = Number.NEGATIVE_INFINITY;
  let stepsLost = 0;
  let pendingIncident: IncidentCost | undefined;

  for (const attempt of attempts) {
    const steps = input.steps.filter((s) => s.attempt === attempt.n).sort((a, b) => a.t - b.t || a.step - b.step);
    const saves = input.checkpoints.filter((c) => c.attempt === attempt.n).sort((a, b) => a.t - b.t);
    const incident = input.incidents.find((i) => i.attempt === attempt.n && i.endedAttempt !== false);
    const attemptEnd = attempt.endedAt ?? end;

    // Before the launch: queued (first attempt) or restart/waiting after an incident.
    chargeGap(
      input.waits,
      attempt.startedAt,
      cursor,
      charge,
      attempt.n === 1 ? LedgerCategory.Queued : LedgerCategory.Restart,
      pendingIncident,
    );

    const first = steps[0];
    if (first && pendingIncident && pendingIncident.timeToFirstStepMs === null) {
      const detectedAt = input.incidents.find((i) => i.id === pendingIncident!.id)!.detectedAt;
      pendingIncident.timeToFirstStepMs = Math.max(0, first.t - detectedAt);
    }
    charge(
      first?.t ?? Math.min(incident?.faultAt ?? attemptEnd, attemptEnd),
      attempt.n === 1 ? LedgerCategory.Starting : LedgerCategory.Restart,
      pendingIncident,
    );

    // Work between two reported steps is lost while it recomputes steps up to the earlier high-water mark, then
    // productive; stored steps may be thinned, so a span of several steps is split where it crosses the mark.
    const highWaterBefore = highWater;
    const work = (until: number, crossAt: number): void => {
      charge(Math.min(until, crossAt), LedgerCategory.Lost, pendingIncident);
      charge(until, LedgerCategory.Productive);
    };
    let prev = first;
    for (const s of steps.slice(1)) {
      const from = prev!;
      prev = s;
      const crossAt =
        s.step <= highWaterBefore
          ? s.t
          : from.step >= highWaterBefore
            ? from.t
            : from.t + ((s.t - from.t) * (highWaterBefore - from.step)) / (s.step - from.step);
      for (const save of saves.filter((c) => c.t > from.t && c.t <= s.t)) {
        work(Math.max(cursor, save.t - save.saveMs), crossAt);
        charge(save.t, LedgerCategory.Checkpoint);
      }
      work(s.t, crossAt);
    }
    // Steps recomputed: from the attempt's first step up to the earlier high-water mark (or as far as it got).
    const top = steps.reduce((m, s) => Math.max(m, s.step), Number.NEGATIVE_INFINITY);
    const recomputedSteps = first ? Math.max(0, Math.min(highWaterBefore, top) - first.step + 1) : 0;
    if (pendingIncident) pendingIncident.stepsLost += recomputedSteps;
    stepsLost += recomputedSteps;
    highWater = Math.max(highWater, top);

    if (incident) {
      const cost = incidentCost.get(incident.id)!;
      charge(incident.faultAt, LedgerCategory.Lost, cost); // work in flight when the fault hit
      charge(incident.detectedAt, LedgerCategory.Detection, cost);
      charge(attemptEnd, LedgerCategory.Restart, cost); // stopping the gang
      pendingIncident = cost;
    } else {
      charge(attemptEnd, attempt.endedAt === null ? LedgerCategory.Productive : LedgerCategory.Finishing);
      pendingIncident = undefined;
    }
  }
  chargeGap(
    input.waits,
    end,
    cursor,
    charge,
    pendingIncident ? LedgerCategory.Restart : LedgerCategory.Finishing,
    pendingIncident,
  );
  if (attempts.length === 0) charge(end, LedgerCategory.Queued);

  const wallMs = end - input.createdAt;
  const byCause: Record<string, number> = {};
  const byNode: Record<string, number> = {};
  const byPool: Record<string, number> = {};
  for (const c of incidentCost.values()) {
    byCause[c.cause] = (byCause[c.cause] ?? 0) + c.costMs;
    const node = c.culpritNode ?? "unknown";
    byNode[node] = (byNode[node] ?? 0) + c.costMs;
    byPool[c.pool] = (byPool[c.pool] ?? 0) + c.costMs;
  }
  return {
    wallMs,
    totals,
    goodput: wallMs > 0 ? totals.productive / wallMs : 0,
    stepsLost,
    incidents: [...incidentCost.values()],
    byCause,
    byNode,
    byPool,
  };
}

/** Charges [cursor, until) as `category`, except the parts inside a wait-for-capacity span. */
function chargeGap(
  waits: LedgerInput["waits"],
  until: number,
  cursor: number,
  charge: (until: number, category: LedgerCategory, incident?: IncidentCost) => void,
  category: LedgerCategory,
  incident: IncidentCost | undefined,
): void {
  for (const w of [...waits].sort((a, b) => a.from - b.from)) {
    if (w.to <= cursor || w.from >= until) continue;
    charge(w.from, category, incident);
    charge(Math.min(w.to, until), LedgerCategory.Waiting, incident);
  }
  charge(until, category, incident);
}

export interface IntervalAdvice {
  /** Measured mean time between failures (ms of running time per real incident), null with no real one yet. */
  mtbfMs: number | null;
  /** Failures that chaos injected (drills), left out of the MTBF: they say nothing about the fleet. */
  injectedLeftOut: number;
  /** Mean blocking save time (ms). */
  saveMs: number | null;
  /** Mean time between checkpoints in use (ms). */
  intervalInUseMs: number | null;
  youngMs: number | null;
  dalyMs: number | null;
  /**
   * The same advice as if the injected faults had been real failures (what the drill rehearsed): null without
   * injected faults or a save time.
   */
  ifInjectedWereReal: { mtbfMs: number; youngMs: number; dalyMs: number } | null;
}

/**
 * The checkpoint interval the measured failure rate calls for (Young and Daly), against the one in use. MTBF counts
 * running time (productive, degraded, lost, checkpoint) per incident that ended an attempt, so idle queueing does not
 * flatter the fleet. Injected faults (`switchyard chaos`) are not failures of the fleet: a drill must not make the
 * advice say "checkpoint more often". They are left out of the count (`injectedLeftOut` says how many); the running
 * time they cost stays in the ledger, and in the running time the real failures are spread over.
 */
export function adviseInterval(ledger: Ledger, checkpoints: readonly LedgerCheckpoint[]): IntervalAdvice {
  const running = ledger.totals.productive + ledger.totals.degraded + ledger.totals.lost + ledger.totals.checkpoint;
  const ended = ledger.incidents.filter((i) => i.endedAttempt);
  const injectedLeftOut = ended.filter((i) => i.injected !== null).length;
  const failures = ended.length - injectedLeftOut;
  const mtbfMs = failures > 0 ? running / failures : null;
  const saveMs = checkpoints.length > 0 ? checkpoints.reduce((a, c) => a + c.saveMs, 0) / checkpoints.length : null;
  const byAttempt = new Map<number, number[]>();
  for (const c of checkpoints) byAttempt.set(c.attempt, [...(byAttempt.get(c.attempt) ?? []), c.t]);
  const gaps: number[] = [];
  for (const times of byAttempt.values()) {
    times.sort((a, b) => a - b);
    for (let i = 1; i < times.length; i++) gaps.push(times[i]! - times[i - 1]!);
  }
  const intervalInUseMs = gaps.length > 0 ? gaps.reduce((a, b) => a + b, 0) / gaps.length : null;
  const canAdvise = mtbfMs !== null && saveMs !== null && saveMs > 0;
  const drillMtbfMs = injectedLeftOut > 0 ? running / ended.length : null;
  return {
    mtbfMs,
    injectedLeftOut,
    saveMs,
    intervalInUseMs,
    youngMs: canAdvise ? youngInterval(saveMs / 1000, mtbfMs / 1000) * 1000 : null,
    dalyMs: canAdvise ? dalyInterval(saveMs / 1000, mtbfMs / 1000) * 1000 : null,
    ifInjectedWereReal:
      drillMtbfMs !== null && saveMs !== null && saveMs > 0
        ? {
            mtbfMs: drillMtbfMs,
            youngMs: youngInterval(saveMs / 1000, drillMtbfMs / 1000) * 1000,
            dalyMs: dalyInterval(saveMs / 1000, drillMtbfMs / 1000) * 1000,
          }
        : null,
  };
}
