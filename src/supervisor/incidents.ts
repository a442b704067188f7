import { detectCrashLoop, type CrashRecord } from "../core/crashloop.js";
import { decideRecovery, isInfrastructureCause, poolKeepsFailing } from "../core/recovery.js";
import { AttemptState, JobState } from "../core/states.js";
import type { AttemptRecord, JobRecord } from "../store/port.js";
import type { SupervisorContext } from "./context.js";
import type { NodeHealth } from "./health.js";
import { formatWindow, type Inventory } from "./inventory.js";
import type { IncidentFacts } from "./verdict.js";

/** Causes that say nothing about the node: no strike, no cordon (see core/recovery.ts: infrastructureCauses). */
const nodeInnocentCauses: ReadonlySet<string> = new Set(["software", "numerical", "oom", "unknown"]);

/** What became of the job after an incident: it stopped (FAILED), or it restarts after a backoff, elsewhere. */
export type IncidentOutcome = { action: "stopped" } | { action: "restart"; notBefore: number; avoid: string[] };

/**
 * Incident handling: a verdict's facts become an incident record and its consequences, through core's policies: the
 * gang is stopped, the culprit's node struck (infrastructure causes only) and cordoned (strikes or hard evidence,
 * told to the workload manager), and the job restarts (backoff, away from the culprit) or stops (a crash loop, an
 * error no restart can fix, the restart budget spent).
 */
export class Incidents {
  constructor(
    private readonly ctx: SupervisorContext,
    private readonly inventory: Inventory,
    private readonly health?: NodeHealth,
  ) {}

  async handle(job: JobRecord, attempt: AttemptRecord, incident: IncidentFacts): Promise<IncidentOutcome> {
    const { ctx } = this;
    const { store } = ctx;
    await ctx.stopAttempt(job, attempt, AttemptState.Failed, incident.summary);
    if (incident.afterStop) {
      const late = await incident.afterStop();
      incident.summary = late.summary ?? incident.summary;
      incident.evidence = { ...incident.evidence, ...late.evidence };
    }
    // The culprit's host probed now, so the incident says what the device said; a fatal finding is hard evidence
    // (the probe has cordoned the node, with the finding as reason).
    const probe = await this.health
      ?.afterIncident(job, attempt.pool, incident.culpritNode, incident.cause)
      .catch(() => null);
    if (probe) {
      const worst = probe.findings.find((f) => f.grade === probe.status);
      incident.evidence = { ...incident.evidence, health: probe };
      if (probe.status === "fatal") incident.hard = true;
      if (worst && (probe.status === "fatal" || probe.status === "degraded")) {
        incident.summary = `${incident.summary}; ${incident.culpritNode}'s probe: ${worst.cause}: ${worst.message}`;
      }
    }
    const infrastructure = isInfrastructureCause(incident.cause);
    const node = (await store.listNodes({ strikesSince: this.inventory.strikesSince() })).find(
      (n) => n.name === incident.culpritNode,
    );
    const window = job.spec.recovery.restartWindowSeconds;
    const decision = decideRecovery(job.spec.recovery, {
      restarts: window
        ? (await store.listIncidents(job.id)).filter((i) => i.detectedAt >= incident.detectedAt - window * 1000).length
        : job.restarts,
      culpritNodeStrikes: node?.strikes ?? 0,
      hardDeviceEvidence: incident.hard,
    });
    const cordon = infrastructure && decision.cordonCulpritNode;
    const id = await store.addIncident({
      jobId: job.id,
      attempt: attempt.n,
      cause: incident.cause,
      culpritRank: incident.culpritRank,
      culpritNode: incident.culpritNode,
      detectedAt: incident.detectedAt,
      summary: incident.summary,
      evidence: {
        ...incident.evidence,
        faultAt: incident.faultAt,
        signature: incident.signature,
        lastStep: incident.lastStep,
        pool: attempt.pool,
        nodes: attempt.nodes,
        hard: incident.hard,
      },
    });
    const latencyS = ((incident.detectedAt - incident.faultAt) / 1000).toFixed(1);
    // Users number incidents per job (#1 is the job's first); `id` is the store's, global across jobs.
    const number = (await store.listIncidents(job.id)).filter((i) => i.id <= id).length;
    await ctx.event(
      job.id,
      "incident",
      `#${number} ${incident.cause} on rank ${incident.culpritRank ?? "-"} (${incident.culpritNode ?? "-"}), detected in ${latencyS}s: ${incident.summary}`,
      {
        incident: id,
        number,
        attempt: attempt.n,
        rank: incident.culpritRank,
        node: incident.culpritNode,
        cause: incident.cause,
      },
    );
    if (node && infrastructure) {
      await store.addStrike({
        node: node.name,
        t: incident.detectedAt,
        jobId: job.id,
        incidentId: id,
        cause: incident.cause,
      });
      const within = `within ${formatWindow(this.inventory.strikeWindowSeconds())}`;
      if (cordon && !(probe?.status === "fatal" && node.cordoned)) {
        await store.updateNode(node.name, {
          cordoned: true,
          reason: `${node.strikes + 1} strike(s) ${within}; last: ${incident.cause}: ${incident.summary}`,
        });
      }
      if (cordon && !node.cordoned) {
        await this.inventory.tellManager(
          node.name,
          node.pool,
          true,
          `${incident.cause} in job ${job.id}, ${node.strikes + 1} strike(s) ${within}: ${incident.summary}`,
        );
        await ctx.event(
          job.id,
          "node.cordoned",
          `cordoned ${node.name} after ${node.strikes + 1} strike(s) ${within}${incident.hard ? (incident.cause === "host" ? " (the host was lost)" : " (hard device evidence)") : ""}`,
          {
            node: node.name,
          },
        );
      }
    }
    const loop =
      incident.retryable === false
        ? `${incident.cause} error that no restart can fix: ${incident.summary}; fix it, then run the job again`
        : job.spec.workload?.restart === "always"
          ? null // a replica restarts whatever it died of (its restart budget still counts)
          : await this.crashLoop(job);
    if (loop) {
      await ctx.setJobState(job, JobState.Failed, loop);
      await ctx.event(job.id, "job.failed", loop);
      return { action: "stopped" };
    }
    if (decision.action === "fail") {
      await ctx.setJobState(job, JobState.Failed, decision.reason);
      await ctx.event(job.id, "job.failed", decision.reason);
      return { action: "stopped" };
    }
    await store.updateJob(job.id, { restarts: job.restarts + 1 });
    await ctx.setJobState(job, JobState.Recovering, null);
    const outcome: IncidentOutcome = {
      action: "restart",
      notBefore: ctx.now() + decision.backoffMs,
      avoid: incident.culpritNode ? [incident.culpritNode] : [],
    };
    await ctx.event(
      job.id,
      "job.restarting",
      `restart ${job.restarts + 1} of ${job.spec.recovery.maxRestarts} in ${decision.backoffMs} ms`,
    );
    return outcome;
  }

  /** Pools on which this job had too many infrastructure incidents lately (the job leaves them). */
  async failingPools(job: JobRecord): Promise<string[]> {
    const records = await this.ctx.store.listIncidents(job.id);
    const incidents = records.map((i) => ({
      pool: typeof i.evidence.pool === "string" ? i.evidence.pool : "",
      at: i.detectedAt,
      infrastructure: !nodeInnocentCauses.has(i.cause),
    }));
    const now = this.ctx.now();
    // A pool whose whole network was measured degraded (supervisor/gray.ts) is left at once, for the same window.
    const since = now - job.spec.recovery.poolFailures.windowSeconds * 1000;
    const degraded = new Set(
      records.filter((i) => i.evidence.poolDegraded === true && i.detectedAt >= since).map((i) => i.evidence.pool),
    );
    return this.ctx.cluster.pools
      .map((p) => p.name)
      .filter((p) => degraded.has(p) || poolKeepsFailing(incidents, p, now, job.spec.recovery.poolFailures));
  }

  /** A reason to stop when the same software error repeats at the same step on different nodes; else null. */
  private async crashLoop(job: JobRecord): Promise<string | null> {
    const history: CrashRecord[] = (await this.ctx.store.listIncidents(job.id)).map((i) => ({
      attempt: i.attempt,
      cause: i.cause,
      signature: typeof i.evidence.signature === "string" ? i.evidence.signature : "",
      step: typeof i.evidence.lastStep === "number" ? i.evidence.lastStep : null,
      nodes: Array.isArray(i.evidence.nodes) ? (i.evidence.nodes as string[]) : [],
    }));
    const verdict = detectCrashLoop(history, job.spec.recovery.crashLoopAttempts);
    if (!verdict.deterministic) return null;
    const first = verdict.evidence[0]!;
    return (
      `deterministic software error: "${first.signature}" at step ${first.step ?? "?"} on ` +
      `${verdict.evidence.length} attempts (${verdict.evidence.map((e) => `#${e.attempt} on ${e.nodes.join(",")}`).join("; ")}); ` +
      "fix the code, then run the job again"
    );
  }
}
