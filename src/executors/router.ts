import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { PoolSpec } from "../core/spec.js";
import { localNodeNames } from "./local/local.js";
import type {
  Executor,
  InventoryNode,
  LaunchedRank,
  LaunchRequest,
  NodeRunResult,
  RankHandle,
  RankStatus,
  RunOnNodesOptions,
} from "./port.js";

/**
 * The supervisor's one executor over many: each pool names its executor (`executor: local | slurm`), a launch goes to
 * that one, and everything after it (poll, stop, signals) to the executor that launched the attempt, found by a marker
 * in the attempt folder, so a restarted server routes the ranks it re-adopts the same way.
 */
export class PoolExecutors implements Executor {
  readonly kind = "pools";
  private readonly byAttemptDir = new Map<string, Executor>();

  constructor(private readonly executors: Readonly<Record<string, Executor>>) {}

  private forPool(pool: PoolSpec): Executor {
    const e = this.executors[pool.executor];
    if (!e) throw new Error(`pool ${pool.name}: no ${pool.executor} executor is configured on this server`);
    return e;
  }

  private forDir(dir: string): Executor {
    const cached = this.byAttemptDir.get(dir);
    if (cached) return cached;
    let kind = "local";
    try {
      kind = readFileSync(path.join(dir, "executor"), "utf8").trim();
    } catch {
      // attempts from before executors were recorded ran locally
    }
    const e = this.executors[kind] ?? this.executors.local;
    if (!e) throw new Error(`attempt ${dir} ran on executor ${kind}, which this server does not have`);
    this.byAttemptDir.set(dir, e);
    return e;
  }

  private forRank(rank: RankHandle): Executor {
    return this.forDir(path.dirname(rank.logPath));
  }

  async launch(req: LaunchRequest): Promise<LaunchedRank[]> {
    const e = this.forPool(req.pool);
    mkdirSync(req.dir, { recursive: true });
    writeFileSync(path.join(req.dir, "executor"), `${e.kind}\n`, { mode: 0o600 });
    this.byAttemptDir.set(req.dir, e);
    return e.launch(req);
  }

  poll(attemptDir: string, ranks: readonly RankHandle[]): Promise<RankStatus[]> {
    return this.forDir(attemptDir).poll(attemptDir, ranks);
  }

  async stop(ranks: readonly RankHandle[], graceMs: number): Promise<void> {
    const groups = new Map<Executor, RankHandle[]>();
    for (const r of ranks) {
      const e = this.forRank(r);
      groups.set(e, [...(groups.get(e) ?? []), r]);
    }
    await Promise.all([...groups].map(([e, rs]) => e.stop(rs, graceMs)));
  }

  signalRank(rank: RankHandle, signal: NodeJS.Signals): boolean {
    return this.forRank(rank).signalRank(rank, signal);
  }

  processState(rank: RankHandle): string | null {
    return this.forRank(rank).processState(rank);
  }

  nativeStacks(rank: RankHandle, outFile: string, timeoutMs: number): boolean {
    return this.forRank(rank).nativeStacks?.(rank, outFile, timeoutMs) ?? false;
  }

  rankPid(rank: RankHandle): number | null {
    return this.forRank(rank).rankPid?.(rank) ?? null;
  }

  async release(jobDir: string): Promise<void> {
    await Promise.all(Object.values(this.executors).map((e) => e.release?.(jobDir)));
  }

  async inventory(pool: PoolSpec): Promise<InventoryNode[]> {
    const e = this.forPool(pool);
    if (e.inventory) return e.inventory(pool);
    return localNodeNames(pool.name, pool.nodes).map((name) => ({
      name,
      devices: pool.devicesPerNode,
      usable: true,
      reason: null,
    }));
  }

  async nodeAddress(pool: PoolSpec, node: string): Promise<string | null> {
    return (await this.forPool(pool).nodeAddress?.(pool, node)) ?? null;
  }

  async setCordon(pool: PoolSpec, node: string, cordoned: boolean, reason: string): Promise<void> {
    await this.forPool(pool).setCordon?.(pool, node, cordoned, reason);
  }

  async runOnNodes(
    pool: PoolSpec,
    nodes: readonly string[],
    argv: readonly string[],
    opts: RunOnNodesOptions,
  ): Promise<NodeRunResult[]> {
    const e = this.forPool(pool);
    if (!e.runOnNodes) throw new Error(`pool ${pool.name}: the ${e.kind} executor cannot run commands on its nodes`);
    return e.runOnNodes(pool, nodes, argv, opts);
  }
}
