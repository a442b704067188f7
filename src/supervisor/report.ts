import {
  adviseInterval,
  buildLedger,
  type IntervalAdvice,
  type Ledger,
  type LedgerCheckpoint,
  type LedgerInput,
} from "../core/goodput.js";
import type { AttemptRecord, EventRecord, IncidentRecord, JobRecord, StepSample, Store } from "../store/port.js";
import { injectedIncidents } from "./chaos.js";

export interface JobReport {
  jobId: string;
  state: string;
  ledger: Ledger;
  advice: IntervalAdvice;
}

/** Builds a job's goodput ledger from what the store recorded (rank 0's steps, checkpoint saves, incidents, waits). */
export async function jobReport(store: Store, jobId: string, now: number): Promise<JobReport | null> {
  const job = await store.getJob(jobId);
  if (!job) return null;
  const [attempts, incidents, events, steps] = await Promise.all([
    store.listAttempts(job.id),
    store.listIncidents(job.id),
    store.listEvents({ jobId: job.id, limit: 1_000_000 }),
    store.listSteps(job.id, { rank: 0 }),
  ]);
  const { input, checkpoints } = ledgerInputFromRecords(job, attempts, incidents, events, steps, now);
  const ledger = buildLedger(input);
  return { jobId: job.id, state: job.state, ledger, advice: adviseInterval(ledger, checkpoints) };
}

/**
 * The ledger's input from a job's records as the store (or the API) gives them: pure, so the planner's `--from-job`
 * builds the same ledger from the records of a job's first part.
 */
export function ledgerInputFromRecords(
  job: Pick<JobRecord, "createdAt" | "endedAt">,
  attempts: readonly AttemptRecord[],
  incidents: readonly IncidentRecord[],
  events: readonly EventRecord[],
  steps: ReadonlyArray<Pick<StepSample, "attempt" | "step" | "t">>,
  now: number,
): { input: LedgerInput; checkpoints: LedgerCheckpoint[] } {
  const checkpoints: LedgerCheckpoint[] = events
    .filter((e) => e.kind === "checkpoint.saved" && typeof e.data.attempt === "number")
    .map((e) => ({
      attempt: e.data.attempt as number,
      step: e.data.step as number,
      t: e.data.t as number,
      saveMs: (e.data.saveMs as number) ?? 0,
    }));
  const waits = events
    .filter((e) => e.kind === "job.waiting")
    .map((e) => ({ from: e.t, to: attempts.find((a) => a.startedAt >= e.t)?.startedAt ?? job.endedAt ?? now }));
  // A slowdown the run went on through ends when the pace recovered (else with its attempt).
  const recovered = new Map<number, number>();
  for (const e of events) {
    if (e.kind === "slowdown.recovered" && typeof e.data.incident === "number") {
      recovered.set(e.data.incident, typeof e.data.to === "number" ? e.data.to : e.t);
    }
  }
  // Faults `switchyard chaos` injected (its `chaos` events): charged like any, left out of the advisor's MTBF.
  const injected = injectedIncidents(incidents, events, attempts);
  const input: LedgerInput = {
    createdAt: job.createdAt,
    endAt: job.endedAt ?? now,
    attempts,
    steps: steps.map((s) => ({ attempt: s.attempt, step: s.step, t: s.t })),
    checkpoints,
    incidents: incidents.map((i) => ({
      id: i.id,
      attempt: i.attempt,
      cause: i.cause,
      culpritRank: i.culpritRank,
      culpritNode: i.culpritNode,
      pool:
        typeof i.evidence.pool === "string" ? i.evidence.pool : (attempts.find((a) => a.n === i.attempt)?.pool ?? "?"),
      faultAt: typeof i.evidence.faultAt === "number" ? i.evidence.faultAt : i.detectedAt,
      detectedAt: i.detectedAt,
      ...degradedOf(i.evidence.degraded, recovered.get(i.id)),
      ...(i.evidence.endedAttempt === false ? { endedAttempt: false } : {}),
      ...(injected.has(i.id) ? { injected: injected.get(i.id)!.action } : {}),
    })),
    waits,
  };
  return { input, checkpoints };
}

/** An incident's degraded span from its evidence ({from, to, speed}), closed at `recoveredAt` when the pace recovered. */
function degradedOf(
  raw: unknown,
  recoveredAt: number | undefined,
): { degraded?: { from: number; to: number | null; speed: number } } {
  if (typeof raw !== "object" || raw === null) return {};
  const d = raw as Record<string, unknown>;
  if (typeof d.from !== "number" || typeof d.speed !== "number" || !Number.isFinite(d.speed)) return {};
  const to = typeof d.to === "number" ? d.to : (recoveredAt ?? null);
  return { degraded: { from: d.from, to, speed: Math.min(1, Math.max(0, d.speed)) } };
}
