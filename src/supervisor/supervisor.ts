import { randomBytes } from "node:crypto";
import { constants as fsConstants } from "node:fs";
import { access, mkdir, readFile, rename, rm, stat, statfs, symlink, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import path from "node:path";
import { attributeFailure, culpritReason, type RankExit, victimsOf } from "../core/culprit.js";
import type { Clock } from "../core/clock.js";
import { type Classification, classifyFailure, hostLostSignal } from "../core/classify.js";
import { detectCrashLoop, type CrashRecord } from "../core/crashloop.js";
import { hangCulprit, hangTimeoutMs, judgeHang, type RankProgress } from "../core/hang.js";
import { linearOrNull } from "../core/linear-regex.js";
import { scheduleQueue, type DeviceNode, type QueuedJob } from "../core/placement.js";
import {
  decideRecovery,
  defaultStrikeWindowSeconds,
  isInfrastructureCause,
  poolKeepsFailing,
  strikesSince,
} from "../core/recovery.js";
import type { ClusterSpec, CompiledJobSpec, PoolSpec } from "../core/spec.js";
import { AttemptState, JobState, assertJobTransition, terminalJobStates } from "../core/states.js";
import type { Executor, RankHandle, RankStatus } from "../executors/port.js";
import { findPython, pythonPlaceholder } from "../executors/python.js";
import { localNodeNames } from "../executors/local/local.js";
import type { AttemptRecord, JobRecord, NodeRecord, RankRecord, Store } from "../store/port.js";
import { FaultModel } from "./fault-model.js";
import { findResumePoint, pruneCheckpoints, verifyCheckpoint } from "./checkpoint-scan.js";
import { readRank, tailLines, unreadActivity } from "./reports.js";

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
  waitingNoted: boolean;
  /** The last culprit's node: the next attempt goes elsewhere when it can. */
  avoid: string[];
  /**
   * A hang was found and the ranks were asked for their stacks: the incident is recorded on the first tick after
   * `deadline` (a deadline, not a sleep, so that the wait holds no other job's tick).
   */
  hangDump: { attempt: number; deadline: number; facts: IncidentFacts; logPath: string } | null;
}

/** Where the queue put a job: launch on these nodes and devices (one list per node). */
interface Launch {
  pool: string;
  nodes: string[];
  shrunk: boolean;
  devices: number[][];
  /** Pools that keep failing this job (for the "moved" event). */
  failing: string[];
}

/** A job's place in the queue, for `ps` and the dashboard. */
export interface QueueInfo {
  /** 1-based place among waiting jobs; null when the job is not waiting for placement. */
  queuePosition: number | null;
  /** Why it waits, e.g. "waiting for 2 device(s) on local-ascend: 1 free"; null when it does not. */
  waitingFor: string | null;
}

/** A launch that cannot succeed or did not: `permanent` when no retry can help (a missing workdir or command). */
class LaunchError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly permanent: boolean,
  ) {
    super(message);
  }
}

/** Spawn errors that say the job's own setup is wrong (its workdir, its command, its arguments). */
const permanentLaunchCodes: ReadonlySet<string> = new Set([
  "ENOENT",
  "ENOTDIR",
  "EACCES",
  "E2BIG",
  "ENAMETOOLONG",
  "ERR_INVALID_ARG_VALUE",
  "ERR_INVALID_ARG_TYPE",
]);

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
  /** Runs once the gang is stopped: what could only be known then (victims whose last lines came late). */
  afterStop?: () => Promise<{ summary?: string; evidence: Record<string, unknown> }>;
}

/** A node as `nodes` shows it: strikes that count now, and the incidents that made them. */
export interface NodeView extends NodeRecord {
  strikeWindowSeconds: number;
  strikeLog: Array<{ jobId: string | null; incident: number | null; cause: string; t: number }>;
}

/** "24h", "90m", "45s": a strike window for messages. */
export function formatWindow(seconds: number): string {
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds % 60 === 0) return `${seconds / 60}m`;
  return `${seconds}s`;
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

/** Causes that say nothing about the node: no strike, no cordon (see core/recovery.ts: infrastructureCauses). */
const nodeInnocentCauses: ReadonlySet<string> = new Set(["software", "numerical", "oom", "unknown"]);

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
  /** A scheduling pass is running (passes never overlap; job tasks do, one per job at most). */
  private passing = false;
  /** When the workload manager's nodes were last listed. */
  private inventoryAt = 0;
  private readonly tasks = new Set<Promise<void>>();
  private stopped = false;
  /** Devices of each attempt (`<job id>/<n>`), one list per node, as launched: what the queue counts as in use. */
  private readonly attemptDevices = new Map<string, number[][]>();
  /** Devices granted to jobs whose launch is under way (no attempt record yet). */
  private readonly launching = new Map<string, { nodes: string[]; devices: number[][] }>();
  private queueView = new Map<string, QueueInfo>();
  /** When a launch last failed with ENOSPC, and the disk-full reason last said (null: none). */
  private diskFullSeenAt: number | null = null;
  private diskFullSaid: string | null = null;

  constructor(private readonly opts: SupervisorOptions) {}

  get cluster(): ClusterSpec {
    return this.opts.cluster;
  }

  private get store(): Store {
    return this.opts.store;
  }

  async start(): Promise<void> {
    await this.syncInventory(true);
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
    while (this.passing) await new Promise((r) => setTimeout(r, 10));
    await Promise.allSettled([...this.tasks]);
  }

  /** Where a job stands in the queue (from the last scheduling pass). */
  queueInfo(jobId: string): QueueInfo {
    return this.queueView.get(jobId) ?? { queuePosition: null, waitingFor: null };
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

  /**
   * Makes the node table match the pools: local pools from the cluster YAML, pools of a workload manager from what it
   * says (Slurm: sinfo). A node the workload manager will not run on (down, drained, not responding) is cordoned with
   * its words as the reason, and uncordoned when it is back, unless switchyard cordoned it itself.
   */
  private async syncInventory(initial: boolean): Promise<void> {
    const executor = this.opts.executor;
    const seen: Array<{ name: string; pool: string; devices: number }> = [];
    const states = new Map<string, { usable: boolean; reason: string | null }>();
    for (const p of this.opts.cluster.pools) {
      if (!executor.inventory || p.executor === "local") {
        for (const name of localNodeNames(p.name, p.nodes))
          seen.push({ name, pool: p.name, devices: p.devicesPerNode });
        continue;
      }
      try {
        for (const n of await executor.inventory(p)) {
          seen.push({ name: n.name, pool: p.name, devices: n.devices });
          states.set(n.name, n);
        }
      } catch (err) {
        // The workload manager did not answer: keep the nodes we know rather than drop them.
        for (const n of (await this.store.listNodes()).filter((x) => x.pool === p.name)) {
          seen.push({ name: n.name, pool: p.name, devices: n.devices });
        }
        if (initial) this.opts.log?.(`pool ${p.name}: cannot list its nodes: ${(err as Error).message}`);
      }
    }
    await this.store.syncNodes(seen);
    if (states.size === 0) return;
    for (const n of await this.store.listNodes()) {
      const st = states.get(n.name);
      if (!st) continue;
      const managerCordon = n.reason?.startsWith("workload manager: ") ?? false;
      if (!st.usable && !n.cordoned) {
        await this.store.updateNode(n.name, { cordoned: true, reason: `workload manager: ${st.reason ?? "unusable"}` });
        await this.event(null, "node.unavailable", `${n.name} is ${st.reason ?? "unusable"} in the workload manager`, {
          node: n.name,
        });
      } else if (st.usable && n.cordoned && managerCordon) {
        await this.store.updateNode(n.name, { cordoned: false, reason: null });
        await this.event(null, "node.available", `${n.name} is back in service in the workload manager`, {
          node: n.name,
        });
      }
    }
  }

  /** Tells the workload manager of a cordon (Slurm: drain); a failure there is an event, never a lost cordon. */
  private async managerCordon(node: string, poolName: string, cordoned: boolean, reason: string): Promise<void> {
    const pool = this.opts.cluster.pools.find((p) => p.name === poolName);
    if (!pool || pool.executor === "local" || !this.opts.executor.setCordon) return;
    try {
      await this.opts.executor.setCordon(pool, node, cordoned, reason);
    } catch (err) {
      await this.event(
        null,
        "node.manager_error",
        `${node}: the workload manager refused the ${cordoned ? "drain" : "resume"}: ${(err as Error).message}`,
        { node },
      );
    }
  }

  async setCordon(node: string, cordoned: boolean, reason: string): Promise<void> {
    const known = (await this.store.listNodes()).find((n) => n.name === node);
    if (!known) throw new Error(`no node named ${node}`);
    await this.store.updateNode(node, cordoned ? { cordoned, reason } : { cordoned, reason: null, strikes: 0 });
    await this.managerCordon(node, known.pool, cordoned, reason);
    await this.event(null, cordoned ? "node.cordoned" : "node.uncordoned", `${node}: ${reason}`, { node });
  }

  /**
   * Why launches must wait for disk space, or null: the home (attempt folders: logs, reports, exit records) or a
   * queued job's checkpoint folder has less than `minFreeBytes` free, or a launch hit ENOSPC in the last 10 s. Said
   * once per episode as an event (`disk.full`, then `disk.ok`) and as each waiting job's reason.
   */
  private async fullDisk(jobs: readonly JobRecord[]): Promise<string | null> {
    const now = this.opts.clock.now();
    const folders = [path.join(this.opts.home, "jobs"), ...jobs.map((j) => j.spec.checkpoint.dir)];
    let why: string | null = null;
    for (const folder of [...new Set(folders)]) {
      const free = await freeBytes(folder);
      if (free !== null && free.available < free.minFree) {
        why = `disk full: ${folder} has ${formatBytes(free.available)} free (fix: free space there; launches resume by themselves)`;
        break;
      }
    }
    if (!why && this.diskFullSeenAt !== null && now - this.diskFullSeenAt < 10_000) {
      why = "disk full: a launch failed with ENOSPC (fix: free space; launches resume by themselves)";
    }
    if (why && this.diskFullSaid !== why) {
      this.diskFullSaid = why;
      await this.event(null, "disk.full", `launches paused: ${why}`).catch(() => undefined);
      for (const j of jobs) {
        await this.store.updateJob(j.id, { reason: `launch paused: ${why}` }).catch(() => undefined);
      }
    } else if (!why && this.diskFullSaid !== null) {
      this.diskFullSaid = null;
      await this.event(null, "disk.ok", "disk space is back: launches resume");
      for (const j of jobs) {
        if (j.reason?.startsWith("launch paused: disk full")) await this.store.updateJob(j.id, { reason: null });
      }
    }
    return why;
  }

  private strikeWindowSeconds(): number {
    return this.opts.cluster.strikeWindowSeconds ?? defaultStrikeWindowSeconds;
  }

  private strikesSince(): number {
    return strikesSince(this.opts.clock.now(), this.strikeWindowSeconds());
  }

  /**
   * Nodes with the strikes that count now (within the cluster's strikeWindowSeconds) and the incidents that made
   * them: job, incident (its number within the job), cause, time.
   */
  async nodes(): Promise<NodeView[]> {
    const since = this.strikesSince();
    const [nodes, strikes] = await Promise.all([
      this.store.listNodes({ strikesSince: since }),
      this.store.listStrikes({ since }),
    ]);
    const numbers = new Map<string, number[]>();
    for (const jobId of new Set(strikes.map((s) => s.jobId).filter((j): j is string => j !== null))) {
      numbers.set(
        jobId,
        (await this.store.listIncidents(jobId)).map((i) => i.id),
      );
    }
    return nodes.map((n) => ({
      ...n,
      strikeWindowSeconds: this.strikeWindowSeconds(),
      strikeLog: strikes
        .filter((s) => s.node === n.name)
        .map((s) => {
          const position = s.jobId !== null ? (numbers.get(s.jobId)?.indexOf(s.incidentId ?? -1) ?? -1) : -1;
          return {
            jobId: s.jobId,
            incident: position >= 0 ? position + 1 : null,
            cause: s.cause,
            t: s.t,
          };
        }),
    }));
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
      rt = { nextLaunchAt: 0, busy: false, waitingNoted: false, avoid: [], hangDump: null };
      this.runtimes.set(jobId, rt);
    }
    return rt;
  }

  private async currentAttempt(jobId: string): Promise<AttemptRecord | undefined> {
    const attempts = await this.store.listAttempts(jobId);
    return attempts[attempts.length - 1];
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
      if (
        this.opts.clock.now() - this.inventoryAt >= inventoryEveryMs &&
        this.opts.cluster.pools.some((p) => p.executor !== "local")
      ) {
        this.inventoryAt = this.opts.clock.now();
        await this.syncInventory(false);
      }
      const jobs = await this.store.listJobs({ activeOnly: true });
      const current = new Map<string, AttemptRecord | undefined>();
      for (const job of jobs) current.set(job.id, await this.currentAttempt(job.id));
      const launches = await this.schedule(jobs, current);
      for (const job of jobs) {
        const rt = this.runtime(job.id);
        if (rt.busy) continue;
        const launch = launches.get(job.id);
        started.set(
          job.id,
          this.runTask(job, rt, () => (launch ? this.launch(job, rt, launch) : this.advance(job, rt))),
        );
      }
    } catch (err) {
      this.opts.log?.(`supervisor pass: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    } finally {
      this.passing = false;
    }
    return started;
  }

  /** Runs one job's work with its lock held; errors are logged, never thrown. */
  private runTask(job: JobRecord, rt: JobRuntime, work: () => Promise<void>): Promise<void> {
    rt.busy = true;
    const task = (async () => {
      try {
        await work();
      } catch (err) {
        this.opts.log?.(`job ${job.id}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      } finally {
        rt.busy = false;
        this.launching.delete(job.id);
      }
    })();
    this.tasks.add(task);
    void task.finally(() => this.tasks.delete(task));
    return task;
  }

  /**
   * The queue: every job waiting to launch (PENDING, or RECOVERING past its backoff) in order of priority and
   * submission; those whose devices are free launch, the others get their place and reason (`queueInfo`).
   */
  private async schedule(
    jobs: readonly JobRecord[],
    current: ReadonlyMap<string, AttemptRecord | undefined>,
  ): Promise<Map<string, Launch>> {
    const now = this.opts.clock.now();
    const queue: QueuedJob[] = [];
    for (const job of jobs) {
      const attempt = current.get(job.id);
      const rt = this.runtime(job.id);
      if (rt.busy || (attempt && attempt.endedAt === null)) continue;
      if (job.state !== JobState.Pending && job.state !== JobState.Recovering) continue;
      if (now < rt.nextLaunchAt) continue;
      queue.push({
        id: job.id,
        priority: job.spec.priority ?? 0,
        queuedAt: job.createdAt,
        preference: job.spec.pools,
        nodesNeeded: job.spec.nodes,
        minNodes: job.spec.minNodes,
        procsPerNode: job.spec.procsPerNode,
        avoidNodes: rt.avoid,
        avoidPools: await this.failingPools(job),
      });
    }
    const launches = new Map<string, Launch>();
    const view = new Map<string, QueueInfo>();
    // A full disk pauses launches (a rank could not write its log, reports, exit record or checkpoints): no attempt is
    // spent and no node struck; they resume once there is space.
    const full = queue.length > 0 ? await this.fullDisk(jobs.filter((j) => queue.some((q) => q.id === j.id))) : null;
    if (full) {
      for (const q of queue) view.set(q.id, { queuePosition: null, waitingFor: full });
      this.queueView = view;
      return launches;
    }
    if (queue.length > 0) {
      const nodes: DeviceNode[] = (await this.store.listNodes()).map((n) => ({
        name: n.name,
        pool: n.pool,
        cordoned: n.cordoned,
        devices: n.devices,
      }));
      const inUse = await this.devicesInUse(jobs, current);
      const poolNames = this.opts.cluster.pools.map((p) => p.name);
      const decisions = scheduleQueue(queue, nodes, inUse, poolNames);
      for (const q of queue) {
        const d = decisions.get(q.id)!;
        const job = jobs.find((j) => j.id === q.id)!;
        const rt = this.runtime(q.id);
        if (d.kind === "launch") {
          this.launching.set(q.id, { nodes: d.nodes, devices: d.devices });
          launches.set(q.id, { ...d, failing: [...(q.avoidPools ?? [])] });
          rt.waitingNoted = false;
          continue;
        }
        view.set(q.id, { queuePosition: d.position, waitingFor: d.reason });
        if (!rt.waitingNoted) {
          rt.waitingNoted = true;
          const message = d.forDevices
            ? `queued at position ${d.position}: ${d.reason}`
            : `waiting for capacity: ${d.reason}`;
          await this.event(job.id, "job.waiting", message, { from: now, position: d.position, reason: d.reason });
        }
      }
    }
    this.queueView = view;
    return launches;
  }

  /** Devices held by live attempts and by launches under way, per node. */
  private async devicesInUse(
    jobs: readonly JobRecord[],
    current: ReadonlyMap<string, AttemptRecord | undefined>,
  ): Promise<Map<string, Set<number>>> {
    const use = new Map<string, Set<number>>();
    const add = (nodes: readonly string[], devices: readonly number[][]) =>
      nodes.forEach((node, i) => {
        const set = use.get(node) ?? new Set<number>();
        for (const d of devices[i] ?? []) set.add(d);
        use.set(node, set);
      });
    for (const job of jobs) {
      const attempt = current.get(job.id);
      if (attempt && attempt.endedAt === null) add(attempt.nodes, await this.devicesOf(job, attempt));
    }
    for (const l of this.launching.values()) add(l.nodes, l.devices);
    return use;
  }

  /** An attempt's devices: as recorded at launch (devices.json in its folder), else what older versions used. */
  private async devicesOf(job: JobRecord, attempt: AttemptRecord): Promise<number[][]> {
    const key = `${job.id}/${attempt.n}`;
    const known = this.attemptDevices.get(key);
    if (known) return known;
    let devices: number[][] | null = null;
    try {
      const raw = JSON.parse(await readFile(path.join(attempt.dir, "devices.json"), "utf8")) as unknown;
      if (
        Array.isArray(raw) &&
        raw.length === attempt.nodes.length &&
        raw.every((l) => Array.isArray(l) && l.every((d) => Number.isInteger(d) && d >= 0 && d < 4096))
      ) {
        devices = raw as number[][];
      }
    } catch {
      // launched before devices were recorded, or the file is gone: fall back below
    }
    if (!devices) {
      const perNode = this.opts.cluster.pools.find((p) => p.name === attempt.pool)?.devicesPerNode ?? 1;
      const list = [...new Set(Array.from({ length: job.spec.procsPerNode }, (_, i) => i % perNode))];
      devices = attempt.nodes.map(() => list);
    }
    this.attemptDevices.set(key, devices);
    return devices;
  }

  private async advance(job: JobRecord, rt: JobRuntime): Promise<void> {
    const attempt = await this.currentAttempt(job.id);
    const attemptLive = attempt !== undefined && attempt.endedAt === null;
    if (!attemptLive) return; // launches come from the queue (schedule)
    if (attempt.state === AttemptState.Launching) {
      // The control plane died while launching: the gang may be incomplete. Stop what exists and launch again,
      // without charging the job a restart (it was not the job's fault).
      await this.stopAttempt(job, attempt, AttemptState.Failed, "control plane restarted during launch");
      await this.setJobState(job, JobState.Recovering, "relaunching after an interrupted launch");
      return;
    }
    await this.watch(job, attempt, rt);
  }

  private async launch(job: JobRecord, rt: JobRuntime, placement: Launch): Promise<void> {
    const spec = job.spec;
    const failing = placement.failing;
    rt.hangDump = null;
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
    // The devices are the attempt's from now on (devices.json lets a restarted server count them too).
    this.attemptDevices.set(`${job.id}/${n}`, placement.devices);
    await writeFile(path.join(dir, "devices.json"), JSON.stringify(placement.devices), { mode: 0o600 });
    await this.store.createAttempt(attempt);
    await this.setJobState(job, JobState.Starting, null);
    let launched;
    try {
      await checkLaunchable(spec);
      launched = await this.opts.executor.launch({
        jobId: job.id,
        jobName: job.name,
        attempt: n,
        dir,
        pool,
        nodes: placement.nodes,
        devices: placement.devices,
        procsPerNode: spec.procsPerNode,
        command: spec.command,
        env: spec.env,
        workdir: spec.workdir,
        masterPort: attempt.masterPort,
        checkpointDir: spec.checkpoint.dir,
        resumeFrom: attempt.resumeFrom,
      });
    } catch (err) {
      await this.launchFailed(job, attempt, placement, err);
      return;
    }
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
      const message = `running on ${placement.nodes.length} of ${spec.nodes} node(s): no pool has enough free, healthy nodes`;
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
    if (rt.hangDump && rt.hangDump.attempt === attempt.n) {
      // Hung ranks are writing their stacks: nothing else is judged until the dump deadline, then the hang is recorded.
      if (this.opts.clock.now() >= rt.hangDump.deadline) await this.finishHang(job, attempt, rt);
      return;
    }
    const ranks = await this.store.listRanks(job.id, attempt.n);
    const seen = await this.ingest(job, attempt, ranks, rt);
    if (seen.steps && job.state === JobState.Starting) await this.setJobState(job, JobState.Running, null);

    const statuses = await this.opts.executor.poll(attempt.dir, ranks);
    await this.recordExits(ranks, statuses);
    const exits = toRankExits(ranks, statuses);
    if (job.state === JobState.Running) await this.injectPoolFaults(job, attempt, ranks);
    if (exits.some((e) => e.code !== 0)) {
      await this.ingest(job, attempt, ranks, rt, true); // the last reports before the crash count
      await this.handleCrash(job, attempt, ranks, statuses);
      return;
    }
    if (exits.length === ranks.length && ranks.length > 0) {
      await this.ingest(job, attempt, ranks, rt, true);
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
    // Per step: stored steps are thinned, so two neighbours may be several steps apart.
    const intervals = recent
      .slice(1)
      .map((s, i) => (s.t - recent[i]!.t) / Math.max(1, s.step - recent[i]!.step))
      .filter((d) => d >= 0);
    const d = job.spec.detection;
    const policy = {
      startupSeconds: d.startupSeconds,
      minSeconds: d.hangMinSeconds,
      multiple: d.hangMultiple,
      percentile: 0.95,
    };
    const timeoutMs = hangTimeoutMs(policy, intervals);
    // A rank whose report file (or log, in regex mode) holds bytes not read yet is alive as of the file's mtime:
    // ingestion lagging behind a flood must never look like a hang.
    const view: RankProgress[] = await Promise.all(
      ranks.map(async (r) => ({
        rank: r.rank,
        lastReportAt: latest(
          progress.find((p) => p.rank === r.rank)?.lastT ?? null,
          await unreadActivity(r, job.spec.progress.regex !== null),
        ),
        processState: r.pid !== null ? this.opts.executor.processState(r) : null,
      })),
    );
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
    const lastStep = progress.find((p) => p.rank === culprit.rank)?.lastStep ?? null;
    const silent = Math.round(verdict.silentMs / 100) / 10;
    // The stacks take a while to be written: record the incident on a later tick (no job waits for this one).
    this.runtime(job.id).hangDump = {
      attempt: attempt.n,
      deadline: now + d.stackDumpSeconds * 1000,
      logPath: rank.logPath,
      facts: {
        cause: "hang",
        culpritRank: rank.rank,
        culpritNode: rank.node,
        faultAt: view.find((v) => v.rank === culprit.rank)?.lastReportAt ?? attempt.startedAt,
        detectedAt: now,
        summary: `no progress for ${silent}s (timeout ${Math.round(verdict.timeoutMs / 100) / 10}s); ${culprit.reason}`,
        hard: false,
        signature: "",
        lastStep,
        evidence: { silentMs: verdict.silentMs, timeoutMs: verdict.timeoutMs, processStates: view },
      },
    };
    if (d.stackDumpSeconds <= 0) await this.finishHang(job, attempt, this.runtime(job.id));
  }

  /** After the stack-dump deadline: the culprit's stacks go into the hang incident, which stops the gang. */
  private async finishHang(job: JobRecord, attempt: AttemptRecord, rt: JobRuntime): Promise<void> {
    const dump = rt.hangDump!;
    rt.hangDump = null;
    const stack = stackExcerpt(await tailLines(dump.logPath, 80));
    await this.handleIncident(job, attempt, { ...dump.facts, evidence: { stack, ...dump.facts.evidence } });
  }

  /**
   * A launch that failed (the workdir or command is missing, spawn failed): an incident like any other, counted
   * against recovery.maxRestarts; when no retry can help (ENOENT of the workdir or command) the job fails at once.
   */
  private async launchFailed(job: JobRecord, attempt: AttemptRecord, placement: Launch, err: unknown): Promise<void> {
    const e = err as NodeJS.ErrnoException;
    const code = err instanceof LaunchError ? err.code : (e?.code ?? "");
    if (code === "ENOSPC") {
      // Not the job's fault nor the node's: no incident, no restart spent; launches pause until there is space.
      this.diskFullSeenAt = this.opts.clock.now();
      const why = `launch paused: disk full (${err instanceof Error ? err.message : String(err)})`;
      await this.stopAttempt(job, attempt, AttemptState.Failed, why);
      await this.setJobState(job, JobState.Recovering, why);
      await this.event(job.id, "disk.full", why, { path: e?.path ?? null });
      return;
    }
    const permanent = err instanceof LaunchError ? err.permanent : permanentLaunchCodes.has(code);
    const message = err instanceof Error ? err.message : String(err);
    const now = this.opts.clock.now();
    await this.handleIncident(job, attempt, {
      cause: permanent ? "software" : "unknown",
      culpritRank: null,
      culpritNode: permanent ? null : (placement.nodes[0] ?? null),
      faultAt: now,
      detectedAt: now,
      summary: `launch failed: ${message}`,
      hard: false,
      signature: `launch ${code}`,
      retryable: !permanent,
      lastStep: attempt.resumeStep,
      evidence: { launch: true, code, error: message, workdir: job.spec.workdir, command: job.spec.command[0] },
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
      // What the executor itself knows (a lost host) stays first in the evidence, before the rank's own last lines.
      toRankExits(ranks, statuses).map(async (e) => ({
        ...e,
        tail: [...e.tail, ...(await tailLines(ranksLog(ranks, e.rank), 40))],
      })),
    );
    const attribution = attributeFailure(exits)!;
    const culprit = attribution.culprit;
    const classification = culprit.lost
      ? lostExitClassification(culprit.lost)
      : classifyFailure(
          { code: culprit.code, signal: culprit.signal, tail: culprit.tail },
          this.opts.cluster.causePatterns ?? [],
        );
    const stillRunning = new Set(ranks.filter((r) => !exits.some((e) => e.rank === r.rank)).map((r) => r.rank));
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
      // Peers still running when the failure was seen go down with the gang; what they logged meanwhile (gloo's
      // "Connection reset by peer") makes them victims too.
      afterStop: async () => {
        const after = await Promise.all(
          toRankExits(ranks, await this.opts.executor.poll(attempt.dir, ranks)).map(async (e) => ({
            ...e,
            tail: await tailLines(ranksLog(ranks, e.rank), 40),
          })),
        );
        const victims = victimsOf(culprit, after, stillRunning);
        return {
          summary: `${culpritReason(culprit, victims.length, attribution.earlierReportedPeerLoss)}: ${classification.detail}`,
          evidence: { victims: victims.map((v) => v.rank), victimDetail: victims },
        };
      },
    });
  }

  private async handleIncident(job: JobRecord, attempt: AttemptRecord, incident: IncidentFacts): Promise<void> {
    await this.stopAttempt(job, attempt, AttemptState.Failed, incident.summary);
    if (incident.afterStop) {
      const late = await incident.afterStop();
      incident.summary = late.summary ?? incident.summary;
      incident.evidence = { ...incident.evidence, ...late.evidence };
    }
    const infrastructure = isInfrastructureCause(incident.cause);
    const node = (await this.store.listNodes({ strikesSince: this.strikesSince() })).find(
      (n) => n.name === incident.culpritNode,
    );
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
      await this.store.addStrike({
        node: node.name,
        t: incident.detectedAt,
        jobId: job.id,
        incidentId: id,
        cause: incident.cause,
      });
      const within = `within ${formatWindow(this.strikeWindowSeconds())}`;
      if (cordon) {
        await this.store.updateNode(node.name, {
          cordoned: true,
          reason: `${node.strikes + 1} strike(s) ${within}; last: ${incident.cause}: ${incident.summary}`,
        });
      }
      if (cordon && !node.cordoned) {
        await this.managerCordon(
          node.name,
          node.pool,
          true,
          `${incident.cause} in job ${job.id}, ${node.strikes + 1} strike(s) ${within}: ${incident.summary}`,
        );
        await this.event(
          job.id,
          "node.cordoned",
          `cordoned ${node.name} after ${node.strikes + 1} strike(s) ${within}${incident.hard ? " (hard device evidence)" : ""}`,
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
        exitSignal:
          s.state === "exited" ? s.signal : s.state === "lost" ? lostSignal : s.hostLost ? hostLostSignal : "VANISHED",
        exitedAt: s.at,
      };
      await this.store.upsertRank(updated);
      Object.assign(r, updated);
    }
  }

  /**
   * Reads new report lines (and log lines in regex mode); returns whether any step was seen. Each pass reads at most
   * `jobReadBudget` bytes per job (split over its ranks), so a flooding rank cannot starve other jobs; `drain` repeats
   * passes until the files are read to their end (a finished attempt's last reports count).
   */
  private async ingest(
    job: JobRecord,
    attempt: AttemptRecord,
    ranks: RankRecord[],
    _rt: JobRuntime,
    drain = false,
  ): Promise<Ingested> {
    let saw = false;
    let nan: Ingested["nan"] = null;
    // Linear-time matching: a user's regex must never stall supervision on a hostile log line.
    const regex = job.spec.progress.regex ? linearOrNull(job.spec.progress.regex) : null;
    const budgetBytes = Math.floor(jobReadBudget / Math.max(1, ranks.length));
    for (let pass = 0; pass < (drain ? maxDrainPasses : 1); pass++) {
      let pending = false;
      for (const r of ranks) {
        await this.noteRankPid(r);
        const read = await readRank(r, {
          jobId: job.id,
          attempt: attempt.n,
          startedAt: attempt.startedAt,
          regex,
          now: () => this.opts.clock.now(),
          budgetBytes,
        });
        if (r.rank === 0) for (const c of read.checkpoints) await this.onCheckpointReported(job, attempt, c);
        if (read.nan && nan === null) nan = { rank: r.rank, ...read.nan };
        const before = r.badReports ?? 0;
        if (Object.keys(read.cursor).length > 0) {
          await this.store.ingestReports(job.id, attempt.n, r.rank, read.cursor, read.samples);
          Object.assign(r, read.cursor);
        }
        if (before === 0 && read.bad > 0) {
          await this.event(
            job.id,
            "report.malformed",
            `rank ${r.rank}: skipped ${read.bad} report line(s) that are not valid reports (first: ${read.firstBad}); ` +
              "later ones are only counted (see the rank's badReports)",
            { rank: r.rank, attempt: attempt.n, count: read.bad, first: read.firstBad },
          );
        }
        saw ||= read.samples.length > 0;
        pending ||= read.pending;
      }
      if (!pending) break;
    }
    return { steps: saw, nan };
  }

  /** Records the rank process's own pid (the wrapper's child) once the executor can tell it. */
  private async noteRankPid(r: RankRecord): Promise<void> {
    if (r.rankPid != null || r.exitedAt !== null || !this.opts.executor.rankPid) return;
    const pid = this.opts.executor.rankPid(r);
    if (pid === null) return;
    r.rankPid = pid;
    await this.store.upsertRank(r);
  }

  private async onCheckpointReported(
    job: JobRecord,
    attempt: AttemptRecord,
    report: { step: number; path: string; t: number; saveS: number | null },
  ): Promise<void> {
    const { step, path: dir } = report;
    const protect = attempt.resumeFrom;
    const verification = await verifyCheckpoint(dir, step);
    if (!verification.ok) {
      // A report read a second time (a restarted server re-reads what it had not yet marked as read) may name a
      // checkpoint that was verified then and pruned since, behind newer verified ones: nothing to say about it.
      const known = await this.store.listCheckpoints(job.id);
      const pruned = known.some((c) => c.verified && c.step > step) && !(await exists(dir));
      if (pruned) return;
    }
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
    if (terminalJobStates.has(to) && this.opts.executor.release) {
      // The job is over: what it held beyond its attempts (a Slurm allocation) goes back.
      await this.opts.executor.release(path.join(this.opts.home, "jobs", job.id)).catch((err: unknown) => {
        this.opts.log?.(`${job.id}: releasing its allocation failed: ${(err as Error).message}`);
      });
    }
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

/** How often the nodes of workload-manager pools are listed again (drains, downs and returns made outside switchyard). */
const inventoryEveryMs = 10_000;

/** Bytes of report files read per job and pass (split over its ranks): ingestion is bounded and fair across jobs. */
const jobReadBudget = 8 << 20;
/** Passes at most when a finished attempt's files are read to their end. */
const maxDrainPasses = 64;

/**
 * Free space for unprivileged writers on the filesystem of `folder` (or its nearest existing parent), and the least
 * that counts as not full: 64 MiB, or 2% of a smaller filesystem.
 */
async function freeBytes(folder: string): Promise<{ available: number; minFree: number } | null> {
  for (let dir = folder; ; dir = path.dirname(dir)) {
    try {
      const s = await statfs(dir);
      const size = s.blocks * s.bsize;
      return { available: s.bavail * s.bsize, minFree: Math.min(64 << 20, size * 0.02) };
    } catch {
      if (path.dirname(dir) === dir) return null;
    }
  }
}

function formatBytes(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${Math.round(n / 1024)} KiB`;
}

/** What a rank's exit signal reads as when its exit record was lost (not the node's fault: no strike). */
const lostSignal = "LOST";

/** A culprit whose exit record was lost (its wrapper could not write it: a full disk): cause unknown, no strike. */
function lostExitClassification(why: string): Classification {
  return {
    cause: "unknown",
    detail: `its exit status is unknown: ${why}`,
    evidence: "",
    hardDeviceEvidence: false,
    retryable: true,
    signature: "",
    patternId: null,
  };
}

const latest = (a: number | null, b: number | null): number | null =>
  a === null ? b : b === null ? a : Math.max(a, b);

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
      exits.push({
        rank: r.rank,
        node: r.node,
        code: null,
        signal: s.hostLost ? hostLostSignal : "VANISHED",
        at,
        tail: s.hostLost ? [s.hostLost] : [],
      });
    else if (s.state === "lost")
      exits.push({ rank: r.rank, node: r.node, code: null, signal: lostSignal, at, tail: [], lost: s.why });
    else exits.push({ rank: r.rank, node: r.node, code: s.code, signal: s.signal, at, tail: [] });
  }
  return exits;
}

/**
 * Refuses a launch that cannot start: the workdir must be a folder and the command an executable file (found on
 * the job's PATH when it has no slash). Both are the job's own errors: permanent.
 */
async function checkLaunchable(spec: CompiledJobSpec): Promise<void> {
  const dir = await stat(spec.workdir).catch(() => null);
  if (!dir || !dir.isDirectory()) {
    throw new LaunchError(
      `workdir ${spec.workdir} ${dir ? "is not a folder" : "does not exist"} (fix: create it, or set workdir in ${spec.source})`,
      dir ? "ENOTDIR" : "ENOENT",
      true,
    );
  }
  const command = spec.command[0]!;
  const candidates = command.includes("/")
    ? [path.resolve(spec.workdir, command)]
    : (spec.env.PATH ?? process.env.PATH ?? "")
        .split(path.delimiter)
        .filter((d) => d !== "")
        .map((d) => path.resolve(spec.workdir, d, command));
  for (const file of candidates) {
    const st = await stat(file).catch(() => null);
    if (
      st?.isFile() &&
      (await access(file, fsConstants.X_OK).then(
        () => true,
        () => false,
      ))
    )
      return;
  }
  throw new LaunchError(
    command.includes("/")
      ? `command ${command} is not an executable file (fix: check command[0] in ${spec.source}, or chmod +x it)`
      : `command ${command} is not found on PATH (fix: check command[0] in ${spec.source}, or give its full path)`,
    "ENOENT",
    true,
  );
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

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}
