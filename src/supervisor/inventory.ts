import { defaultStrikeWindowSeconds, strikesSince } from "../core/recovery.js";
import { localNodeNames } from "../executors/local/local.js";
import type { NodeRecord } from "../store/port.js";
import type { SupervisorContext } from "./context.js";

/** How often the nodes of workload-manager pools are listed again (drains, downs and returns made outside switchyard). */
const inventoryEveryMs = 10_000;

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
 * The node table: kept in step with the pools (local pools from the cluster YAML, workload-manager pools from what it
 * says), cordons told to the workload manager (Slurm: drain <-> resume), and the strike window.
 */
export class Inventory {
  /** When the workload manager's nodes were last listed. */
  private syncedAt = 0;

  constructor(private readonly ctx: SupervisorContext) {}

  strikeWindowSeconds(): number {
    return this.ctx.cluster.strikeWindowSeconds ?? defaultStrikeWindowSeconds;
  }

  /** The earliest strike time that counts now. */
  strikesSince(): number {
    return strikesSince(this.ctx.now(), this.strikeWindowSeconds());
  }

  /** Syncs again when the last listing of workload-manager pools is older than inventoryEveryMs (none: never). */
  async syncIfDue(): Promise<void> {
    const now = this.ctx.now();
    if (now - this.syncedAt < inventoryEveryMs || !this.ctx.cluster.pools.some((p) => p.executor !== "local")) return;
    this.syncedAt = now;
    await this.sync(false);
  }

  /**
   * Makes the node table match the pools: local pools from the cluster YAML, pools of a workload manager from what it
   * says (Slurm: sinfo). A node the workload manager will not run on (down, drained, not responding) is cordoned with
   * its words as the reason, and uncordoned when it is back, unless switchyard cordoned it itself.
   */
  async sync(initial: boolean): Promise<void> {
    const { store, executor } = this.ctx;
    const seen: Array<{ name: string; pool: string; devices: number }> = [];
    const states = new Map<string, { usable: boolean; reason: string | null }>();
    for (const p of this.ctx.cluster.pools) {
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
        for (const n of (await store.listNodes()).filter((x) => x.pool === p.name)) {
          seen.push({ name: n.name, pool: p.name, devices: n.devices });
        }
        if (initial) this.ctx.log(`pool ${p.name}: cannot list its nodes: ${(err as Error).message}`);
      }
    }
    await store.syncNodes(seen);
    if (states.size === 0) return;
    for (const n of await store.listNodes()) {
      const st = states.get(n.name);
      if (!st) continue;
      const managerCordon = n.reason?.startsWith("workload manager: ") ?? false;
      if (!st.usable && !n.cordoned) {
        await store.updateNode(n.name, { cordoned: true, reason: `workload manager: ${st.reason ?? "unusable"}` });
        await this.ctx.event(
          null,
          "node.unavailable",
          `${n.name} is ${st.reason ?? "unusable"} in the workload manager`,
          { node: n.name },
        );
      } else if (st.usable && n.cordoned && managerCordon) {
        await store.updateNode(n.name, { cordoned: false, reason: null });
        await this.ctx.event(null, "node.available", `${n.name} is back in service in the workload manager`, {
          node: n.name,
        });
      }
    }
  }

  /** Tells the workload manager of a cordon (Slurm: drain); a failure there is an event, never a lost cordon. */
  async tellManager(node: string, poolName: string, cordoned: boolean, reason: string): Promise<void> {
    const pool = this.ctx.pool(poolName);
    if (!pool || pool.executor === "local" || !this.ctx.executor.setCordon) return;
    try {
      await this.ctx.executor.setCordon(pool, node, cordoned, reason);
    } catch (err) {
      await this.ctx.event(
        null,
        "node.manager_error",
        `${node}: the workload manager refused the ${cordoned ? "drain" : "resume"}: ${(err as Error).message}`,
        { node },
      );
    }
  }

  /** A cordon or uncordon asked for by a person (uncordon clears the node's strikes). */
  async setCordon(node: string, cordoned: boolean, reason: string): Promise<void> {
    const known = (await this.ctx.store.listNodes()).find((n) => n.name === node);
    if (!known) throw new Error(`no node named ${node}`);
    await this.ctx.store.updateNode(node, cordoned ? { cordoned, reason } : { cordoned, reason: null, strikes: 0 });
    await this.tellManager(node, known.pool, cordoned, reason);
    await this.ctx.event(null, cordoned ? "node.cordoned" : "node.uncordoned", `${node}: ${reason}`, { node });
  }

  /**
   * Nodes with the strikes that count now (within the cluster's strikeWindowSeconds) and the incidents that made
   * them: job, incident (its number within the job), cause, time.
   */
  async nodes(): Promise<NodeView[]> {
    const { store } = this.ctx;
    const since = this.strikesSince();
    const [nodes, strikes] = await Promise.all([
      store.listNodes({ strikesSince: since }),
      store.listStrikes({ since }),
    ]);
    const numbers = new Map<string, number[]>();
    for (const jobId of new Set(strikes.map((s) => s.jobId).filter((j): j is string => j !== null))) {
      numbers.set(
        jobId,
        (await store.listIncidents(jobId)).map((i) => i.id),
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
}
