import { randomBytes } from "node:crypto";
import path from "node:path";
import type { ClusterSpec, CompiledJobSpec } from "../core/spec.js";
import { AttemptState, JobState, terminalJobStates } from "../core/states.js";
import { findPython, pythonPlaceholder } from "../executors/python.js";
import type { AttemptRecord, JobRecord, NodeHealthRecord, RankRecord, Store } from "../store/port.js";
import { Adopter } from "./adopt.js";
import { pruneCheckpoints } from "./checkpoint-scan.js";
import { type HangDump, type JobRuntime, SupervisorContext, type SupervisorOptions } from "./context.js";
import { hangWithStacks } from "./detectors/hang.js";
import { GrayFailures } from "./gray.js";
import { NodeHealth, type NodeHealthSummary, type ProbeResult } from "./health.js";
import { Incidents } from "./incidents.js";
import { Inventory, type NodeView } from "./inventory.js";
import { launchAttempt } from "./launch.js";
import { PoolFaults } from "./pool-faults.js";
import { type Placement, Queue, type QueueInfo } from "./queue.js";
import { Services } from "./services.js";
import { watchReplica } from "./services-watch.js";
import { tailLines } from "./reports.js";
import type { Verdict } from "./verdict.js";
import { watchAttempt } from "./watch.js";

export type { SupervisorOptions } from "./context.js";
export { formatWindow, type NodeView } from "./inventory.js";
export { pointLatestAt } from "./ingest.js";
export { freePort } from "./launch.js";
export type { QueueInfo } from "./queue.js";
export { stackExcerpt } from "./detectors/hang.js";

/**
 * Drives every job through core's policies: the only place that decides. Each tick is a run loop in the manner of
 * TorchElastic's agent: the queue turns waiting jobs into launches (queue.ts, launch.ts); every running attempt is
 * watched once (watch.ts: ingest, poll, ask the detectors in detectors/) and the verdict is acted on here, failures
 * through incidents.ts (strikes, cordon, restart or stop). The node table follows the pools (inventory.ts).
 *
 * All state lives in the store and on disk, so a new Supervisor over the same home re-adopts running ranks.
 *
 *   src/supervisor/
 *     supervisor.ts  this class: public API (submit, cancel, setCordon, nodes, currentRanks, ...) and the loop
 *     context.ts     the ports and the acts every part shares (events, job states, stopping a gang)
 *     queue.ts       which waiting jobs launch now, on which devices; queue places; disk-full pause
 *     launch.ts      a placement -> an attempt: checkpoint choice, executor launch, launch errors judged
 *     watch.ts       one look at a running attempt -> a verdict (verdict.ts)
 *     ingest.ts      report and log ingestion, checkpoints reported and verified
 *     detectors/     crash (culprit, cause), hang (stack-dump deadline), nan, disk: inputs in, verdict out
 *     incidents.ts   verdict -> incident record, strikes, cordon, recovery decision, crash loops, failing pools
 *     inventory.ts   node table <-> pools and the workload manager (Slurm: cordon <-> drain), strike window
 *     pool-faults.ts a pool's declared fault model acting on its ranks (chaos)
 */
export class Supervisor {
  private readonly ctx: SupervisorContext;
  private readonly inventory: Inventory;
  private readonly incidents: Incidents;
  private readonly health: NodeHealth;
  private readonly queue: Queue;
  private readonly faults: PoolFaults;
  private readonly gray: GrayFailures;
  /** Checkpoints the scripts write themselves (`checkpoint.watch`): adopted, verified, restored (adopt.ts). */
  private readonly adopter: Adopter;
  /** Deployed services: their replicas are jobs of this supervisor (workload kind "replica"; services.ts). */
  readonly services: Services;
  private readonly runtimes = new Map<string, JobRuntime>();
  private timer: NodeJS.Timeout | undefined;
  /** A scheduling pass is running (passes never overlap; job tasks do, one per job at most). */
  private passing = false;
  private readonly tasks = new Set<Promise<void>>();
  private stopped = false;

  constructor(private readonly opts: SupervisorOptions) {
    this.ctx = new SupervisorContext(opts);
    this.inventory = new Inventory(this.ctx);
    this.health = new NodeHealth(this.ctx, this.inventory);
    this.incidents = new Incidents(this.ctx, this.inventory, this.health);
    this.queue = new Queue(this.ctx, this.incidents, (id) => this.runtime(id));
    this.faults = new PoolFaults(this.ctx);
    this.gray = new GrayFailures(this.ctx, this.inventory);
    this.services = new Services(this.ctx, {
      submit: (spec) => this.submit(spec),
      cancel: (id) => this.cancel(id),
      waitingFor: (id) => this.queueInfo(id).waitingFor,
    });
    this.adopter = new Adopter(this.ctx);
  }

  get cluster(): ClusterSpec {
    return this.opts.cluster;
  }

  private get store(): Store {
    return this.opts.store;
  }

  async start(): Promise<void> {
    await this.inventory.sync(true);
    for (const job of await this.store.listJobs({ activeOnly: true })) {
      await this.ctx.event(
        job.id,
        "supervisor.adopted",
        `control plane restarted; re-adopting job in state ${job.state}`,
      );
    }
    this.stopped = false;
    this.timer = setInterval(() => void this.tick(), this.opts.pollMs ?? 200);
    await this.tick();
  }

  /** Stops watching. Running ranks are left alone: they outlive the control plane by design. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    while (this.passing) await new Promise((r) => setTimeout(r, 10));
    await Promise.allSettled([...this.tasks]);
    await this.health.drain();
    await this.gray.drain();
    await this.services.drain();
  }

  /** Where a job stands in the queue (from the last scheduling pass). */
  queueInfo(jobId: string): QueueInfo {
    return this.queue.info(jobId);
  }

  async submit(spec: CompiledJobSpec): Promise<JobRecord> {
    const id = `${spec.name}-${randomBytes(3).toString("hex")}`;
    // A new submission is a new run: with no checkpoint.dir in the spec it gets a folder of its own.
    const resolved = this.resolveCommand(
      spec.checkpoint.perRun
        ? { ...spec, checkpoint: { ...spec.checkpoint, dir: path.join(spec.checkpoint.dir, id) } }
        : spec,
    );
    const now = this.ctx.now();
    await this.store.createJob({ id, name: spec.name, spec: resolved, state: JobState.Pending, createdAt: now });
    await this.ctx.event(id, "job.submitted", `job ${id} submitted from ${spec.source}`, {
      command: resolved.command,
      pools: resolved.pools,
    });
    // Wait for this job's own first step (placed, or queued with a reason), never for other jobs' work.
    await (await this.pass()).get(id);
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
      const attempt = await this.ctx.currentAttempt(job.id);
      if (attempt && attempt.endedAt === null) {
        await this.ctx.stopAttempt(job, attempt, AttemptState.Cancelled, "cancelled by user");
      }
      await this.ctx.setJobState(job, JobState.Cancelled, "cancelled by user");
      await this.ctx.event(job.id, "job.cancelled", "job cancelled by user");
    } finally {
      rt.busy = false;
    }
    return (await this.store.getJob(job.id))!;
  }

  async setCordon(node: string, cordoned: boolean, reason: string): Promise<void> {
    await this.inventory.setCordon(node, cordoned, reason);
  }

  /**
   * Nodes with the strikes that count now (within the cluster's strikeWindowSeconds) and the incidents that made
   * them: job, incident (its number within the job), cause, time.
   */
  async nodes(): Promise<Array<NodeView & { health: NodeHealthSummary | null }>> {
    const health = new Map((await this.store.listNodeHealth()).map(({ excerpt: _e, ...h }) => [h.node, h]));
    return (await this.inventory.nodes()).map((n) => ({ ...n, health: health.get(n.name) ?? null }));
  }

  /** One node with its latest probe in full (findings and the tools' raw excerpt), for `nodes describe`. */
  async node(name: string): Promise<(NodeView & { health: NodeHealthRecord | null }) | null> {
    const node = (await this.inventory.nodes()).find((n) => n.name === name);
    if (!node) return null;
    const [health] = await this.store.listNodeHealth({ node: name });
    return { ...node, health: health ?? null };
  }

  /** Probes one node's health now (`nodes probe`): recorded and acted on like any probe. */
  async probeNode(name: string): Promise<ProbeResult> {
    return this.health.probeNode(name);
  }

  /** Ranks of a job's current attempt, for chaos tooling and stack dumps. */
  async currentRanks(jobId: string): Promise<{ attempt: AttemptRecord; ranks: RankRecord[] } | null> {
    const attempt = await this.ctx.currentAttempt(jobId);
    if (!attempt) return null;
    return { attempt, ranks: await this.store.listRanks(jobId, attempt.n) };
  }

  signalRank(rank: RankRecord, signal: NodeJS.Signals): boolean {
    return this.opts.executor.signalRank(rank, signal);
  }

  private runtime(jobId: string): JobRuntime {
    let rt = this.runtimes.get(jobId);
    if (!rt) {
      rt = { nextLaunchAt: 0, busy: false, waitingNoted: false, avoid: [], hangDump: null, preflightNote: null };
      this.runtimes.set(jobId, rt);
    }
    return rt;
  }

  /**
   * One pass: the queue decides which waiting jobs launch (and on which devices), then every job advances in a task
   * of its own. Jobs never wait on each other: a job whose task still runs (a stop's grace period, a checkpoint being
   * hashed, a launch) is skipped by later passes while the others go on. Resolves when this pass's tasks are done.
   * Never throws: a bad job must not stop the others from being watched.
   */
  async tick(): Promise<void> {
    await Promise.all((await this.pass()).values());
  }

  /** Starts this pass's tasks; returns them by job id. */
  private async pass(): Promise<Map<string, Promise<void>>> {
    const started = new Map<string, Promise<void>>();
    if (this.passing || this.stopped) return started;
    this.passing = true;
    try {
      await this.inventory.syncIfDue();
      const jobs = await this.store.listJobs({ activeOnly: true });
      this.adopter.retain(new Set(jobs.map((j) => j.id)));
      const current = new Map<string, AttemptRecord | undefined>();
      for (const job of jobs) current.set(job.id, await this.ctx.currentAttempt(job.id));
      this.health.periodicIfDue(jobs);
      this.services.reconcileSoon();
      const launches = await this.queue.schedule(jobs, current);
      for (const job of jobs) {
        const rt = this.runtime(job.id);
        if (rt.busy) continue;
        const placement = launches.get(job.id);
        // A big gang's look costs more than a small one's: pace it (see watchPaced).
        if (
          !placement &&
          rt.nextWatch &&
          this.ctx.now() < rt.nextWatch.clock &&
          performance.now() < rt.nextWatch.real
        ) {
          continue;
        }
        started.set(
          job.id,
          this.runTask(job, rt, () => (placement ? this.launch(job, rt, placement) : this.watchPaced(job, rt))),
        );
      }
    } catch (err) {
      this.ctx.log(`supervisor pass: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    } finally {
      this.passing = false;
    }
    return started;
  }

  /**
   * Looks at a job, then waits `watchDutyFactor` times as long as the look took before the next one: supervision of a
   * gang of thousands of ranks (a file read or two per rank) stays a bounded share of a core, while a small gang is
   * looked at every pass.
   */
  private async watchPaced(job: JobRecord, rt: JobRuntime): Promise<void> {
    const started = performance.now();
    try {
      await this.advance(job, rt);
    } finally {
      const took = performance.now() - started;
      // The gap is kept on both clocks and a look waits only while neither has passed it: on the supervisor's clock
      // alone, a test clock that stands still never let a slow look's job be looked at again; on real time alone, a
      // test that moves its clock in quick ticks saw the job skipped.
      const gap = Math.min(watchMaxGapMs, took * watchDutyFactor);
      rt.nextWatch =
        took > watchPacingFromMs && this.opts.watchPacing !== false
          ? { clock: this.ctx.now() + gap, real: performance.now() + gap }
          : undefined;
    }
  }

  /** Runs one job's work with its lock held; errors are logged, never thrown. */
  private runTask(job: JobRecord, rt: JobRuntime, work: () => Promise<void>): Promise<void> {
    rt.busy = true;
    const task = (async () => {
      try {
        await work();
      } catch (err) {
        this.ctx.log(`job ${job.id}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      } finally {
        rt.busy = false;
        this.queue.launchDone(job.id);
      }
    })();
    this.tasks.add(task);
    void task.finally(() => this.tasks.delete(task));
    return task;
  }

  /** A queue decision: launch the next attempt; a launch that fails is a verdict like any other. */
  private async launch(job: JobRecord, rt: JobRuntime, placement: Placement): Promise<void> {
    rt.hangDump = null;
    // Pre-flight: hosts with a fatal finding are left out (the probe cordoned them); the next pass places again.
    const pre = await this.health.preflight(job, placement.pool, placement.nodes);
    if (pre.excluded.length > 0) {
      rt.preflightNote = pre.note;
      return;
    }
    // The network probe cut short (Slurm pools): a host whose link already collapsed is cordoned and left out.
    const net = await this.gray.preflight(job, placement.pool, placement.nodes);
    if (net.excluded.length > 0) {
      rt.preflightNote = [rt.preflightNote, net.note].filter((s): s is string => !!s).join("; ");
      return;
    }
    const note = [rt.preflightNote, pre.note].filter((s): s is string => !!s).join("; ");
    rt.preflightNote = null;
    const result = await launchAttempt(
      this.ctx,
      this.queue,
      job,
      { ...placement, preflight: note || null },
      this.adopter,
    );
    if (result.kind === "failed") await this.act(job, rt, result.attempt, result.verdict);
  }

  /** A job with a live attempt: look at it once and act on what was found. */
  private async advance(job: JobRecord, rt: JobRuntime): Promise<void> {
    const attempt = await this.ctx.currentAttempt(job.id);
    if (attempt === undefined || attempt.endedAt !== null) return; // launches come from the queue
    const verdict: Verdict =
      attempt.state === AttemptState.Launching
        ? { kind: "interrupted-launch" }
        : job.spec.workload?.kind === "replica"
          ? await watchReplica(this.ctx, this.services, job, attempt)
          : await watchAttempt(this.ctx, job, attempt, rt, this.faults);
    // Files the script saves itself are looked at only while its gang is healthy (a dead writer's file may be torn).
    if ((verdict.kind === "healthy" || verdict.kind === "slow") && job.spec.checkpoint.watch) {
      await this.adopter.look(job, attempt);
    }
    await this.act(job, rt, attempt, verdict);
  }

  /** The loop's switch: each verdict acted on through core's policies. */
  private async act(job: JobRecord, rt: JobRuntime, attempt: AttemptRecord, verdict: Verdict): Promise<void> {
    switch (verdict.kind) {
      case "healthy":
        if (verdict.pace) await this.gray.onPace(job, attempt, verdict.pace);
        return;
      case "waiting-for-stacks":
        return;
      case "slow": {
        // A slowdown: localized in the background (the tick never waits for the probe), then evicted or ridden out.
        const action = await this.gray.onPace(job, attempt, verdict.pace);
        if (action.kind !== "evict") return;
        await this.fail(job, rt, attempt, action.facts);
        // The whole pool is degraded: the next attempt goes to another pool (its hosts are avoided).
        if (action.scope === "pool") rt.avoid = action.avoid;
        return;
      }
      case "succeeded":
        return this.succeed(job, attempt);
      case "hung": {
        // Ask for the stacks now; the incident waits for the deadline (a later tick, so no other job waits for it).
        for (const { rank, signal } of verdict.signals) this.opts.executor.signalRank(rank, signal);
        if (verdict.dump.nativePath) this.startNativeStacks(verdict.dump, verdict.signals);
        rt.hangDump = verdict.dump;
        if (verdict.dump.deadline > this.ctx.now()) return;
        rt.hangDump = null;
        const tail = await tailLines(verdict.dump.logPath, 80);
        return this.fail(job, rt, attempt, hangWithStacks(verdict.dump, tail));
      }
      case "failed":
        rt.hangDump = null;
        return this.fail(job, rt, attempt, verdict.facts);
      case "disk-full":
        // Not the job's fault nor the node's: no incident, no restart spent; launches pause until there is space.
        this.queue.noteEnospc();
        await this.ctx.stopAttempt(job, attempt, AttemptState.Failed, verdict.why);
        await this.ctx.setJobState(job, JobState.Recovering, verdict.why);
        await this.ctx.event(job.id, "disk.full", verdict.why, { path: verdict.path });
        return;
      case "interrupted-launch":
        // The control plane died while launching: the gang may be incomplete. Stop what exists and launch again,
        // without charging the job a restart (it was not the job's fault).
        await this.ctx.stopAttempt(job, attempt, AttemptState.Failed, "control plane restarted during launch");
        await this.ctx.setJobState(job, JobState.Recovering, "relaunching after an interrupted launch");
        return;
    }
  }

  /**
   * gdb's backtraces of the hung culprit (`detection.nativeStacks`), started half a second after the stack-dump
   * signals (so that faulthandler writes the Python stacks before gdb stops the process) and given up at the deadline.
   */
  private startNativeStacks(dump: HangDump, signals: ReadonlyArray<{ rank: RankRecord }>): void {
    const culprit = signals.find((s) => s.rank.rank === dump.facts.culpritRank)?.rank;
    const executor = this.opts.executor;
    if (!culprit || !executor.nativeStacks || !dump.nativePath) return;
    const timeoutMs = Math.max(1000, dump.deadline - this.ctx.now() - 700);
    const file = dump.nativePath;
    setTimeout(() => {
      if (!executor.nativeStacks!(culprit, file, timeoutMs))
        this.ctx.log(`native stacks: no gdb for rank ${culprit.rank}`);
    }, 500).unref();
  }

  /** An incident: recorded and handled (incidents.ts); a restart waits out its backoff, away from the culprit. */
  private async fail(
    job: JobRecord,
    rt: JobRuntime,
    attempt: AttemptRecord,
    facts: Parameters<Incidents["handle"]>[2],
  ): Promise<void> {
    const outcome = await this.incidents.handle(job, attempt, facts);
    if (outcome.action === "restart") {
      rt.nextLaunchAt = outcome.notBefore;
      rt.avoid = outcome.avoid;
    }
  }

  /** Every rank exited 0: the attempt and the job succeeded. */
  private async succeed(job: JobRecord, attempt: AttemptRecord): Promise<void> {
    if (job.spec.checkpoint.watch) {
      // Every rank exited 0: the files it saved are final, adopted now without waiting for them to settle.
      await this.adopter.look(job, attempt, 0);
      await this.adopter.settled(job.id);
    }
    await this.store.updateAttempt(job.id, attempt.n, { state: AttemptState.Succeeded, endedAt: this.ctx.now() });
    const last = await this.store.lastStep(job.id);
    // A run resumed at its final step trains nothing and reports no step: it ends where its checkpoint was.
    const step = last?.step ?? attempt.resumeStep;
    const nothingLeft = last === null && attempt.resumeStep !== null;
    await this.ctx.setJobState(job, JobState.Succeeded, null);
    await this.ctx.event(
      job.id,
      "job.succeeded",
      // A script with no progress source reports no step: say so rather than "at step ?".
      `job finished ${step === null ? "(no step reported: no progress source matched)" : `at step ${step}`} after ${job.restarts} restart(s)` +
        (nothingLeft ? ` (resumed from ${attempt.resumeFrom} at its final step: nothing left to train)` : ""),
      { step, restarts: job.restarts },
    );
    await pruneCheckpoints(job.spec.checkpoint.dir, job.spec.checkpoint.keep, null);
  }
}

/** A look at a job that took longer than this is followed by a pause (shorter ones: the next pass looks again). */
const watchPacingFromMs = 20;
/** The pause after a long look, in multiples of how long it took: at most 1 / (1 + 4) = 20% of a core per big job. */
const watchDutyFactor = 4;
/** Never pause longer than this between looks (detection latency stays bounded). */
const watchMaxGapMs = 2000;
