import { randomBytes } from "node:crypto";
import { mkdir, rename, rm, symlink } from "node:fs/promises";
import { createServer } from "node:net";
import path from "node:path";
import { attributeFailure, type RankExit } from "../core/culprit.js";
import type { Clock } from "../core/clock.js";
import { classifyFailure } from "../core/classify.js";
import { detectCrashLoop, type CrashRecord } from "../core/crashloop.js";
import { hangCulprit, hangTimeoutMs, judgeHang, type RankProgress } from "../core/hang.js";
import { decideRecovery, placeAttempt, poolKeepsFailing } from "../core/recovery.js";
import type { ClusterSpec, CompiledJobSpec, PoolSpec } from "../core/spec.js";
import { AttemptState, JobState, assertJobTransition, terminalJobStates } from "../core/states.js";
import type { Executor, RankHandle, RankStatus } from "../executors/port.js";
import { findPython, pythonPlaceholder } from "../executors/python.js";
import { localNodeNames } from "../executors/local/local.js";
import type { AttemptRecord, JobRecord, RankRecord, StepSample, Store } from "../store/port.js";
import { FaultModel } from "./fault-model.js";
import { findResumePoint, pruneCheckpoints, verifyCheckpoint } from "./checkpoint-scan.js";
import { parseLogProgress, parseReportLine, readNewLines, tailLines } from "./reports.js";

export interface SupervisorOptions {
  store: Store;
  executor: Executor;
  clock: Clock;
  cluster: ClusterSpec;
  /** SWITCHYARD_HOME: attempt folders go under jobs/. */
  home: string;
  /** How often running jobs are looked at. */
  pollMs?: number;
  log?: (msg: string) => void;
}

interface JobRuntime {
  /** Earliest time the next attempt may launch (backoff). */
  nextLaunchAt: number;
  busy: boolean;
  /** Log offsets for regex progress (re-read from 0 after a restart; samples are idempotent). */
  logOffsets: Map<number, number>;
  waitingNoted: boolean;
  /** The last culprit's node: the next attempt goes elsewhere when it can. */
  avoid: string[];
}

interface Ingested {
  steps: boolean;
  nan: { rank: number; step: number; t: number } | null;
}

interface IncidentFacts {
  cause: string;
  culpritRank: number | null;
  culpritNode: string | null;
  faultAt: number;
  detectedAt: number;
  summary: string;
  hard: boolean;
  signature: string;
  /** False when no restart can help (the script cannot start, a rank table is wrong): the job stops. */
  retryable?: boolean;
  lastStep: number | null;
  evidence: Record<string, unknown>;
}

/**
 * `checkpoints/<name>/latest` points at the run (`<job id>` folder) that verified a checkpoint last: what `serve` and
 * people load "the newest trained weights of <name>" from. Replaced atomically (a new link renamed over the old).
 */
export async function pointLatestAt(runDir: string): Promise<void> {
  const link = path.join(path.dirname(runDir), "latest");
  const tmp = `${link}.tmp-${process.pid}-${randomBytes(3).toString("hex")}`;
  try {
    await symlink(path.basename(runDir), tmp);
    await rename(tmp, link);
  } catch {
    await rm(tmp, { force: true }).catch(() => undefined);
  }
}

/** Causes that say nothing about the node: no strike, no cordon. */
const nodeInnocentCauses: ReadonlySet<string> = new Set(["software", "numerical"]);

/** The faulthandler dump in a log tail ("Thread 0x... (most recent call first):" and its frames). */
export function stackExcerpt(tail: readonly string[]): string[] {
  const start = tail.findIndex((l) => /^(Thread|Current thread) 0x[0-9a-f]+ \(most recent call first\):/.test(l));
  return start < 0 ? [] : tail.slice(start, start + 40);
}

/**
 * Drives every job through core's policies: launch, watch, attribute failures, cordon, resume. The only place that
 * decides. All state lives in the store and on disk, so a new Supervisor over the same home re-adopts running ranks.
 */
export class Supervisor {
  private readonly runtimes = new Map<string, JobRuntime>();
  private readonly faultModels = new Map<string, FaultModel>();
  private lastFaultDraw = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private stopped = false;

  constructor(private readonly opts: SupervisorOptions) {}

  get cluster(): ClusterSpec {
    return this.opts.cluster;
  }

  private get store(): Store {
    return this.opts.store;
  }

  async start(): Promise<void> {
    await this.store.syncNodes(
      this.opts.cluster.pools.flatMap((p) =>
        localNodeNames(p.name, p.nodes).map((name) => ({ name, pool: p.name, devices: p.devicesPerNode })),
      ),
    );
    for (const job of await this.store.listJobs({ activeOnly: true })) {
      await this.event(job.id, "supervisor.adopted", `control plane restarted; re-adopting job in state ${job.state}`);
    }
    this.stopped = false;
    this.timer = setInterval(() => void this.tick(), this.opts.pollMs ?? 200);
    await this.tick();
  }

  /** Stops watching. Running ranks are left alone: they outlive the control plane by design. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    while (this.ticking) await new Promise((r) => setTimeout(r, 10));
  }

  async submit(spec: CompiledJobSpec): Promise<JobRecord> {
    const id = `${spec.name}-${randomBytes(3).toString("hex")}`;
    // A new submission is a new run: with no checkpoint.dir in the spec it gets a folder of its own.
    const resolved = this.resolveCommand(
      spec.checkpoint.perRun
        ? { ...spec, checkpoint: { ...spec.checkpoint, dir: path.join(spec.checkpoint.dir, id) } }
        : spec,
    );
    const now = this.opts.clock.now();
    await this.store.createJob({ id, name: spec.name, spec: resolved, state: JobState.Pending, createdAt: now });
    await this.event(id, "job.submitted", `job ${id} submitted from ${spec.source}`, {
      command: resolved.command,
      pools: resolved.pools,
    });
    await this.tick();
    return (await this.store.getJob(id))!;
  }

  private resolveCommand(spec: CompiledJobSpec): CompiledJobSpec {
    if (!spec.command.includes(pythonPlaceholder)) return spec;
    const python = findPython();
    if (!python) {
      throw new Error(
        `${spec.source}: command uses ${pythonPlaceholder} but no Python interpreter was found ` +
          "(fix: install python3, or set SWITCHYARD_PYTHON to an interpreter)",
      );
    }
    return { ...spec, command: spec.command.map((c) => (c === pythonPlaceholder ? python.path : c)) };
  }

  async cancel(idOrName: string): Promise<JobRecord> {
    const job = await this.store.getJob(idOrName);
    if (!job) throw new Error(`no job named ${idOrName}`);
    if (terminalJobStates.has(job.state)) return job;
    const rt = this.runtime(job.id);
    while (rt.busy) await new Promise((r) => setTimeout(r, 10));
    rt.busy = true;
    try {
      const attempt = await this.currentAttempt(job.id);
      if (attempt && attempt.endedAt === null) {
        await this.stopAttempt(job, attempt, AttemptState.Cancelled, "cancelled by user");
      }
      await this.setJobState(job, JobState.Cancelled, "cancelled by user");
      await this.event(job.id, "job.cancelled", "job cancelled by user");
    } finally {
      rt.busy = false;
    }
    return (await this.store.getJob(job.id))!;
  }

  async setCordon(node: string, cordoned: boolean, reason: string): Promise<void> {
    const known = (await this.store.listNodes()).find((n) => n.name === node);
    if (!known) throw new Error(`no node named ${node}`);
    await this.store.updateNode(node, cordoned ? { cordoned, reason } : { cordoned, reason: null, strikes: 0 });
    await this.event(null, cordoned ? "node.cordoned" : "node.uncordoned", `${node}: ${reason}`, { node });
  }

  /** Ranks of a job's current attempt, for chaos tooling and stack dumps. */
  async currentRanks(jobId: string): Promise<{ attempt: AttemptRecord; ranks: RankRecord[] } | null> {
    const attempt = await this.currentAttempt(jobId);
    if (!attempt) return null;
    return { attempt, ranks: await this.store.listRanks(jobId, attempt.n) };
  }

  signalRank(rank: RankRecord, signal: NodeJS.Signals): boolean {
    return this.opts.executor.signalRank(rank, signal);
  }

  private runtime(jobId: string): JobRuntime {
    let rt = this.runtimes.get(jobId);
    if (!rt) {
      rt = { nextLaunchAt: 0, busy: false, logOffsets: new Map(), waitingNoted: false, avoid: [] };
      this.runtimes.set(jobId, rt);
    }
    return rt;
  }

  private async currentAttempt(jobId: string): Promise<AttemptRecord | undefined> {
    const attempts = await this.store.listAttempts(jobId);
    return attempts[attempts.length - 1];
  }

  /** One pass over every active job. Never throws: a bad job must not stop the others from being watched. */
  async tick(): Promise<void> {
    if (this.ticking || this.stopped) return;
    this.ticking = true;
    try {
      for (const job of await this.store.listJobs({ activeOnly: true })) {
        const rt = this.runtime(job.id);
        if (rt.busy) continue;
        rt.busy = true;
        try {
          await this.advance(job, rt);
        } catch (err) {
          this.opts.log?.(`job ${job.id}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        } finally {
          rt.busy = false;
        }
      }
    } finally {
      this.ticking = false;
    }
  }

  private async advance(job: JobRecord, rt: JobRuntime): Promise<void> {
    const attempt = await this.currentAttempt(job.id);
    const attemptLive = attempt !== undefined && attempt.endedAt === null;
    if (!attemptLive) {
      if (job.state === JobState.Pending || job.state === JobState.Recovering) {
        if (this.opts.clock.now() >= rt.nextLaunchAt) await this.launch(job, rt);
      }
      return;
    }
    if (attempt.state === AttemptState.Launching) {
      // The control plane died while launching: the gang may be incomplete. Stop what exists and launch again,
      // without charging the job a restart (it was not the job's fault).
      await this.stopAttempt(job, attempt, AttemptState.Failed, "control plane restarted during launch");
      await this.setJobState(job, JobState.Recovering, "relaunching after an interrupted launch");
      return;
    }
    await this.watch(job, attempt, rt);
  }

  private async launch(job: JobRecord, rt: JobRuntime): Promise<void> {
    const spec = job.spec;
    const nodes = await this.store.listNodes();
    const poolNames = this.opts.cluster.pools.map((p) => p.name);
    const failing = await this.failingPools(job);
    const placement = placeAttempt({
      preference: spec.pools,
      poolsInClusterOrder: poolNames,
      nodes,
      nodesNeeded: spec.nodes,
      minNodes: spec.minNodes,
      avoidNodes: rt.avoid,
      avoidPools: failing,
    });
    if (placement.pool === null) {
      if (!rt.waitingNoted) {
        rt.waitingNoted = true;
        await this.event(job.id, "job.waiting", `waiting for capacity: ${placement.reason}`, {
          from: this.opts.clock.now(),
        });
      }
      return;
    }
    rt.waitingNoted = false;
    const pool = this.opts.cluster.pools.find((p) => p.name === placement.pool) as PoolSpec;

    const own = await findResumePoint(spec.checkpoint.dir);
    const { chosen, skipped } = own.chosen ? own : await this.foreignResumePoint(spec, own);
    const known = await this.store.listCheckpoints(job.id);
    for (const s of skipped) {
      const reason = s.verification.ok ? "" : s.verification.reason;
      await this.store.upsertCheckpoint({
        jobId: job.id,
        step: s.step,
        path: s.path,
        verified: false,
        reason,
        seenAt: this.opts.clock.now(),
      });
      await this.event(job.id, "checkpoint.skipped", `skipping checkpoint ${s.path}: ${reason}`, {
        path: s.path,
        step: s.step,
        reason,
      });
    }
    if (chosen) {
      await this.store.upsertCheckpoint({
        jobId: job.id,
        step: chosen.step,
        path: chosen.path,
        verified: true,
        reason: null,
        seenAt: this.opts.clock.now(),
      });
    }

    const previous = await this.currentAttempt(job.id);
    const n = (previous?.n ?? 0) + 1;
    const dir = path.join(this.opts.home, "jobs", job.id, `attempt-${n}`);
    await mkdir(dir, { recursive: true });
    const attempt: AttemptRecord = {
      jobId: job.id,
      n,
      state: AttemptState.Launching,
      pool: pool.name,
      nodes: placement.nodes,
      masterPort: await freePort(),
      dir,
      resumeFrom: chosen?.path ?? null,
      resumeStep: chosen?.step ?? null,
      startedAt: this.opts.clock.now(),
      endedAt: null,
      reason: null,
    };
    await this.store.createAttempt(attempt);
    await this.setJobState(job, JobState.Starting, null);
    const launched = await this.opts.executor.launch({
      jobId: job.id,
      jobName: job.name,
      attempt: n,
      dir,
      pool,
      nodes: placement.nodes,
      procsPerNode: spec.procsPerNode,
      command: spec.command,
      env: spec.env,
      workdir: spec.workdir,
      masterPort: attempt.masterPort,
      checkpointDir: spec.checkpoint.dir,
      resumeFrom: attempt.resumeFrom,
    });
    for (const r of launched) {
      await this.store.upsertRank({
        jobId: job.id,
        attempt: n,
        rank: r.rank,
        node: r.node,
        pid: r.pid,
        startTicks: r.startTicks,
        logPath: r.logPath,
        reportPath: r.reportPath,
        reportOffset: 0,
        exitCode: null,
        exitSignal: null,
        exitedAt: null,
      });
    }
    await this.store.updateAttempt(job.id, n, { state: AttemptState.Running });
    rt.logOffsets.clear();
    const from = chosen
      ? `resuming from ${chosen.path} (step ${chosen.step})`
      : "starting fresh (no verified checkpoint)";
    if (chosen && !known.some((c) => c.path === chosen.path)) {
      // Not a checkpoint this job wrote or resumed before: another run's, taken on purpose. Say so.
      const why =
        path.dirname(chosen.path) === spec.checkpoint.dir
          ? `found in the shared checkpoint.dir ${spec.checkpoint.dir}`
          : `asked for with --resume-from ${spec.checkpoint.resumeFrom ?? ""}`;
      await this.event(
        job.id,
        "checkpoint.foreign",
        `resuming from another run's checkpoint ${chosen.path} (step ${chosen.step}), ${why}`,
        { path: chosen.path, step: chosen.step },
      );
    }
    if (previous && previous.pool !== pool.name) {
      const why = failing.includes(previous.pool)
        ? `${previous.pool} failed ${spec.recovery.poolFailures.count} times within ${spec.recovery.poolFailures.windowSeconds}s`
        : `${previous.pool} cannot host the job`;
      await this.event(job.id, "job.moved", `moving from pool ${previous.pool} to ${pool.name}: ${why}`, {
        from: previous.pool,
        to: pool.name,
      });
    }
    if (placement.shrunk) {
      const message = `running on ${placement.nodes.length} of ${spec.nodes} node(s): no pool has enough healthy nodes`;
      await this.event(job.id, "job.shrunk", message, { nodes: placement.nodes.length });
    }
    await this.event(
      job.id,
      "attempt.launched",
      `attempt ${n} on ${pool.name} [${placement.nodes.join(", ")}]: ${from}`,
      {
        attempt: n,
        pool: pool.name,
        nodes: placement.nodes,
        resumeStep: chosen?.step ?? null,
        masterPort: attempt.masterPort,
      },
    );
  }

  /** Where `run --resume-from` points: a folder of step-* checkpoints, or one checkpoint, of another run. */
  private async foreignResumePoint(
    spec: CompiledJobSpec,
    own: Awaited<ReturnType<typeof findResumePoint>>,
  ): Promise<Awaited<ReturnType<typeof findResumePoint>>> {
    const from = spec.checkpoint.resumeFrom;
    if (!from) return own;
    const single = /^step-(\d+)$/.exec(path.basename(from));
    if (single) {
      const verification = await verifyCheckpoint(from, Number(single[1]));
      const candidate = { path: from, step: Number(single[1]), verification };
      return verification.ok
        ? { chosen: candidate, skipped: own.skipped }
        : { chosen: null, skipped: [...own.skipped, candidate] };
    }
    const other = await findResumePoint(from);
    return { chosen: other.chosen, skipped: [...own.skipped, ...other.skipped] };
  }

  private async watch(job: JobRecord, attempt: AttemptRecord, rt: JobRuntime): Promise<void> {
    const ranks = await this.store.listRanks(job.id, attempt.n);
    const seen = await this.ingest(job, attempt, ranks, rt);
    if (seen.steps && job.state === JobState.Starting) await this.setJobState(job, JobState.Running, null);

    const statuses = await this.opts.executor.poll(attempt.dir, ranks);
    await this.recordExits(ranks, statuses);
    const exits = toRankExits(ranks, statuses);
    if (job.state === JobState.Running) await this.injectPoolFaults(job, attempt, ranks);
    if (exits.some((e) => e.code !== 0)) {
      await this.ingest(job, attempt, ranks, rt); // the last reports before the crash count
      await this.handleCrash(job, attempt, ranks, statuses);
      return;
    }
    if (exits.length === ranks.length && ranks.length > 0) {
      await this.ingest(job, attempt, ranks, rt);
      await this.store.updateAttempt(job.id, attempt.n, {
        state: AttemptState.Succeeded,
        endedAt: this.opts.clock.now(),
      });
      const last = await this.store.lastStep(job.id);
      // A run resumed at its final step trains nothing and reports no step: it ends where its checkpoint was.
      const step = last?.step ?? attempt.resumeStep;
      const nothingLeft = last === null && attempt.resumeStep !== null;
      await this.setJobState(job, JobState.Succeeded, null);
      await this.event(
        job.id,
        "job.succeeded",
        `job finished at step ${step ?? "?"} after ${job.restarts} restart(s)` +
          (nothingLeft ? ` (resumed from ${attempt.resumeFrom} at its final step: nothing left to train)` : ""),
        {
          step,
          restarts: job.restarts,
        },
      );
      await pruneCheckpoints(job.spec.checkpoint.dir, job.spec.checkpoint.keep, null);
      return;
    }
    if (seen.nan && job.spec.detection.nanIsFailure) {
      await this.handleNan(job, attempt, ranks, seen.nan);
      return;
    }
    await this.checkHang(job, attempt, ranks);
  }

  /** The pool's declared fault model, if any, acting on this attempt's real processes. */
  private async injectPoolFaults(job: JobRecord, attempt: AttemptRecord, ranks: RankRecord[]): Promise<void> {
    const pool = this.opts.cluster.pools.find((p) => p.name === attempt.pool);
    if (!pool?.faultModel) return;
    let model = this.faultModels.get(pool.name);
    if (!model) this.faultModels.set(pool.name, (model = new FaultModel(pool)));
    const now = this.opts.clock.now();
    const key = `${job.id}/${attempt.n}`;
    const last = this.lastFaultDraw.get(key) ?? now;
    this.lastFaultDraw.set(key, now);
    const live = ranks.filter((r) => r.exitedAt === null);
    const fault = model.draw(now - last, live.length);
    if (!fault || live.length === 0) return;
    const rank = live[model.pickRank(live.length)]!;
    if (this.opts.executor.signalRank(rank, fault.kind === "kill" ? "SIGKILL" : "SIGSTOP")) {
      await this.event(job.id, "chaos", `fault model: ${fault.why} hits rank ${rank.rank} on ${rank.node}`, {
        rank: rank.rank,
        node: rank.node,
        kind: fault.kind,
      });
    }
  }

  private async checkHang(job: JobRecord, attempt: AttemptRecord, ranks: RankRecord[]): Promise<void> {
    const now = this.opts.clock.now();
    const progress = await this.store.rankProgress(job.id, attempt.n);
    const recent = await this.store.recentSteps(job.id, attempt.n, 0, 50);
    const intervals = recent
      .slice(1)
      .map((s, i) => s.t - recent[i]!.t)
      .filter((d) => d >= 0);
    const d = job.spec.detection;
    const policy = {
      startupSeconds: d.startupSeconds,
      minSeconds: d.hangMinSeconds,
      multiple: d.hangMultiple,
      percentile: 0.95,
    };
    const timeoutMs = hangTimeoutMs(policy, intervals);
    const view: RankProgress[] = ranks.map((r) => ({
      rank: r.rank,
      lastReportAt: progress.find((p) => p.rank === r.rank)?.lastT ?? null,
      processState: r.pid !== null ? this.opts.executor.processState(r) : null,
    }));
    const verdict = judgeHang(now, attempt.startedAt, view, timeoutMs);
    if (!verdict.hung) return;
    const culprit = hangCulprit(view)!;
    const rank = ranks.find((r) => r.rank === culprit.rank)!;
    // Ask every rank for its Python stacks (the SDK registers faulthandler on SIGUSR1); a stopped process gets
    // SIGCONT so that it can write them.
    for (const r of ranks) this.opts.executor.signalRank(r, "SIGUSR1");
    for (const r of view.filter((v) => v.processState === "T" || v.processState === "t")) {
      this.opts.executor.signalRank(
        ranks.find((x) => x.rank === r.rank)!,
        "SIGCONT",
      );
    }
    await this.opts.clock.sleep(d.stackDumpSeconds * 1000);
    const tail = await tailLines(rank.logPath, 80);
    const stack = stackExcerpt(tail);
    const lastStep = progress.find((p) => p.rank === culprit.rank)?.lastStep ?? null;
    const silent = Math.round(verdict.silentMs / 100) / 10;
    await this.handleIncident(job, attempt, {
      cause: "hang",
      culpritRank: rank.rank,
      culpritNode: rank.node,
      faultAt: view.find((v) => v.rank === culprit.rank)?.lastReportAt ?? attempt.startedAt,
      detectedAt: now,
      summary: `no progress for ${silent}s (timeout ${Math.round(verdict.timeoutMs / 100) / 10}s); ${culprit.reason}`,
      hard: false,
      signature: "",
      lastStep,
      evidence: { stack, silentMs: verdict.silentMs, timeoutMs: verdict.timeoutMs, processStates: view },
    });
  }

  private async handleNan(
    job: JobRecord,
    attempt: AttemptRecord,
    ranks: RankRecord[],
    nan: { rank: number; step: number; t: number },
  ): Promise<void> {
    const rank = ranks.find((r) => r.rank === nan.rank)!;
    await this.handleIncident(job, attempt, {
      cause: "numerical",
      culpritRank: nan.rank,
      culpritNode: rank.node,
      faultAt: nan.t,
      detectedAt: this.opts.clock.now(),
      summary: `rank ${nan.rank} reported a non-finite loss at step ${nan.step}; rolling back to the last checkpoint`,
      hard: false,
      signature: "",
      lastStep: nan.step,
      evidence: { step: nan.step },
    });
  }

  private async handleCrash(
    job: JobRecord,
    attempt: AttemptRecord,
    ranks: RankRecord[],
    statuses: RankStatus[],
  ): Promise<void> {
    const detectedAt = this.opts.clock.now();
    const exits = await Promise.all(
      toRankExits(ranks, statuses).map(async (e) => ({ ...e, tail: await tailLines(ranksLog(ranks, e.rank), 40) })),
    );
    const attribution = attributeFailure(exits)!;
    const culprit = attribution.culprit;
    const classification = classifyFailure(
      { code: culprit.code, signal: culprit.signal, tail: culprit.tail },
      this.opts.cluster.causePatterns ?? [],
    );
    // A rank that crashed before its first report of this attempt stood at the resume point.
    const lastStep =
      (await this.store.rankProgress(job.id, attempt.n)).find((p) => p.rank === culprit.rank)?.lastStep ??
      attempt.resumeStep;
    await this.handleIncident(job, attempt, {
      cause: classification.cause,
      culpritRank: culprit.rank,
      culpritNode: culprit.node,
      faultAt: Math.min(culprit.at, detectedAt),
      detectedAt,
      summary: `${attribution.reason}: ${classification.detail}`,
      hard: classification.hardDeviceEvidence,
      signature: classification.signature,
      retryable: classification.retryable,
      lastStep,
      evidence: {
        code: culprit.code,
        signal: culprit.signal,
        line: classification.evidence,
        pattern: classification.patternId,
        tail: culprit.tail.slice(-12),
        victims: attribution.victims.map((v) => v.rank),
      },
    });
  }

  private async handleIncident(job: JobRecord, attempt: AttemptRecord, incident: IncidentFacts): Promise<void> {
    await this.stopAttempt(job, attempt, AttemptState.Failed, incident.summary);
    const infrastructure = !nodeInnocentCauses.has(incident.cause);
    const node = (await this.store.listNodes()).find((n) => n.name === incident.culpritNode);
    const window = job.spec.recovery.restartWindowSeconds;
    const decision = decideRecovery(job.spec.recovery, {
      restarts: window
        ? (await this.store.listIncidents(job.id)).filter((i) => i.detectedAt >= incident.detectedAt - window * 1000)
            .length
        : job.restarts,
      culpritNodeStrikes: node?.strikes ?? 0,
      hardDeviceEvidence: incident.hard,
    });
    const cordon = infrastructure && decision.cordonCulpritNode;
    const id = await this.store.addIncident({
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
    const number = (await this.store.listIncidents(job.id)).filter((i) => i.id <= id).length;
    await this.event(
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
      await this.store.updateNode(node.name, {
        strikes: node.strikes + 1,
        ...(cordon
          ? { cordoned: true, reason: `${node.strikes + 1} strike(s); last: ${incident.cause}: ${incident.summary}` }
          : {}),
      });
      if (cordon && !node.cordoned) {
        await this.event(
          job.id,
          "node.cordoned",
          `cordoned ${node.name} after ${node.strikes + 1} strike(s)${incident.hard ? " (hard device evidence)" : ""}`,
          {
            node: node.name,
          },
        );
      }
    }
    const loop =
      incident.retryable === false
        ? `${incident.cause} error that no restart can fix: ${incident.summary}; fix it, then run the job again`
        : await this.crashLoop(job);
    if (loop) {
      await this.setJobState(job, JobState.Failed, loop);
      await this.event(job.id, "job.failed", loop);
      return;
    }
    if (decision.action === "fail") {
      await this.setJobState(job, JobState.Failed, decision.reason);
      await this.event(job.id, "job.failed", decision.reason);
      return;
    }
    await this.store.updateJob(job.id, { restarts: job.restarts + 1 });
    await this.setJobState(job, JobState.Recovering, null);
    const rt = this.runtime(job.id);
    rt.nextLaunchAt = this.opts.clock.now() + decision.backoffMs;
    rt.avoid = incident.culpritNode ? [incident.culpritNode] : [];
    await this.event(
      job.id,
      "job.restarting",
      `restart ${job.restarts + 1} of ${job.spec.recovery.maxRestarts} in ${decision.backoffMs} ms`,
    );
  }

  /** Pools on which this job had too many infrastructure incidents lately (the job leaves them). */
  private async failingPools(job: JobRecord): Promise<string[]> {
    const incidents = (await this.store.listIncidents(job.id)).map((i) => ({
      pool: typeof i.evidence.pool === "string" ? i.evidence.pool : "",
      at: i.detectedAt,
      infrastructure: !nodeInnocentCauses.has(i.cause),
    }));
    const now = this.opts.clock.now();
    return this.opts.cluster.pools
      .map((p) => p.name)
      .filter((p) => poolKeepsFailing(incidents, p, now, job.spec.recovery.poolFailures));
  }

  /** A reason to stop when the same software error repeats at the same step on different nodes; else null. */
  private async crashLoop(job: JobRecord): Promise<string | null> {
    const history: CrashRecord[] = (await this.store.listIncidents(job.id)).map((i) => ({
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

  private async recordExits(ranks: RankRecord[], statuses: RankStatus[]): Promise<void> {
    for (const s of statuses) {
      const r = ranks.find((x) => x.rank === s.rank);
      if (!r || r.exitedAt !== null || s.state === "running") continue;
      const updated: RankRecord = {
        ...r,
        exitCode: s.state === "exited" ? s.code : null,
        exitSignal: s.state === "exited" ? s.signal : "VANISHED",
        exitedAt: s.at,
      };
      await this.store.upsertRank(updated);
      Object.assign(r, updated);
    }
  }

  /** Reads new report lines (and log lines in regex mode); returns whether any step was seen. */
  private async ingest(job: JobRecord, attempt: AttemptRecord, ranks: RankRecord[], rt: JobRuntime): Promise<Ingested> {
    let saw = false;
    let nan: Ingested["nan"] = null;
    const regex = job.spec.progress.regex ? new RegExp(job.spec.progress.regex) : null;
    for (const r of ranks) {
      const { lines, offset } = await readNewLines(r.reportPath, r.reportOffset);
      const samples: StepSample[] = [];
      for (const line of lines) {
        const parsed = parseReportLine(line);
        if (!parsed) continue;
        if (parsed.kind === "step") {
          if (parsed.loss !== null && !Number.isFinite(parsed.loss) && nan === null) {
            nan = { rank: r.rank, step: parsed.step, t: parsed.t };
          }
          samples.push({
            jobId: job.id,
            attempt: attempt.n,
            rank: r.rank,
            step: parsed.step,
            t: parsed.t,
            loss: parsed.loss,
            tokens: parsed.tokens,
            computeS: parsed.computeS,
          });
        } else if (parsed.kind === "checkpoint" && r.rank === 0) {
          await this.onCheckpointReported(job, attempt, parsed);
        }
      }
      if (offset !== r.reportOffset) {
        await this.store.ingestReports(job.id, attempt.n, r.rank, offset, samples);
        r.reportOffset = offset;
      }
      if (regex) {
        const logOffset = rt.logOffsets.get(r.rank) ?? 0;
        const log = await readNewLines(r.logPath, logOffset);
        const fromLog: StepSample[] = [];
        for (const line of log.lines) {
          const p = parseLogProgress(line, regex);
          if (p) {
            fromLog.push({
              jobId: job.id,
              attempt: attempt.n,
              rank: r.rank,
              step: p.step,
              t: this.opts.clock.now(),
              loss: p.loss,
              tokens: null,
              computeS: null,
            });
          }
        }
        rt.logOffsets.set(r.rank, log.offset);
        if (fromLog.length > 0) await this.store.ingestReports(job.id, attempt.n, r.rank, r.reportOffset, fromLog);
        saw ||= fromLog.length > 0;
      }
      saw ||= samples.length > 0;
    }
    return { steps: saw, nan };
  }

  private async onCheckpointReported(
    job: JobRecord,
    attempt: AttemptRecord,
    report: { step: number; path: string; t: number; saveS: number | null },
  ): Promise<void> {
    const { step, path: dir } = report;
    const protect = attempt.resumeFrom;
    const verification = await verifyCheckpoint(dir, step);
    await this.store.upsertCheckpoint({
      jobId: job.id,
      step,
      path: dir,
      verified: verification.ok,
      reason: verification.ok ? null : verification.reason,
      seenAt: this.opts.clock.now(),
    });
    await this.event(
      job.id,
      verification.ok ? "checkpoint.saved" : "checkpoint.invalid",
      verification.ok
        ? `checkpoint at step ${step} verified`
        : `checkpoint at step ${step} does not verify: ${verification.reason}`,
      { step, path: dir, attempt: attempt.n, t: report.t, saveMs: (report.saveS ?? 0) * 1000 },
    );
    if (verification.ok && job.spec.checkpoint.perRun) await pointLatestAt(job.spec.checkpoint.dir);
    if (verification.ok) {
      for (const removed of await pruneCheckpoints(job.spec.checkpoint.dir, job.spec.checkpoint.keep, protect)) {
        const m = /step-(\d+)$/.exec(removed);
        if (m) await this.store.deleteCheckpoint(job.id, Number(m[1]));
      }
    }
  }

  private async stopAttempt(
    job: JobRecord,
    attempt: AttemptRecord,
    state: AttemptState,
    reason: string,
  ): Promise<void> {
    await this.store.updateAttempt(job.id, attempt.n, { state: AttemptState.Stopping });
    const ranks = await this.store.listRanks(job.id, attempt.n);
    const handles: RankHandle[] = ranks;
    await this.opts.executor.stop(handles, job.spec.recovery.graceSeconds * 1000);
    await this.store.updateAttempt(job.id, attempt.n, { state, endedAt: this.opts.clock.now(), reason });
  }

  private async setJobState(job: JobRecord, to: JobState, reason: string | null): Promise<void> {
    const current = (await this.store.getJob(job.id))!;
    if (current.state === to) return;
    assertJobTransition(current.state, to);
    await this.store.updateJob(job.id, {
      state: to,
      ...(reason !== null ? { reason } : {}),
      ...(terminalJobStates.has(to) ? { endedAt: this.opts.clock.now() } : {}),
    });
    job.state = to;
  }

  private async event(
    jobId: string | null,
    kind: string,
    message: string,
    data: Record<string, unknown> = {},
  ): Promise<void> {
    await this.store.addEvent({ jobId, t: this.opts.clock.now(), kind, message, data });
    this.opts.log?.(`${jobId ?? "-"} ${kind}: ${message}`);
  }
}

function ranksLog(ranks: RankRecord[], rank: number): string {
  return ranks.find((r) => r.rank === rank)?.logPath ?? "";
}

function toRankExits(ranks: RankRecord[], statuses: RankStatus[]): RankExit[] {
  const exits: RankExit[] = [];
  for (const s of statuses) {
    if (s.state === "running") continue;
    const r = ranks.find((x) => x.rank === s.rank);
    if (!r) continue;
    // Keep the first observed exit time: a rank's exit is recorded once.
    const at = r.exitedAt ?? s.at;
    if (s.state === "vanished")
      exits.push({ rank: r.rank, node: r.node, code: null, signal: "VANISHED", at, tail: [] });
    else exits.push({ rank: r.rank, node: r.node, code: s.code, signal: s.signal, at, tail: [] });
  }
  return exits;
}

/** A port nobody listens on now; fresh per attempt so orphans of an old attempt can never join a new one. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}
