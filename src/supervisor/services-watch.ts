import { JobState } from "../core/states.js";
import type { RankStatus } from "../executors/port.js";
import { engineAdapter } from "../gateway/engines.js";
import type { EngineKind } from "../gateway/config.js";
import type { AttemptRecord, JobRecord, RankRecord } from "../store/port.js";
import type { SupervisorContext } from "./context.js";
import { crashed, exitFields, judgeCrash, toRankExits } from "./detectors/crash.js";
import { tailLines } from "./reports.js";
import type { Services } from "./services.js";
import type { Verdict } from "./verdict.js";

/**
 * One look at a replica's attempt (the watch of a workload of kind "replica"): the crash detector of training ranks
 * (same culprit and cause, so the same strikes and cordons follow), then what serving adds: the readiness gate (the
 * engine's own health probe; not ready within `readiness.timeoutSeconds` is a hang), and once ready a liveness probe
 * whose repeated failure is a hang too. An exit 0 is a failure as well: restart "always". Decides nothing itself.
 */
export async function watchReplica(
  ctx: SupervisorContext,
  services: Services,
  job: JobRecord,
  attempt: AttemptRecord,
): Promise<Verdict> {
  const workload = job.spec.workload!;
  const ranks = await ctx.store.listRanks(job.id, attempt.n);
  const statuses = await ctx.executor.poll(attempt.dir, ranks);
  await recordExits(ctx, ranks, statuses);
  const exits = toRankExits(ranks, statuses);
  if (crashed(exits)) {
    await services.markDown(job.id);
    const facts = await judgeCrash({
      ranks,
      statuses,
      detectedAt: ctx.now(),
      lastStepOf: () => null,
      resumeStep: null,
      causePatterns: ctx.cluster.causePatterns ?? [],
      tail: (r) => tailLines(r.logPath, 40),
      repoll: () => ctx.executor.poll(attempt.dir, ranks),
    });
    return { kind: "failed", facts: { ...facts, summary: `replica ${workload.slot}: ${facts.summary}` } };
  }
  if (exits.length === ranks.length && ranks.length > 0) {
    await services.markDown(job.id);
    const now = ctx.now();
    return {
      kind: "failed",
      facts: {
        cause: "unknown",
        culpritRank: 0,
        culpritNode: null,
        faultAt: exits[0]?.at ?? now,
        detectedAt: now,
        summary: `replica ${workload.slot}: the model server exited with code 0 (restart policy: always)`,
        hard: false,
        signature: "replica exit 0",
        retryable: true,
        lastStep: null,
        evidence: { tail: (await tailLines(ranks[0]!.logPath, 12)).slice(-12) },
      },
    };
  }
  const replica = await services.replicaOf(job.id);
  if (replica === null || replica.state === "stopped") return { kind: "healthy" };
  // A ready replica's liveness is probed every 2 s, not at every pass.
  if (replica.readyAttempt === attempt.n && !services.probeDue(job.id)) return { kind: "healthy" };
  const url = await services.replicaUrl(job, attempt);
  const probe = await probeReady(url, workload.engine as EngineKind);
  if (replica.readyAttempt !== attempt.n) {
    if (probe.ready) {
      await services.markReady(job, attempt, url);
      if (job.state === JobState.Starting) await ctx.setJobState(job, JobState.Running, null);
      return { kind: "healthy" };
    }
    const waited = ctx.now() - attempt.startedAt;
    if (waited <= workload.readiness.timeoutSeconds * 1000) return { kind: "healthy" };
    return {
      kind: "failed",
      facts: unresponsive(
        ctx,
        job,
        attempt,
        ranks[0],
        `not ready within ${workload.readiness.timeoutSeconds} s (readyTimeoutS): ${probe.detail}`,
      ),
    };
  }
  if (services.livenessFailed(job.id, probe.ready)) {
    await services.markDown(job.id);
    return {
      kind: "failed",
      facts: unresponsive(
        ctx,
        job,
        attempt,
        ranks[0],
        `its engine stopped answering its health probe: ${probe.detail}`,
      ),
    };
  }
  return { kind: "healthy" };
}

function unresponsive(
  ctx: SupervisorContext,
  job: JobRecord,
  attempt: AttemptRecord,
  rank: RankRecord | undefined,
  why: string,
): Extract<Verdict, { kind: "failed" }>["facts"] {
  const now = ctx.now();
  return {
    cause: "hang",
    culpritRank: rank?.rank ?? 0,
    culpritNode: attempt.nodes[0] ?? null,
    faultAt: now,
    detectedAt: now,
    summary: `replica ${job.spec.workload?.slot ?? job.name}: ${why}`,
    hard: false,
    signature: "replica unresponsive",
    retryable: true,
    lastStep: null,
    evidence: { readiness: why },
  };
}

/** The engine's own readiness probe (engines.ts), bounded in time and size. */
export async function probeReady(url: string, engine: EngineKind): Promise<{ ready: boolean; detail: string }> {
  const adapter = engineAdapter(engine);
  try {
    const res = await fetch(url + adapter.healthPath, { signal: AbortSignal.timeout(2000) });
    const body = (await res.text()).slice(0, 4096);
    const verdict = adapter.judgeHealth(res.status, body);
    return { ready: verdict.ready, detail: `GET ${adapter.healthPath} answered ${res.status}` };
  } catch (err) {
    return { ready: false, detail: `GET ${adapter.healthPath}: ${(err as Error).message}` };
  }
}

/** Records the exits the executor reports (once per rank), as the training watch does. */
async function recordExits(ctx: SupervisorContext, ranks: RankRecord[], statuses: RankStatus[]): Promise<void> {
  for (const s of statuses) {
    const r = ranks.find((x) => x.rank === s.rank);
    if (!r || r.exitedAt !== null || s.state === "running") continue;
    const updated: RankRecord = { ...r, ...exitFields(s), exitedAt: s.at };
    await ctx.store.upsertRank(updated);
    Object.assign(r, updated);
  }
}
