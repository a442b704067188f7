import { readFile } from "node:fs/promises";
import path from "node:path";
import { queueOrder, scheduleQueue, type DeviceNode, type QueueDecision, type QueuedJob } from "../core/placement.js";
import { JobState } from "../core/states.js";
import type { AttemptRecord, JobRecord } from "../store/port.js";
import type { JobRuntime, SupervisorContext } from "./context.js";
import { judgeDisk } from "./detectors/disk.js";
import type { Incidents } from "./incidents.js";

/** Where the queue put a job: launch on these nodes and devices (one list per node). */
export interface Placement {
  pool: string;
  nodes: string[];
  shrunk: boolean;
  devices: number[][];
  /** Pools that keep failing this job (for the "moved" event). */
  failing: string[];
  /** What the pre-flight health probe said about the hosts (supervisor/health.ts), for the attempt's event. */
  preflight?: string | null;
}

/** A job's place in the queue, for `ps` and the dashboard. */
export interface QueueInfo {
  /** 1-based place among waiting jobs; null when the job is not waiting for placement. */
  queuePosition: number | null;
  /** Why it waits, e.g. "waiting for 2 device(s) on local-ascend: 1 free"; null when it does not. */
  waitingFor: string | null;
}

/** Training or a service's replica (core/spec.ts `workload`). */
const kindOf = (job: JobRecord | undefined): string => job?.spec.workload?.kind ?? "training";

/**
 * One inventory, two kinds of work: a node running a service's replicas is not given to a training gang, nor the
 * reverse (a whole node counts as busy for the other kind). Training is placed first, then replicas, each kind by
 * core/placement.ts's rules; a node one kind was just given is closed to the other.
 */
function scheduleByKind(
  queue: readonly QueuedJob[],
  jobs: readonly JobRecord[],
  current: ReadonlyMap<string, AttemptRecord | undefined>,
  launching: ReadonlyMap<string, { nodes: string[] }>,
  nodes: readonly DeviceNode[],
  inUse: Map<string, Set<number>>,
  poolNames: readonly string[],
): Map<string, QueueDecision> {
  const byId = new Map(jobs.map((j) => [j.id, j]));
  const held = new Map<string, Set<string>>(); // node -> kinds on it
  const hold = (node: string, kind: string) => held.set(node, (held.get(node) ?? new Set()).add(kind));
  for (const job of jobs) {
    const a = current.get(job.id);
    if (a && a.endedAt === null) for (const n of a.nodes) hold(n, kindOf(job));
  }
  for (const [id, l] of launching) for (const n of l.nodes) hold(n, kindOf(byId.get(id)));
  const decisions = new Map<string, QueueDecision>();
  for (const kind of ["training", "replica"]) {
    const mine = queue.filter((q) => kindOf(byId.get(q.id)) === kind);
    if (mine.length === 0) continue;
    const use = new Map<string, Set<number>>([...inUse].map(([n, d]) => [n, new Set(d)]));
    for (const n of nodes) {
      if ([...(held.get(n.name) ?? [])].some((k) => k !== kind)) {
        use.set(n.name, new Set(Array.from({ length: n.devices }, (_, i) => i)));
      }
    }
    for (const [id, d] of scheduleQueue(mine, nodes, use, poolNames)) {
      decisions.set(id, d);
      if (d.kind !== "launch") continue;
      d.nodes.forEach((n, i) => {
        hold(n, kind);
        const set = inUse.get(n) ?? new Set<number>();
        for (const dev of d.devices[i] ?? []) set.add(dev);
        inUse.set(n, set);
      });
    }
  }
  // Positions count across kinds: renumber the waiting jobs in queue order.
  let position = 0;
  for (const q of [...queue].sort(queueOrder)) {
    const d = decisions.get(q.id);
    if (d?.kind === "wait") decisions.set(q.id, { ...d, position: ++position });
  }
  return decisions;
}

/**
 * The queue: which waiting jobs launch now and on which devices (core/placement.ts decides), every other waiting job's
 * place and reason, and the devices each live attempt and launch under way holds. A full disk pauses every launch.
 */
export class Queue {
  /** Devices of each attempt (`<job id>/<n>`), one list per node, as launched: what the queue counts as in use. */
  private readonly attemptDevices = new Map<string, number[][]>();
  /** Devices granted to jobs whose launch is under way (no attempt record yet). */
  private readonly launching = new Map<string, { nodes: string[]; devices: number[][] }>();
  private view = new Map<string, QueueInfo>();
  /** When a launch last failed with ENOSPC, and the disk-full reason last said (null: none). */
  private enospcAt: number | null = null;
  private diskFullSaid: string | null = null;

  constructor(
    private readonly ctx: SupervisorContext,
    private readonly incidents: Incidents,
    private readonly runtime: (jobId: string) => JobRuntime,
  ) {}

  /** Where a job stands in the queue (from the last scheduling pass). */
  info(jobId: string): QueueInfo {
    return this.view.get(jobId) ?? { queuePosition: null, waitingFor: null };
  }

  /** The devices an attempt holds from its launch on (devices.json lets a restarted server count them too). */
  holdDevices(jobId: string, attempt: number, devices: number[][]): void {
    this.attemptDevices.set(`${jobId}/${attempt}`, devices);
  }

  /** The job's launch is over (launched or not): its grant no longer counts; its attempt's devices do. */
  launchDone(jobId: string): void {
    this.launching.delete(jobId);
  }

  /** A launch failed with ENOSPC: launches pause for a while (see detectors/disk.ts). */
  noteEnospc(): void {
    this.enospcAt = this.ctx.now();
  }

  /**
   * Every job waiting to launch (PENDING, or RECOVERING past its backoff) in order of priority and submission; those
   * whose devices are free get a placement, the others their place and reason (`info`).
   */
  async schedule(
    jobs: readonly JobRecord[],
    current: ReadonlyMap<string, AttemptRecord | undefined>,
  ): Promise<Map<string, Placement>> {
    const now = this.ctx.now();
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
        avoidPools: await this.incidents.failingPools(job),
      });
    }
    const launches = new Map<string, Placement>();
    const view = new Map<string, QueueInfo>();
    // A full disk pauses launches (a rank could not write its log, reports, exit record or checkpoints): no attempt is
    // spent and no node struck; they resume once there is space.
    const full = queue.length > 0 ? await this.fullDisk(jobs.filter((j) => queue.some((q) => q.id === j.id))) : null;
    if (full) {
      for (const q of queue) view.set(q.id, { queuePosition: null, waitingFor: full });
      this.view = view;
      return launches;
    }
    if (queue.length > 0) {
      const nodes: DeviceNode[] = (await this.ctx.store.listNodes()).map((n) => ({
        name: n.name,
        pool: n.pool,
        cordoned: n.cordoned,
        devices: n.devices,
      }));
      const inUse = await this.devicesInUse(jobs, current);
      const poolNames = this.ctx.cluster.pools.map((p) => p.name);
      const decisions = scheduleByKind(queue, jobs, current, this.launching, nodes, inUse, poolNames);
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
          await this.ctx.event(job.id, "job.waiting", message, { from: now, position: d.position, reason: d.reason });
        }
      }
    }
    this.view = view;
    return launches;
  }

  /**
   * Why launches must wait for disk space, or null (detectors/disk.ts: the home or a queued job's checkpoint folder,
   * or a recent ENOSPC). Said once per episode as an event (`disk.full`, then `disk.ok`) and as each waiting job's
   * reason.
   */
  private async fullDisk(jobs: readonly JobRecord[]): Promise<string | null> {
    const folders = [path.join(this.ctx.home, "jobs"), ...jobs.map((j) => j.spec.checkpoint.dir)];
    const why = await judgeDisk(folders, this.ctx.now(), this.enospcAt);
    if (why && this.diskFullSaid !== why) {
      this.diskFullSaid = why;
      await this.ctx.event(null, "disk.full", `launches paused: ${why}`).catch(() => undefined);
      for (const j of jobs) {
        await this.ctx.store.updateJob(j.id, { reason: `launch paused: ${why}` }).catch(() => undefined);
      }
    } else if (!why && this.diskFullSaid !== null) {
      this.diskFullSaid = null;
      await this.ctx.event(null, "disk.ok", "disk space is back: launches resume");
      for (const j of jobs) {
        if (j.reason?.startsWith("launch paused: disk full")) await this.ctx.store.updateJob(j.id, { reason: null });
      }
    }
    return why;
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
      const perNode = this.ctx.pool(attempt.pool)?.devicesPerNode ?? 1;
      const list = [...new Set(Array.from({ length: job.spec.procsPerNode }, (_, i) => i % perNode))];
      devices = attempt.nodes.map(() => list);
    }
    this.attemptDevices.set(key, devices);
    return devices;
  }
}
