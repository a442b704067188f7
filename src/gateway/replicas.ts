/**
 * Supervised model-server replicas (issue 4 part 5): for every pool of a service with a `replicas:` block, launch
 * `count` replicas through the Executor port (one rank per replica), wait until the engine's own health probe says
 * ready, register each with the gateway, and keep them running like training ranks: a replica that exits or vanishes
 * is unregistered at once and restarted with backoff; failures count as strikes against the node it ran on, a node
 * with enough strikes is cordoned, and a replica whose pool has no usable node left moves to the next pool of the
 * service. State lives in memory; every decision is reported through `onEvent`.
 */
import { createServer } from "node:net";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { decideRecovery, type RecoveryPolicy } from "../core/recovery.js";
import type { PoolSpec, Vendor } from "../core/spec.js";
import { LocalExecutor, localNodeNames } from "../executors/local/local.js";
import type { Executor, RankHandle, RankStatus } from "../executors/port.js";
import { findPython, pythonPlaceholder } from "../executors/python.js";
import type { BackendRegistration } from "./backends.js";
import {
  MissingApiKeyEnvError,
  type CompiledPool,
  type CompiledServices,
  type EngineKind,
  type ReplicaSpec,
} from "./config.js";
import { switchyardHome } from "../paths.js";
import { engineAdapter } from "./engines.js";

export interface ReplicaRecovery extends RecoveryPolicy {
  /** SIGTERM to SIGKILL when a replica is stopped. */
  graceSeconds: number;
}

export const defaultReplicaRecovery: ReplicaRecovery = {
  maxRestarts: 10,
  backoffSeconds: 1,
  maxBackoffSeconds: 30,
  strikesBeforeCordon: 2,
  graceSeconds: 5,
};

export const ReplicaState = {
  starting: "starting",
  ready: "ready",
  backoff: "backoff",
  failed: "failed",
  stopped: "stopped",
} as const;
export type ReplicaState = (typeof ReplicaState)[keyof typeof ReplicaState];

export type ReplicaEventKind =
  | "launched"
  | "launch-failed"
  | "ready"
  | "not-ready"
  | "exited"
  | "restart"
  | "cordoned"
  | "moved"
  | "gave-up"
  | "stopped"
  /** A WARNING line the replica logged before it became ready (e.g. serving random weights), repeated for the console. */
  | "warning";

export interface ReplicaEvent {
  t: number;
  kind: ReplicaEventKind;
  service: string;
  /** Replica name: `<home pool>-<index>`, stable across restarts and moves. */
  replica: string;
  /** The pool it runs on (or ran on) when the event happened. */
  pool: string;
  node?: string;
  port?: number;
  backendId?: string;
  message: string;
}

export interface ReplicaSnapshot {
  service: string;
  replica: string;
  homePool: string;
  pool: string;
  node: string | null;
  engine: EngineKind;
  state: ReplicaState;
  port: number | null;
  url: string | null;
  attempt: number;
  /** Restarts since the replica last stayed ready for `stableAfterMs`. */
  restarts: number;
  backendId: string | null;
  /** Pid of the rank's wrapper (its process group); the model server is its child. */
  pid: number | null;
  logPath: string | null;
  readyAt: number | null;
  lastExit: string | null;
}

export interface NodeSnapshot {
  name: string;
  pool: string;
  strikes: number;
  cordoned: boolean;
}

/** What the supervisor needs from the gateway. */
export interface ReplicaGateway {
  registerBackend(reg: BackendRegistration): string;
  unregisterBackend(id: string): Promise<boolean>;
}

export interface ReplicaSupervisorOptions {
  gateway: ReplicaGateway;
  config: CompiledServices;
  /** Default: the local executor. */
  executor?: Executor;
  /** Per-replica attempt folders (logs, exit records) go under it. */
  runDir: string;
  /** Working directory of the replicas: relative paths in `command` resolve against it. Default: process.cwd(). */
  workdir?: string;
  /** Cluster pools by name (vendor, node count); a pool not listed gets one virtual local node per replica. */
  poolSpecs?: readonly PoolSpec[];
  /** Defaults under each pool's `replicas.recovery`. */
  recovery?: Partial<ReplicaRecovery>;
  /** How often exits are polled and starting replicas probed. */
  pollMs?: number;
  probeTimeoutMs?: number;
  /** A replica ready this long gets its restart count (and so its backoff) reset. */
  stableAfterMs?: number;
  env?: NodeJS.ProcessEnv;
  onEvent?: (event: ReplicaEvent) => void;
  /** switchyard's state folder, for `{home}` in replica commands (e.g. `{home}/checkpoints/<job name>`). */
  home?: string;
}

interface Replica {
  service: string;
  name: string;
  index: number;
  homePool: CompiledPool;
  pool: CompiledPool;
  spec: ReplicaSpec;
  policy: ReplicaRecovery;
  state: ReplicaState;
  node: string | null;
  port: number | null;
  attempt: number;
  restarts: number;
  handle: RankHandle | null;
  dir: string | null;
  backendId: string | null;
  startedAt: number;
  readyAt: number | null;
  nextLaunchAt: number;
  lastExit: string | null;
  /** A step (poll, probe, restart) of this replica is under way. */
  busy: boolean;
}

interface NodeInfo {
  name: string;
  pool: string;
  strikes: number;
  cordoned: boolean;
}

/** Accelerator vendor an engine implies, for the executor's device visibility variables. */
export function vendorOfEngine(engine: EngineKind): Vendor {
  if (engine === "vllm-ascend" || engine === "mindie") return "ascend";
  if (engine === "vllm") return "nvidia";
  return "cpu";
}

/** Is `port` free to listen on at `host` right now? */
export function portIsFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", () => resolve(false));
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

function ephemeralPort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** The argv of one replica: `{port}` and `{host}` substituted inside arguments, `{python}` as a whole argument. */
export function replicaArgv(
  command: readonly string[],
  port: number,
  host: string,
  python?: () => string,
  home?: string,
): string[] {
  return command.map((arg) => {
    if (arg === pythonPlaceholder && python !== undefined) return python();
    const out = arg.replaceAll("{port}", String(port)).replaceAll("{host}", host);
    return home !== undefined ? out.replaceAll("{home}", home) : out;
  });
}

const urlHost = (host: string): string => (host.includes(":") ? `[${host}]` : host);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function logTail(file: string | undefined, lines = 3): string {
  if (file === undefined || !existsSync(file)) return "";
  try {
    const text = readFileSync(file, "utf8");
    return text.trimEnd().split("\n").slice(-lines).join(" | ").slice(-600);
  } catch {
    return "";
  }
}

const WARNING_LINE = /\bWARNING\b/;
const MAX_WARNINGS = 5;

/** The WARNING lines of a replica's log (the first few, each shortened), so the console shows them, not only the log. */
export function logWarnings(file: string | undefined): string[] {
  if (file === undefined || !existsSync(file)) return [];
  let text: string;
  try {
    const all = readFileSync(file);
    text = all.subarray(Math.max(0, all.length - 256 * 1024)).toString("utf8");
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of text.split("\n")) {
    if (!WARNING_LINE.test(line)) continue;
    const trimmed = line.trim();
    out.push(trimmed.length > 300 ? `${trimmed.slice(0, 300)}…` : trimmed);
    if (out.length === MAX_WARNINGS) break;
  }
  return out;
}

function describeExit(s: RankStatus): string {
  if (s.state === "exited") return s.signal !== null ? `killed by ${s.signal}` : `exited with code ${s.code}`;
  if (s.state === "vanished") return "vanished (gone without an exit record)";
  return "running";
}

export class ReplicaSupervisor {
  private readonly executor: Executor;
  private readonly replicasList: Replica[] = [];
  private readonly nodesByName = new Map<string, NodeInfo>();
  /** Pool order of each service, most preferred first. */
  private readonly servicePools = new Map<string, CompiledPool[]>();
  private readonly poolSpecsByName = new Map<string, PoolSpec>();
  private readonly pollMs: number;
  private readonly probeTimeoutMs: number;
  private readonly stableAfterMs: number;
  private readonly env: NodeJS.ProcessEnv;
  private timer: NodeJS.Timeout | undefined;
  private readonly pending = new Set<Promise<void>>();
  private stopping = false;
  private pythonPath: string | undefined;

  constructor(private readonly opts: ReplicaSupervisorOptions) {
    this.executor = opts.executor ?? new LocalExecutor();
    this.pollMs = opts.pollMs ?? 500;
    this.probeTimeoutMs = opts.probeTimeoutMs ?? 2_000;
    this.stableAfterMs = opts.stableAfterMs ?? 300_000;
    this.env = opts.env ?? process.env;
    for (const p of opts.poolSpecs ?? []) this.poolSpecsByName.set(p.name, p);
    const nodesPerPool = new Map<string, number>();
    for (const svc of opts.config.services) {
      this.servicePools.set(svc.model, svc.pools);
      for (const pool of svc.pools) {
        const wanted = pool.replicas?.count ?? 1;
        nodesPerPool.set(pool.name, Math.max(nodesPerPool.get(pool.name) ?? 1, wanted));
        const spec = pool.replicas;
        if (spec === undefined) continue;
        this.apiKey(spec, `${svc.model}/${pool.name}`); // fail now, not at the first registration
        const policy = { ...defaultReplicaRecovery, ...opts.recovery, ...definedOnly(spec.recovery ?? {}) };
        for (let i = 0; i < spec.count; i++) {
          this.replicasList.push({
            service: svc.model,
            name: `${pool.name}-${i}`,
            index: i,
            homePool: pool,
            pool,
            spec,
            policy,
            state: ReplicaState.backoff,
            node: null,
            port: null,
            attempt: 0,
            restarts: 0,
            handle: null,
            dir: null,
            backendId: null,
            startedAt: 0,
            readyAt: null,
            nextLaunchAt: 0,
            lastExit: null,
            busy: false,
          });
        }
      }
    }
    for (const [pool, count] of nodesPerPool) {
      const n = this.poolSpecsByName.get(pool)?.nodes ?? count;
      for (const name of localNodeNames(pool, n))
        this.nodesByName.set(name, { name, pool, strikes: 0, cordoned: false });
    }
  }

  /** Launches every replica, then supervises them until stop(). Resolves once all launches were attempted. */
  async start(): Promise<void> {
    if (this.timer !== undefined) return;
    await Promise.all(this.replicasList.map((r) => this.launch(r)));
    this.timer = setInterval(() => this.tick(), this.pollMs);
  }

  /** Unregisters every replica and stops its process group (SIGTERM, grace, SIGKILL). */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    while (this.pending.size > 0) await Promise.all([...this.pending]);
    await Promise.all(
      this.replicasList.map(async (r) => {
        const wasLive = r.handle !== null;
        await this.release(r);
        r.state = ReplicaState.stopped;
        if (wasLive) this.emit(r, "stopped", "stopped: unregistered, process group ended");
      }),
    );
  }

  replicas(): ReplicaSnapshot[] {
    return this.replicasList.map((r) => ({
      service: r.service,
      replica: r.name,
      homePool: r.homePool.name,
      pool: r.pool.name,
      node: r.node,
      engine: r.spec.engine,
      state: r.state,
      port: r.port,
      url: r.port !== null ? this.urlOf(r) : null,
      attempt: r.attempt,
      restarts: r.restarts,
      backendId: r.backendId,
      pid: r.handle?.pid ?? null,
      logPath: r.handle?.logPath ?? null,
      readyAt: r.readyAt,
      lastExit: r.lastExit,
    }));
  }

  /** The executor's handle of a running replica (chaos, stack dumps), by replica name. */
  handle(replica: string, service?: string): RankHandle | undefined {
    const r = this.replicasList.find((x) => x.name === replica && (service === undefined || x.service === service));
    return r?.handle ?? undefined;
  }

  /** Sends a signal to a replica's model-server process (not its wrapper): chaos tests, stack dumps. */
  signalReplica(replica: string, signal: NodeJS.Signals, service?: string): boolean {
    const handle = this.handle(replica, service);
    return handle !== undefined && this.executor.signalRank(handle, signal);
  }

  nodes(): NodeSnapshot[] {
    return [...this.nodesByName.values()].map((n) => ({ ...n }));
  }

  // -------------------------------------------------------------------------------------------------------------

  private urlOf(r: Replica): string {
    return `http://${urlHost(r.spec.host)}:${r.port}`;
  }

  private emit(r: Replica, kind: ReplicaEventKind, message: string): void {
    this.opts.onEvent?.({
      t: Date.now(),
      kind,
      service: r.service,
      replica: r.name,
      pool: r.pool.name,
      ...(r.node !== null && { node: r.node }),
      ...(r.port !== null && { port: r.port }),
      ...(r.backendId !== null && { backendId: r.backendId }),
      message,
    });
  }

  private apiKey(spec: ReplicaSpec, where: string): string | undefined {
    if (spec.apiKeyEnv === undefined) return undefined;
    const key = this.env[spec.apiKeyEnv];
    if (key === undefined || key === "") {
      throw new MissingApiKeyEnvError(`replicas of ${where}`, spec.apiKeyEnv);
    }
    return key;
  }

  private python(): string {
    if (this.pythonPath !== undefined) return this.pythonPath;
    const found = findPython(this.env);
    if (found === null) throw new Error(`command uses ${pythonPlaceholder} but no Python interpreter was found`);
    return (this.pythonPath = found.path);
  }

  /** Each replica steps on its own, so that one slow stop or probe does not delay noticing another's crash. */
  private tick(): void {
    for (const r of this.replicasList) {
      if (r.busy || this.stopping) continue;
      r.busy = true;
      const p: Promise<void> = this.step(r)
        .catch((err: unknown) =>
          this.failed(r, `supervisor error: ${err instanceof Error ? err.message : String(err)}`),
        )
        .finally(() => {
          r.busy = false;
          this.pending.delete(p);
        });
      this.pending.add(p);
    }
  }

  private async step(r: Replica): Promise<void> {
    if (this.stopping) return;
    const now = Date.now();
    if (r.state === ReplicaState.backoff) {
      if (now >= r.nextLaunchAt) await this.launch(r);
      return;
    }
    if ((r.state !== ReplicaState.starting && r.state !== ReplicaState.ready) || r.handle === null || r.dir === null) {
      return;
    }
    const [status] = await this.executor.poll(r.dir, [r.handle]);
    if (status !== undefined && status.state !== "running") {
      const tail = logTail(r.handle.logPath);
      await this.failed(r, `${describeExit(status)}${tail !== "" ? `; log: ${tail}` : ""}`);
      return;
    }
    if (r.state === ReplicaState.ready) {
      if (r.restarts > 0 && r.readyAt !== null && now - r.readyAt >= this.stableAfterMs) r.restarts = 0;
      return;
    }
    // Starting: is the engine ready yet?
    if (await this.probe(r)) {
      if (!this.stopping) this.register(r);
    } else if (Date.now() - r.startedAt > r.spec.readyTimeoutS * 1000) {
      await this.failed(r, `not ready within readyTimeoutS (${r.spec.readyTimeoutS} s)`, "not-ready");
    }
  }

  private async probe(r: Replica): Promise<boolean> {
    const adapter = engineAdapter(r.spec.engine);
    const key = this.apiKey(r.spec, `${r.service}/${r.pool.name}`);
    try {
      const res = await fetch(this.urlOf(r) + adapter.healthPath, {
        headers: key !== undefined ? { authorization: `Bearer ${key}` } : {},
        signal: AbortSignal.timeout(this.probeTimeoutMs),
      });
      const body = (await res.text()).slice(0, 4096);
      return adapter.judgeHealth(res.status, body).ready;
    } catch {
      return false;
    }
  }

  private register(r: Replica): void {
    const key = this.apiKey(r.spec, `${r.service}/${r.pool.name}`);
    const id = `${r.service}/${r.pool.name}/${r.name}`;
    r.backendId = this.opts.gateway.registerBackend({
      service: r.service,
      pool: r.pool.name,
      url: this.urlOf(r),
      engine: r.spec.engine,
      id,
      ...(r.spec.weight !== undefined && { weight: r.spec.weight }),
      ...(r.spec.maxInFlight !== undefined && { maxInFlight: r.spec.maxInFlight }),
      ...(r.spec.servedModel !== undefined && { servedModel: r.spec.servedModel }),
      ...(key !== undefined && { apiKey: key }),
      poolPriority: r.pool.priority,
      poolQueueThreshold: r.pool.queueThreshold,
    });
    r.state = ReplicaState.ready;
    r.readyAt = Date.now();
    this.emit(
      r,
      "ready",
      `ready after ${((r.readyAt - r.startedAt) / 1000).toFixed(1)} s; registered with the gateway`,
    );
    for (const warning of logWarnings(r.handle?.logPath)) this.emit(r, "warning", `its log says: ${warning}`);
  }

  /** Unregisters the replica from the gateway and stops what is left of its process group. */
  private async release(r: Replica): Promise<void> {
    const id = r.backendId;
    r.backendId = null;
    // unregisterBackend stops routing synchronously; its promise waits for in-flight requests to end.
    if (id !== null) void this.opts.gateway.unregisterBackend(id).catch(() => undefined);
    const handle = r.handle;
    r.handle = null;
    if (handle !== null) await this.executor.stop([handle], r.policy.graceSeconds * 1000);
  }

  /** A replica died, vanished, never became ready, or could not be launched: strike its node, then restart or give up. */
  private async failed(r: Replica, reason: string, kind: ReplicaEventKind = "exited"): Promise<void> {
    const backendId = r.backendId;
    await this.release(r);
    r.lastExit = reason;
    r.readyAt = null;
    this.emit(r, kind, `${reason}${backendId !== null ? `; unregistered ${backendId}` : ""}`);
    const node = r.node !== null ? this.nodesByName.get(r.node) : undefined;
    const decision = decideRecovery(r.policy, {
      restarts: r.restarts,
      culpritNodeStrikes: node?.strikes ?? 0,
      hardDeviceEvidence: false,
    });
    if (node !== undefined) {
      node.strikes++;
      if (decision.cordonCulpritNode && !node.cordoned) {
        node.cordoned = true;
        this.emit(r, "cordoned", `node ${node.name} cordoned after ${node.strikes} strike(s)`);
      }
    }
    if (decision.action === "fail") {
      r.state = ReplicaState.failed;
      this.emit(r, "gave-up", decision.reason);
      return;
    }
    r.state = ReplicaState.backoff;
    r.nextLaunchAt = Date.now() + decision.backoffMs;
    r.restarts++;
    this.emit(r, "restart", `restart ${r.restarts} in ${(decision.backoffMs / 1000).toFixed(1)} s`);
  }

  /** Pools to try for a replica: its home pool, then the service's other pools in priority order. */
  private poolOrder(r: Replica): CompiledPool[] {
    const pools = this.servicePools.get(r.service) ?? [r.homePool];
    return [r.homePool, ...pools.filter((p) => p.name !== r.homePool.name)];
  }

  /**
   * The node for a replica: the first pool in `order` with a node that is not cordoned; within it the node running
   * the fewest of our replicas, the node of the last failure only when no other is left (as training avoids culprits).
   */
  private place(
    r: Replica,
    order: readonly CompiledPool[],
  ): { pool: CompiledPool; node: string } | { pool: null; reason: string } {
    const occupancy = (node: string): number =>
      this.replicasList.filter((x) => x !== r && x.node === node && x.handle !== null).length;
    const reasons: string[] = [];
    for (const pool of order) {
      const usable = [...this.nodesByName.values()].filter((n) => n.pool === pool.name && !n.cordoned);
      const ranked = usable
        .map((n) => ({ name: n.name, rank: (n.name === r.node ? 1_000_000 : 0) + occupancy(n.name) }))
        .sort((a, b) => a.rank - b.rank);
      if (ranked[0] !== undefined) return { pool, node: ranked[0].name };
      const all = [...this.nodesByName.values()].filter((n) => n.pool === pool.name).length;
      reasons.push(`${pool.name}: ${all} node(s), all cordoned`);
    }
    return { pool: null, reason: `no pool can host replica ${r.name} (${reasons.join("; ")})` };
  }

  private async launch(r: Replica): Promise<void> {
    if (this.stopping) return;
    const order = this.poolOrder(r);
    const placement = this.place(r, order);
    if (placement.pool === null) {
      r.state = ReplicaState.failed;
      this.emit(r, "gave-up", placement.reason);
      return;
    }
    const { pool, node } = placement;
    if (pool.name !== r.pool.name) {
      const from = r.pool.name;
      r.pool = pool;
      // A pool with its own replicas block knows how to run the model there (engine, command); else keep ours.
      r.spec = pool.replicas ?? r.homePool.replicas!;
      r.port = null;
      this.emit(r, "moved", `moved from pool ${from} to ${pool.name}: ${from} has no usable node`);
    }
    r.node = node;
    r.attempt++;
    r.startedAt = Date.now();
    r.readyAt = null;
    try {
      r.port = await this.choosePort(r);
      const dir = path.join(
        this.opts.runDir,
        r.service.replace(/[^A-Za-z0-9_.-]/g, "_"),
        r.name,
        `attempt-${r.attempt}`,
      );
      const argv = replicaArgv(
        r.spec.command,
        r.port,
        r.spec.host,
        () => this.python(),
        this.opts.home ?? switchyardHome(),
      );
      const poolSpec = this.poolSpecsByName.get(pool.name) ?? {
        name: pool.name,
        executor: "local" as const,
        accelerator: { vendor: vendorOfEngine(r.spec.engine) },
        nodes: [...this.nodesByName.values()].filter((n) => n.pool === pool.name).length,
        devicesPerNode: 1,
      };
      const [launched] = await this.executor.launch({
        jobId: `serve-${r.name}`,
        jobName: r.service,
        attempt: r.attempt,
        dir,
        pool: poolSpec,
        nodes: [node],
        procsPerNode: 1,
        command: argv,
        env: { ...r.spec.env, SWITCHYARD_REPLICA: r.name, SWITCHYARD_REPLICA_PORT: String(r.port) },
        workdir: this.opts.workdir ?? process.cwd(),
        masterPort: r.port,
        checkpointDir: dir,
        resumeFrom: null,
      });
      if (launched === undefined) throw new Error("the executor launched nothing");
      r.dir = dir;
      r.handle = { rank: launched.rank, pid: launched.pid, startTicks: launched.startTicks, logPath: launched.logPath };
      r.state = ReplicaState.starting;
      this.emit(
        r,
        "launched",
        `attempt ${r.attempt} on ${node}, port ${r.port}, pid ${launched.pid}: ${argv.join(" ")}`,
      );
      if (this.stopping) await this.release(r);
    } catch (err) {
      await this.failed(r, `launch failed: ${err instanceof Error ? err.message : String(err)}`, "launch-failed");
    }
  }

  /** The replica's previous port if still free, else `port + index` of its spec, else any free port. */
  private async choosePort(r: Replica): Promise<number> {
    const taken = new Set(this.replicasList.filter((x) => x !== r && x.handle !== null).map((x) => x.port));
    const candidates = [r.port, r.spec.port + r.index].filter(
      (p): p is number => p !== null && p <= 65535 && !taken.has(p),
    );
    for (const p of candidates) {
      // A just-killed server's socket may linger for a moment.
      for (let i = 0; i < 3; i++) {
        if (await portIsFree(r.spec.host, p)) return p;
        await sleep(100);
      }
    }
    for (;;) {
      const p = await ephemeralPort(r.spec.host);
      if (!taken.has(p)) return p;
    }
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
