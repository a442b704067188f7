import { placeAttempt } from "./recovery.js";

/**
 * The job queue: which waiting jobs launch now, on which devices, and why the others wait. Pure: the supervisor
 * passes in the nodes, the devices in use and the queue, and carries out the decisions.
 *
 * Rules: jobs are taken in queue order (higher `priority` first; ties by submission time). A device runs at most one
 * rank at a time. A job that waits for devices holds its place: later jobs may not take devices in the pools it waits
 * for (strict FIFO per pool, so a big job is never starved by a stream of small ones), but may use other pools. A job
 * that no pool can host even when idle (too few healthy nodes or devices) waits without holding anything.
 */

export interface DeviceNode {
  name: string;
  pool: string;
  cordoned: boolean;
  /** Devices on the node. */
  devices: number;
}

export interface QueuedJob {
  id: string;
  priority: number;
  /** Submission time: FIFO among equal priorities. */
  queuedAt: number;
  /** Pools in the job's order of preference; empty means cluster order. */
  preference: readonly string[];
  nodesNeeded: number;
  /** Shrink down to this many nodes rather than wait (elastic jobs). */
  minNodes: number;
  /** Ranks per node, one device each. */
  procsPerNode: number;
  avoidNodes?: readonly string[];
  avoidPools?: readonly string[];
}

export type QueueDecision =
  | { kind: "launch"; pool: string; nodes: string[]; shrunk: boolean; devices: number[][] }
  | {
      kind: "wait";
      /** 1-based place among the jobs that wait. */
      position: number;
      reason: string;
      /** True when the job waits for busy devices; false when no pool can host it even when idle. */
      forDevices: boolean;
    };

/** Devices in use, per node name. */
export type DeviceUse = ReadonlyMap<string, ReadonlySet<number>>;

/** Queue order: higher priority first, then earlier submission, then id (stable). */
export function queueOrder(a: QueuedJob, b: QueuedJob): number {
  return b.priority - a.priority || a.queuedAt - b.queuedAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

export function scheduleQueue(
  queue: readonly QueuedJob[],
  nodes: readonly DeviceNode[],
  inUse: DeviceUse,
  poolsInClusterOrder: readonly string[],
): Map<string, QueueDecision> {
  const used = new Map<string, Set<number>>();
  for (const n of nodes) used.set(n.name, new Set(inUse.get(n.name) ?? []));
  const freeOn = (n: DeviceNode): number[] => {
    const busy = used.get(n.name)!;
    const free: number[] = [];
    for (let d = 0; d < n.devices; d++) if (!busy.has(d)) free.push(d);
    return free;
  };
  /** Pool -> the waiting job that holds it. */
  const heldBy = new Map<string, string>();
  const decisions = new Map<string, QueueDecision>();
  let position = 0;

  for (const job of [...queue].sort(queueOrder)) {
    const base = { preference: job.preference, poolsInClusterOrder, nodesNeeded: job.nodesNeeded };
    const elastic = { minNodes: job.minNodes, avoidNodes: job.avoidNodes, avoidPools: job.avoidPools };
    const fitsIdle = (n: DeviceNode) => !n.cordoned && n.devices >= job.procsPerNode;
    const fitsNow = (n: DeviceNode) => fitsIdle(n) && !heldBy.has(n.pool) && freeOn(n).length >= job.procsPerNode;

    const now = placeAttempt({ ...base, ...elastic, nodes: nodes.map((n) => ({ ...n, cordoned: !fitsNow(n) })) });
    if (now.pool !== null) {
      const devices = now.nodes.map((name) => {
        const node = nodes.find((n) => n.name === name)!;
        const picked = freeOn(node).slice(0, job.procsPerNode);
        for (const d of picked) used.get(name)!.add(d);
        return picked;
      });
      decisions.set(job.id, { kind: "launch", pool: now.pool, nodes: now.nodes, shrunk: now.shrunk, devices });
      continue;
    }

    position++;
    const idle = placeAttempt({ ...base, ...elastic, nodes: nodes.map((n) => ({ ...n, cordoned: !fitsIdle(n) })) });
    if (idle.pool === null) {
      const tooSmall = nodes.some((n) => !n.cordoned && n.devices < job.procsPerNode);
      const reason = tooSmall
        ? `${idle.reason}; a node needs ${job.procsPerNode} device(s) for procsPerNode: ${job.procsPerNode}`
        : idle.reason;
      decisions.set(job.id, { kind: "wait", position, reason, forDevices: false });
      continue;
    }
    // Waits for devices: hold every pool that could host it when idle, so no later job overtakes it there.
    const order = job.preference.length > 0 ? job.preference : poolsInClusterOrder;
    const hostable = order.filter(
      (p) => nodes.filter((n) => n.pool === p && fitsIdle(n)).length >= Math.min(job.minNodes, job.nodesNeeded),
    );
    const pool = idle.pool;
    const holder = heldBy.get(pool);
    const free = nodes.filter((n) => n.pool === pool && fitsIdle(n)).reduce((sum, n) => sum + freeOn(n).length, 0);
    const need = job.nodesNeeded * job.procsPerNode;
    const shape =
      job.nodesNeeded > 1 || job.procsPerNode > 1 ? ` (${job.nodesNeeded} node(s) x ${job.procsPerNode})` : "";
    const reason =
      `waiting for ${need} device(s) on ${pool}${shape}: ${free} free` +
      (holder && free > 0 ? `, held for ${holder}, ahead in the queue` : "");
    for (const p of hostable) if (!heldBy.has(p)) heldBy.set(p, job.id);
    decisions.set(job.id, { kind: "wait", position, reason, forDevices: true });
  }
  return decisions;
}
