import { randomInt } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { decideEviction, type EvictDecision } from "../core/evict.js";
import { defaultLocalizePolicy, localizeNetwork, parseProbeOutput, type NetworkVerdict } from "../core/netlocalize.js";
import { median, type SlowdownVerdict } from "../core/slowdown.js";
import type { PoolSpec } from "../core/spec.js";
import { cpuSecondsPerStep, findStraggler, type CpuSample, type StragglerVerdict } from "../core/straggler.js";
import { networkProbeArgv } from "../executors/port.js";
import type { AttemptRecord, JobRecord, RankRecord } from "../store/port.js";
import type { SupervisorContext } from "./context.js";
import type { Inventory } from "./inventory.js";
import { jobReport } from "./report.js";
import type { IncidentFacts } from "./verdict.js";

/** The full probe gives up after this long (s); runOnNodes gets 20 s more to start it and collect what it printed. */
export const grayProbeTimeoutS = 60;
/** The pre-flight probe (0.25 s per pair) gives up after this long (s). */
export const preflightProbeTimeoutS = 20;
/** CPU samples kept per rank (one per look, about one a second). */
const maxCpuSamples = 600;
/** Gangs up to this many ranks have their CPU time sampled (a file or /proc read per rank and look). */
const maxCpuSampledRanks = 512;
/** A job's CPU samples are dropped once it has not been looked at for this long (it ended). */
const cpuForgetMs = 10 * 60_000;
/** What a restart costs when the ledger has measured none yet (s): stop, relaunch, first step. */
const defaultRestartS = 30;
/**
 * A slowdown ridden out ("not worth a restart") is decided again when its factor has grown by this much since the
 * decision (1.25: from 1.2x to 1.5x, from 2x to 2.5x): the hosts are probed again and the arithmetic redone.
 */
export const redecideGrowth = 1.25;

/** What the background look at a slow attempt found: the network probe's verdict and the compute outlier. */
export interface Localization {
  network: NetworkVerdict | null;
  straggler: StragglerVerdict | null;
  /** Why a part could not be measured (probe refused, output not understood). */
  problems: string[];
}

/** One job's slowdown in progress: detected, localized in the background, decided, maybe ridden out. */
interface GrayState {
  attempt: number;
  detectedAt: number;
  /** The verdict that opened it. */
  slowdown: SlowdownVerdict;
  /** Null while the probe runs (the tick never waits for it). */
  localization: Localization | null;
  /** The incident the run goes on through (the decision was to continue), until the pace recovers. */
  openIncident: number | null;
  /** The slowdown factor the last decision to continue was made at: a larger one is decided again. */
  decidedFactor: number | null;
  /** The slowdown grew: the hosts are being probed again for a new decision. */
  reviewing: boolean;
}

/** What the network pre-flight left out (cordoned), and the sentence the next attempt's event carries. */
export interface PreflightResult {
  excluded: string[];
  note: string | null;
}

/** What a look at the pace leads to: nothing, or an eviction (the loop stops the attempt through incidents.ts). */
export type GrayAction =
  { kind: "none" } | { kind: "evict"; facts: IncidentFacts; scope: "host" | "pool"; avoid: string[] };

/**
 * Gray failures in the loop: a slowdown verdict starts the localization in the background (network probe across the
 * attempt's hosts through the executor, compute outliers from the ranks' compute time), a later tick decides with
 * core/evict.ts whether evicting pays, and either hands the loop an incident that ends the attempt (cordon, restart
 * elsewhere) or records one the run goes on through, charged as degraded time until the pace recovers.
 */
export class GrayFailures {
  private readonly states = new Map<string, GrayState>();
  private readonly cpu = new Map<string, { attempt: number; seenAt: number; byRank: Map<number, CpuSample[]> }>();
  private readonly background = new Set<Promise<void>>();
  /**
   * What a healthy pair of a pool reached in an earlier probe of the same mode (Gbit/s, the median of its fast pairs):
   * with it a probe where every pair is slow says "the pool is degraded" (without it, pairs slow alike look healthy).
   */
  private readonly expected = new Map<string, number>();

  constructor(
    private readonly ctx: SupervisorContext,
    private readonly inventory: Inventory,
  ) {}

  /** Waits for the probes still running (for a clean stop). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.background]);
  }

  /** Whether a slowdown of this job is being localized or ridden out. */
  open(jobId: string): boolean {
    return this.states.has(jobId);
  }

  /** A look at the attempt's pace (about once a second): slow or not, this is where slowdowns open and close. */
  async onPace(job: JobRecord, attempt: AttemptRecord, pace: SlowdownVerdict): Promise<GrayAction> {
    const gang = attempt.nodes.length * job.spec.procsPerNode;
    const ranks = (): Promise<RankRecord[]> => this.ctx.store.listRanks(job.id, attempt.n);
    if (gang <= maxCpuSampledRanks) await this.sampleCpu(job.id, attempt, await ranks());
    let st = this.states.get(job.id);
    if (st && st.attempt !== attempt.n) {
      this.states.delete(job.id);
      st = undefined;
    }
    if (!st) {
      if (!pace.slow) return { kind: "none" };
      st = {
        attempt: attempt.n,
        detectedAt: this.ctx.now(),
        slowdown: pace,
        localization: null,
        openIncident: null,
        decidedFactor: null,
        reviewing: false,
      };
      this.states.set(job.id, st);
      await this.ctx.event(job.id, "slowdown.detected", `the run is slow: ${pace.reason}; localizing`, {
        attempt: attempt.n,
        factor: pace.factor,
        since: pace.since,
        baselineStepS: pace.baselineStepS,
        recentStepS: pace.recentStepS,
      });
      this.localizeInBackground(job, attempt, await ranks(), st);
      return { kind: "none" };
    }
    if (st.openIncident !== null) {
      if (!pace.slow) {
        await this.ctx.event(job.id, "slowdown.recovered", `the pace recovered: ${pace.reason}`, {
          incident: st.openIncident,
          attempt: attempt.n,
          to: this.ctx.now(),
        });
        this.states.delete(job.id);
        return { kind: "none" };
      }
      // Ridden out, and slower since: probe again, then the arithmetic again with the new factor.
      if (st.reviewing)
        return st.localization === null ? { kind: "none" } : this.decide(job, attempt, await ranks(), st, pace);
      if (pace.factor !== null && st.decidedFactor !== null && pace.factor >= st.decidedFactor * redecideGrowth) {
        await this.ctx.event(
          job.id,
          "slowdown.worsened",
          `the slowdown grew from ${st.decidedFactor.toFixed(2)}x to ${pace.factor.toFixed(2)}x since the decision ` +
            `to go on: probing the hosts again to decide again (${pace.reason})`,
          { incident: st.openIncident, attempt: attempt.n, from: st.decidedFactor, to: pace.factor },
        );
        st.reviewing = true;
        st.localization = null;
        this.localizeInBackground(job, attempt, await ranks(), st, this.ctx.now());
      }
      return { kind: "none" };
    }
    if (st.localization === null) return { kind: "none" };
    if (!pace.slow) {
      // Recovered while it was being localized: nothing to charge beyond what the ledger sees in the step times.
      await this.ctx.event(job.id, "slowdown.recovered", `the pace recovered before a decision: ${pace.reason}`, {
        attempt: attempt.n,
        to: this.ctx.now(),
      });
      this.states.delete(job.id);
      return { kind: "none" };
    }
    return this.decide(job, attempt, await ranks(), st, pace);
  }

  /**
   * Pre-flight: the network probe cut short across the hosts an attempt is about to run on (pools with
   * `health.networkProbe`, on by default for Slurm pools), so a restart does not land on a link that has already collapsed. A named host is
   * cordoned (Slurm: drained, with the measured table as reason) and left out; the next pass places again.
   */
  async preflight(job: JobRecord, poolName: string, nodes: readonly string[]): Promise<PreflightResult> {
    const pool = this.ctx.pool(poolName);
    if (!pool || !probesNetwork(pool)) return { excluded: [], note: null };
    const problems: string[] = [];
    let verdict: NetworkVerdict | null;
    try {
      verdict = await this.probeNetwork(pool, nodes, "preflight", path.join(this.ctx.home, "jobs", job.id), problems);
    } catch (err) {
      this.ctx.log(`${job.id}: network pre-flight of ${nodes.join(",")}: ${(err as Error).message}`);
      return { excluded: [], note: null };
    }
    if (!verdict || verdict.kind !== "host") {
      if (problems.length > 0) this.ctx.log(`${job.id}: network pre-flight: ${problems.join("; ")}`);
      return { excluded: [], note: null };
    }
    const excluded = verdict.culprits.filter((c) => nodes.includes(c));
    for (const node of excluded) {
      await this.inventory.setCordon(node, true, `switchyard network pre-flight: ${verdict.evidence}`);
    }
    const note = excluded.length > 0 ? `network pre-flight left out ${excluded.join(", ")}: ${verdict.evidence}` : null;
    if (note) {
      await this.ctx.event(job.id, "preflight.network", note, {
        excluded,
        table: verdict.table,
        pool: poolName,
      });
    }
    return { excluded, note };
  }

  /** Runs the network probe and the compute-outlier check; the result lands in `st` for a later tick. */
  private localizeInBackground(
    job: JobRecord,
    attempt: AttemptRecord,
    ranks: RankRecord[],
    st: GrayState,
    computeSince?: number,
  ): void {
    const task = (async () => {
      const problems: string[] = [];
      let network: NetworkVerdict | null = null;
      const pool = this.ctx.pool(attempt.pool);
      try {
        if (pool && !probesNetwork(pool)) {
          problems.push(`network probe: off for pool ${pool.name} (a local pool's nodes share one machine's network)`);
        }
        network =
          pool && probesNetwork(pool)
            ? await this.probeNetwork(pool, attempt.nodes, "full", path.join(this.ctx.home, "jobs", job.id), problems)
            : null;
      } catch (err) {
        problems.push(`network probe: ${(err as Error).message}`);
      }
      let straggler: StragglerVerdict | null = null;
      try {
        straggler = await this.compute(job, attempt, ranks, computeSince ?? st.slowdown.since ?? st.detectedAt);
      } catch (err) {
        problems.push(`compute time: ${(err as Error).message}`);
      }
      st.localization = { network, straggler, problems };
    })();
    this.background.add(task);
    void task.finally(() => this.background.delete(task));
  }

  /**
   * The network probe across `nodes` (plus one spare host of the pool when there are only two: a lone slow pair
   * cannot say which end is slow). Null when it cannot run (one host, an executor that cannot run commands).
   */
  async probeNetwork(
    pool: PoolSpec,
    nodes: readonly string[],
    mode: "full" | "preflight",
    jobDir: string,
    problems: string[],
  ): Promise<NetworkVerdict | null> {
    const executor = this.ctx.executor;
    if (!executor.runOnNodes) {
      problems.push(`network probe: the ${executor.kind} executor cannot run commands on hosts`);
      return null;
    }
    const hosts = [...new Set(nodes)];
    if (hosts.length === 2) {
      const spare = (await this.ctx.store.listNodes()).find(
        (n) => n.pool === pool.name && !n.cordoned && !hosts.includes(n.name),
      );
      if (spare) hosts.push(spare.name);
    }
    if (hosts.length < 2) return null;
    const timeoutS = mode === "full" ? grayProbeTimeoutS : preflightProbeTimeoutS;
    const argv = networkProbeArgv({
      python:
        pool.executor === "slurm" ? (pool.slurm?.agentPython ?? "python3") : process.env.SWITCHYARD_PYTHON || "python3",
      mode,
      portBase: randomInt(20_000, 40_000),
      timeoutS,
    });
    const runs = await executor.runOnNodes(pool, hosts, argv, { timeoutMs: (timeoutS + 20) * 1000, jobDir });
    const parsed = parseProbeOutput(runs.map((r) => r.stdout));
    problems.push(...parsed.problems.slice(0, 5));
    for (const r of runs) {
      if (r.code !== 0) problems.push(`probe on ${r.node}: exit ${r.code ?? "none"}: ${r.stderr.trim().slice(-200)}`);
    }
    if (parsed.pairs.length === 0) {
      problems.push("network probe: no pair measured");
      return null;
    }
    const key = `${pool.name}/${mode}`;
    const known = this.expected.get(key);
    const verdict = localizeNetwork(parsed.pairs, { ...defaultLocalizePolicy, expectedGbitS: known ?? null });
    if (verdict.kind === "healthy" || verdict.kind === "host") {
      const fast = verdict.table
        .filter((p) => !verdict.slowPairs.includes(p))
        .map((p) => p.gbitS)
        .filter((r): r is number => r !== null && r > 0);
      if (fast.length > 0) this.expected.set(key, Math.max(known ?? 0, median(fast)));
    }
    return verdict;
  }

  /**
   * Compute time per step of each rank since the slowdown began: the SDK's compute_s where the script reports it,
   * else CPU time per step from the CPU samples this loop keeps (the node agent's heartbeat or /proc).
   */
  private async compute(
    job: JobRecord,
    attempt: AttemptRecord,
    ranks: RankRecord[],
    since: number,
  ): Promise<StragglerVerdict> {
    const cpu = this.cpu.get(job.id);
    const series = await Promise.all(
      ranks.map(async (r) => {
        const steps = (await this.ctx.store.listSteps(job.id, { rank: r.rank, afterT: since - 1 })).filter(
          (s) => s.attempt === attempt.n,
        );
        const sdk = steps.map((s) => s.computeS).filter((v): v is number => v !== null);
        const computeS =
          sdk.length >= steps.length / 2 && sdk.length > 0
            ? sdk
            : cpuSecondsPerStep(cpu?.attempt === attempt.n ? (cpu.byRank.get(r.rank) ?? []) : [], steps);
        return { rank: r.rank, node: r.node, computeS };
      }),
    );
    return findStraggler(series);
  }

  /** One CPU sample per rank: the Slurm node agent's heartbeat (rank-N.hb, overwritten) or /proc for a local pid. */
  private async sampleCpu(jobId: string, attempt: AttemptRecord, ranks: RankRecord[]): Promise<void> {
    const now = this.ctx.now();
    for (const [id, e] of this.cpu) if (now - e.seenAt > cpuForgetMs) this.cpu.delete(id);
    if (ranks.length > maxCpuSampledRanks) return;
    let entry = this.cpu.get(jobId);
    if (!entry || entry.attempt !== attempt.n) {
      entry = { attempt: attempt.n, seenAt: now, byRank: new Map() };
      this.cpu.set(jobId, entry);
    }
    entry.seenAt = now;
    for (const r of ranks) {
      if (r.exitedAt !== null) continue;
      const sample = await readCpu(attempt.dir, r);
      if (!sample) continue;
      const list = entry.byRank.get(r.rank) ?? [];
      if (list.length === 0 || list[list.length - 1]!.t < sample.t) list.push(sample);
      if (list.length > maxCpuSamples) list.splice(0, list.length - maxCpuSamples);
      entry.byRank.set(r.rank, list);
    }
  }

  /** Restart or continue, with the measured figures; evict hands the loop the incident, continue records it here. */
  private async decide(
    job: JobRecord,
    attempt: AttemptRecord,
    ranks: RankRecord[],
    st: GrayState,
    pace: SlowdownVerdict,
  ): Promise<GrayAction> {
    const { store } = this.ctx;
    const loc = st.localization!;
    const now = this.ctx.now();
    const factor = Math.max(1, pace.factor ?? st.slowdown.factor ?? 1);
    const since = st.slowdown.since ?? st.detectedAt;
    const net = loc.network;
    const strag = loc.straggler;

    let cause = "degraded";
    let culpritNode: string | null = null;
    let scope: "host" | "pool" | "none" = "none";
    if (net?.kind === "host" && net.culprits.length === 1) {
      cause = "network";
      culpritNode = net.culprits[0]!;
      scope = "host";
    } else if (strag?.culpritNode) {
      cause = "straggler";
      culpritNode = strag.culpritNode;
      scope = "host";
    } else if (net?.kind === "pool") {
      scope = "pool";
    }
    const culpritRank =
      culpritNode === null
        ? null
        : cause === "straggler"
          ? (strag?.slowRanks[0] ?? null)
          : (ranks.find((r) => r.node === culpritNode)?.rank ?? null);

    const progress = await store.rankProgress(job.id, attempt.n);
    const lastStep = progress.find((p) => p.rank === 0)?.lastStep ?? null;
    const verified = (await store.listCheckpoints(job.id)).filter(
      (c) => c.verified && (lastStep === null || c.step <= lastStep),
    );
    const newest = Math.max(attempt.resumeStep ?? 0, ...verified.map((c) => c.step));
    const stepsSinceCheckpoint = lastStep === null ? 0 : Math.max(0, lastStep - newest);
    const remainingSteps = job.spec.steps != null && lastStep !== null ? Math.max(0, job.spec.steps - lastStep) : null;

    // Can the job run without what is evicted? A spare host in the pool, a shrink, or another pool.
    const nodes = await store.listNodes();
    let paceAfterEviction = 1;
    let blocked: string | null = null;
    if (scope === "host") {
      const spare = nodes.some(
        (n) => n.pool === attempt.pool && !n.cordoned && n.name !== culpritNode && !attempt.nodes.includes(n.name),
      );
      const otherPool = this.poolsOf(job).some((p) => p !== attempt.pool);
      if (!spare && !otherPool) {
        if (job.spec.minNodes < attempt.nodes.length)
          paceAfterEviction = attempt.nodes.length / (attempt.nodes.length - 1);
        else blocked = `no spare host in ${attempt.pool} and the job cannot shrink`;
      }
    } else if (scope === "pool") {
      if (!this.poolsOf(job).some((p) => p !== attempt.pool)) blocked = "no other pool to move to";
    } else {
      blocked = "no culprit to evict";
    }

    const decision: EvictDecision = decideEviction({
      factor,
      remainingSteps,
      baselineStepS: pace.baselineStepS ?? st.slowdown.baselineStepS ?? 0,
      restartS: await this.restartS(job, attempt),
      stepsSinceCheckpoint,
      paceAfterEviction,
    });
    const evict = decision.evict && blocked === null;
    const sentence = blocked && decision.evict ? `${decision.sentence}, but ${blocked}: continue` : decision.sentence;
    const speed = 1 / factor;
    // A decision made again (the slowdown grew): the incident ridden out so far keeps the time up to now.
    const escalating = st.openIncident !== null;
    const where =
      scope === "host"
        ? cause === "network"
          ? `host ${culpritNode}'s link`
          : `host ${culpritNode}'s compute (rank ${culpritRank ?? "?"})`
        : scope === "pool"
          ? `pool ${attempt.pool}'s network`
          : "no single host";
    const summary = `${factor.toFixed(1)}x slower (${pace.reason}); ${where}; ${sentence}`;
    const evidence: Record<string, unknown> = {
      slowdown: {
        factor,
        baselineStepS: pace.baselineStepS,
        recentStepS: pace.recentStepS,
        reason: pace.reason,
        detectedAt: st.detectedAt,
      },
      network: net ? { kind: net.kind, culprits: net.culprits, table: net.table, evidence: net.evidence } : null,
      straggler: strag
        ? { slowRanks: strag.slowRanks, table: strag.table, expectedS: strag.expectedS, evidence: strag.evidence }
        : null,
      problems: loc.problems,
      decision: { evict, sentence, continueCostS: decision.continueCostS, evictCostS: decision.evictCostS },
      degraded: escalating ? { from: now, to: now, speed } : { from: since, to: evict ? now : null, speed },
      ...(escalating ? { escalatedFrom: st.openIncident } : {}),
      endedAttempt: evict,
      ...(scope === "pool" ? { poolDegraded: true } : {}),
    };
    const facts: IncidentFacts = {
      cause,
      culpritRank,
      culpritNode,
      faultAt: since,
      detectedAt: st.detectedAt,
      summary,
      hard: scope === "host",
      signature: "",
      lastStep,
      evidence,
    };
    if (escalating && !evict) {
      // Still not worth a restart at the new factor: say the arithmetic again, and decide again if it grows further.
      st.reviewing = false;
      st.decidedFactor = factor;
      await this.ctx.event(
        job.id,
        "slowdown.continue",
        `still going on, now at ${Math.round(speed * 100)}% speed: ${sentence}`,
        { incident: st.openIncident, attempt: attempt.n, factor },
      );
      return { kind: "none" };
    }
    if (evict) {
      this.states.delete(job.id);
      if (escalating) {
        await this.ctx.event(
          job.id,
          "slowdown.escalated",
          `the slowdown ridden out grew to ${factor.toFixed(2)}x: restarting pays now`,
          { incident: st.openIncident, attempt: attempt.n, to: now, factor },
        );
      }
      await this.ctx.event(job.id, "slowdown.evict", `evicting ${where}: ${sentence}`, { attempt: attempt.n });
      const poolNodes = nodes.filter((n) => n.pool === attempt.pool).map((n) => n.name);
      return {
        kind: "evict",
        facts,
        scope: scope === "pool" ? "pool" : "host",
        avoid: scope === "pool" ? poolNodes : culpritNode ? [culpritNode] : [],
      };
    }
    // Continue: the incident stays open as degraded time until the pace recovers or the attempt ends.
    const id = await store.addIncident({
      jobId: job.id,
      attempt: attempt.n,
      cause,
      culpritRank,
      culpritNode,
      detectedAt: st.detectedAt,
      summary,
      evidence: {
        ...evidence,
        faultAt: since,
        signature: "",
        lastStep,
        pool: attempt.pool,
        nodes: attempt.nodes,
        hard: false,
      },
    });
    st.openIncident = id;
    st.decidedFactor = factor;
    const number = (await store.listIncidents(job.id)).filter((i) => i.id <= id).length;
    const latencyS = ((st.detectedAt - since) / 1000).toFixed(1);
    await this.ctx.event(
      job.id,
      "incident",
      `#${number} ${cause} on rank ${culpritRank ?? "-"} (${culpritNode ?? "-"}), detected in ${latencyS}s: ${summary}`,
      { incident: id, number, attempt: attempt.n, rank: culpritRank, node: culpritNode, cause },
    );
    await this.ctx.event(job.id, "slowdown.continue", `going on at ${Math.round(speed * 100)}% speed: ${sentence}`, {
      incident: id,
      attempt: attempt.n,
    });
    return { kind: "none" };
  }

  /** The pools the job may run on (none named: any pool of the cluster). */
  private poolsOf(job: JobRecord): string[] {
    return job.spec.pools.length > 0 ? job.spec.pools : this.ctx.cluster.pools.map((p) => p.name);
  }

  /** The measured restart (mean time from an incident to the next attempt's first step), else the first step's. */
  private async restartS(job: JobRecord, attempt: AttemptRecord): Promise<number> {
    const report = await jobReport(this.ctx.store, job.id, this.ctx.now()).catch(() => null);
    const measured = (report?.ledger.incidents ?? [])
      .map((i) => i.timeToFirstStepMs)
      .filter((v): v is number => v !== null && Number.isFinite(v));
    if (measured.length > 0) return measured.reduce((a, b) => a + b, 0) / measured.length / 1000;
    const first = (await this.ctx.store.listSteps(job.id, { rank: 0, afterT: attempt.startedAt - 1 })).find(
      (s) => s.attempt === attempt.n,
    );
    return first ? Math.max(0, first.t - attempt.startedAt) / 1000 : defaultRestartS;
  }
}

/** Whether the network probe runs on a pool's hosts: `health.networkProbe`, else on for every pool but local ones. */
export function probesNetwork(pool: PoolSpec): boolean {
  return pool.health?.networkProbe ?? pool.executor !== "local";
}

/** A rank's CPU ticks now: the Slurm node agent's heartbeat file, else /proc/<pid>/stat for a rank on this host. */
async function readCpu(attemptDir: string, r: RankRecord): Promise<CpuSample | null> {
  const hb = await readFile(path.join(attemptDir, `rank-${r.rank}.hb`), "utf8").catch(() => null);
  if (hb !== null) {
    try {
      const o = JSON.parse(hb) as { t?: unknown; cpuTicks?: unknown };
      if (typeof o.t === "number" && typeof o.cpuTicks === "number") return { t: o.t, cpuTicks: o.cpuTicks };
    } catch {
      return null;
    }
    return null;
  }
  const pid = r.rankPid ?? r.pid;
  if (pid == null || process.platform !== "linux") return null;
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => null);
  if (stat === null) return null;
  // Fields after the command (which may hold spaces) in parentheses: utime and stime are the 14th and 15th.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(rest[11]) + Number(rest[12]);
  return Number.isFinite(ticks) ? { t: Date.now(), cpuTicks: ticks } : null;
}
