import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { lstat } from "node:fs/promises";
import path from "node:path";
import type { CompiledJobSpec, PoolSpec, ReplicaWorkload } from "../core/spec.js";
import type { Executor } from "../executors/port.js";
import { JobState, terminalJobStates } from "../core/states.js";
import {
  parseServicesYaml,
  type CompiledBackend,
  type CompiledService,
  type EngineKind,
  type ReplicaSpec,
} from "../gateway/config.js";
import type { BackendEntry, BackendSet, ServiceBackends } from "../gateway/control-plane-source.js";
import { engineAdapter, parsePrometheusText } from "../gateway/engines.js";
import type { AttemptRecord, JobRecord, ReplicaRecord, Store } from "../store/port.js";
import { listCheckpointDirs, verifyCheckpoint } from "./checkpoint-scan.js";
import type { SupervisorContext } from "./context.js";

/**
 * Services (issue 14): `switchyard deploy services.yaml` hands the server a services file; every pool with a
 * `replicas:` block becomes replicas, and every replica is a job of the one supervisor (workload kind "replica",
 * core/spec.ts): the queue places it on the shared inventory (a node serving replicas is not given to a training gang,
 * and back), the launch, the crash detectors, incidents, strikes, cordons and pool moves are the training ranks'. What
 * differs is data in the spec: a readiness gate (services-watch.ts) instead of step reports, restart "always", one rank.
 *
 * This controller keeps the desired state: how many replicas per pool (`scale`), which checkpoint they serve
 * (`model: { fromJob }`: the newest checkpoint of that training job whose manifest verifies), and rolls replicas onto
 * a newer checkpoint one at a time (a new replica beside the old one, ready, in the backend set, then the old one
 * drains and stops). It publishes the live backend set the gateway processes follow (control-plane-source.ts).
 *
 * All state lives in the store (services, replicas, jobs), so a restarted server adopts running replicas as it adopts
 * training ranks; the backend set gets a new epoch and the same backends.
 */

/** A service as deployed: the compiled service plus where it came from and its serving settings. */
export interface StoredService {
  name: string;
  aliases: string[];
  /** The services file it was deployed from (messages) and its folder (relative paths in commands). */
  file: string;
  workdir: string;
  pools: Array<{
    name: string;
    priority: number;
    queueThreshold: number;
    backends: CompiledBackend[];
    replicas?: ReplicaSpec & {
      fromJob?: string;
      drainSeconds?: number;
      /** replicaRevision of this block: a replica made from another one rolls. */
      revision?: string;
      /** The fields the last deploy changed (said in the roll's events). */
      changed?: string[];
    };
  }>;
  /** undeploy asked: replicas drain and stop, then the service is forgotten. */
  deleting?: boolean;
}

export interface ReplicaView extends ReplicaRecord {
  jobState: string;
  restarts: number;
  attempt: number | null;
  node: string | null;
  /** The pool it runs on now (a replica moves when its pool keeps failing it). */
  runningPool: string | null;
  reason: string | null;
}

export interface ServiceSummary {
  name: string;
  aliases: string[];
  file: string;
  fromJob: string | null;
  /** The checkpoint replicas should serve (fromJob), or null. */
  target: { path: string; step: number; jobId: string } | null;
  pools: Array<{ name: string; desired: number; ready: number; engine: string | null; backends: number }>;
  desired: number;
  ready: number;
  state: "deploying" | "ready" | "degraded" | "rolling" | "waiting" | "undeploying";
  /** Why it is not all ready (waiting for a checkpoint, a replica failed, ...). */
  note: string | null;
  createdAt: number;
  updatedAt: number;
}

export interface PoolUse {
  pool: string;
  executor: string;
  vendor: string;
  nodes: number;
  cordoned: number;
  /** Training jobs with a live attempt on the pool, and services with a live replica there. */
  training: string[];
  serving: string[];
  trainingNodes: string[];
  servingNodes: string[];
}

export interface ServingLedgerRow {
  pool: string;
  serving: number;
  starting: number;
  down: number;
}

/** What the controller needs of the supervisor: submit a job, cancel one. */
export interface ServiceJobs {
  submit(spec: CompiledJobSpec): Promise<JobRecord>;
  cancel(jobId: string): Promise<unknown>;
  /** Why a job waits to launch (the queue's reason), or null when it does not wait. */
  waitingFor?(jobId: string): string | null;
}

const jobNameOk = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const maxReplicasPerService = 256;

/** A job name from parts: lowercase, invalid characters as '-', at most 63 characters. */
export function replicaJobName(service: string, slot: string): string {
  const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9._-]+/g, "-");
  const name = `svc-${slug(service)}-${slug(slot)}`.replace(/-+/g, "-").slice(0, 63);
  return jobNameOk.test(name) ? name : `svc-${randomBytes(4).toString("hex")}`;
}

export const checkpointPlaceholder = "{checkpoint}";

/** Accelerator vendor an engine implies (a pool made for replicas of that engine). */
export function vendorOfEngine(engine: string): "ascend" | "nvidia" | "cpu" {
  if (engine === "vllm-ascend" || engine === "mindie") return "ascend";
  if (engine === "vllm") return "nvidia";
  return "cpu";
}

/**
 * A replica command as deployed: `{home}` (the server's state folder) replaced inside arguments, `{python}` left whole
 * for the launch to resolve; `{host}`, `{port}` and `{checkpoint}` wait for each launch (replicaLaunchArgv: `{host}`
 * depends on the node a replica lands on when its pool is a workload manager's). argv, never a shell string.
 */
export function deployArgv(command: readonly string[], home: string): string[] {
  return command.map((a) => (a === "{python}" ? a : a.replaceAll("{home}", home)));
}

/**
 * A replica's argv for one launch: `{host}` (where it listens: replicaEndpoint), `{port}` and `{checkpoint}` (the
 * verified checkpoint it serves) replaced inside arguments; `{home}` was replaced at deploy.
 */
export function replicaLaunchArgv(
  command: readonly string[],
  port: number,
  checkpoint: string | null,
  host: string,
): string[] {
  return command.map((arg) =>
    arg
      .replaceAll("{host}", host)
      .replaceAll("{port}", String(port))
      .replaceAll(checkpointPlaceholder, checkpoint ?? ""),
  );
}

const loopbackHosts = new Set(["127.0.0.1", "localhost", "::1"]);
const anyHosts = new Set(["0.0.0.0", "::"]);

/**
 * Where a replica listens (`{host}` in its command) and the host of its URL (where the server probes it and the
 * gateways send requests). On a local pool both are the replica's `host` setting (0.0.0.0 is reached at 127.0.0.1).
 * On a workload manager's pool the replica runs on another host, whose loopback nobody else reaches: the default
 * 127.0.0.1 means the node's own address (`nodeAddress`, Slurm's NodeAddr; the node's name when it is unknown), for
 * listening and for the URL; 0.0.0.0 listens everywhere and is reached at that address; any other host is taken as is.
 */
export function replicaEndpoint(
  host: string,
  executor: string,
  nodeAddress: string | null,
  node: string | undefined,
): { listen: string; urlHost: string } {
  if (executor === "local" || node === undefined) {
    return { listen: host, urlHost: anyHosts.has(host) ? "127.0.0.1" : host };
  }
  const addr = nodeAddress ?? node;
  if (loopbackHosts.has(host)) return { listen: addr, urlHost: addr };
  if (anyHosts.has(host)) return { listen: host, urlHost: addr };
  return { listen: host, urlHost: host };
}

/** replicaEndpoint for a replica placed on `node` of `pool`, asking the executor for the node's address when needed. */
export async function replicaEndpointOn(
  executor: Executor,
  pool: PoolSpec,
  host: string,
  node: string | undefined,
): Promise<{ listen: string; urlHost: string }> {
  const remote = pool.executor !== "local" && node !== undefined && (loopbackHosts.has(host) || anyHosts.has(host));
  const address = remote ? await (executor.nodeAddress?.(pool, node) ?? Promise.resolve(null)) : null;
  return replicaEndpoint(host, pool.executor, address, node);
}

/**
 * The ports of the replicas running on `node` now (their live attempts): a replica placed there must take another, or
 * it could not listen, and its readiness probe would be answered by its neighbour.
 */
export async function replicaPortsOn(ctx: SupervisorContext, node: string | undefined): Promise<number[]> {
  if (node === undefined) return [];
  const out: number[] = [];
  for (const job of await ctx.store.listJobs({ activeOnly: true })) {
    if (job.spec.workload?.kind !== "replica") continue;
    const a = await ctx.currentAttempt(job.id);
    if (a && a.endedAt === null && a.nodes[0] === node) out.push(a.masterPort);
  }
  return out;
}

/** An IPv6 address in a URL is bracketed. */
export const urlHostPart = (host: string): string => (host.includes(":") ? `[${host}]` : host);

/** A deploy the server refuses: names the file, the field and the fix. */
export class DeployError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DeployError";
  }
}

/**
 * What a deploy does to one service (`deploy` prints it, `deploy --dry-run` only prints it): create it, nothing
 * (the file says what runs already), or update it: roll its replicas onto a changed spec, scale a pool, and apply
 * what needs no restart.
 */
export interface ServicePlan {
  name: string;
  action: "create" | "unchanged" | "update";
  /** Pools whose replicas roll onto the new spec, one at a time, readiness-gated, with the fields that changed. */
  roll: Array<{ pool: string; replicas: number; fields: string[] }>;
  /** Pools whose replica count changes (a pool added or removed scales from or to 0). */
  scale: Array<{ pool: string; from: number; to: number }>;
  /** Changes that restart no replica: published in the backend set at once (aliases, weight, external backends...). */
  inPlace: string[];
}

/** A deploy's answer: the service as it stands after the deploy, and what the deploy did. */
export type DeployedService = ServiceSummary & { plan: ServicePlan };

type StoredReplicas = NonNullable<StoredService["pools"][number]["replicas"]>;

/** Replica fields whose change restarts the replica (they are in its job's spec): a roll. The rest apply in place. */
const rollingFields = [
  "engine",
  "command",
  "args",
  "env",
  "host",
  "port",
  "readyTimeoutS",
  "model",
  "recovery",
] as const;
const inPlaceFields = ["weight", "maxInFlight", "servedModel", "apiKeyEnv", "drainSeconds"] as const;

const same = (a: unknown, b: unknown): boolean => canonical(a) === canonical(b);

/** JSON with object keys sorted: equal values, equal text. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x !== null && typeof x === "object" && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)))
      : x,
  );
}

/**
 * The fields of a replicas block that differ in a way its running replicas must restart for. `command` is the program,
 * `args` the rest of the argv; `env` names the variables that changed (never their values: they may be secrets);
 * `workdir` is the services file's folder (relative paths in the command resolve against it).
 */
export function replicaChanges(
  before: StoredReplicas,
  after: StoredReplicas,
  workdirBefore: string,
  workdirAfter: string,
): string[] {
  const out: string[] = [];
  for (const f of rollingFields) {
    if (f === "command") {
      if (before.command[0] !== after.command[0]) out.push("command");
    } else if (f === "args") {
      if (!same(before.command.slice(1), after.command.slice(1))) out.push("args");
    } else if (f === "env") {
      const keys = [...new Set([...Object.keys(before.env), ...Object.keys(after.env)])].sort();
      const changed = keys.filter((k) => before.env[k] !== after.env[k]);
      if (changed.length > 0) out.push(`env (${changed.join(", ")})`);
    } else if (f === "model") {
      if (before.fromJob !== after.fromJob) out.push("model");
    } else if (!same(before[f], after[f])) out.push(f);
  }
  if (workdirBefore !== workdirAfter) out.push("workdir");
  return out;
}

/**
 * What a replica's job was made from, as one hash (its workload's `revision`): a replica whose revision is not its
 * pool's is on an old spec and rolls.
 */
export function replicaRevision(spec: StoredReplicas, workdir: string): string {
  const parts = {
    engine: spec.engine,
    command: spec.command,
    env: spec.env,
    host: spec.host,
    port: spec.port,
    readyTimeoutS: spec.readyTimeoutS,
    model: spec.fromJob ?? null,
    recovery: spec.recovery ?? null,
    workdir,
  };
  return createHash("sha256").update(canonical(parts)).digest("hex").slice(0, 16);
}

/** What deploying `next` over `prior` (undefined: not deployed, or being undeployed) does. */
export function planDeploy(prior: StoredService | undefined, next: StoredService): ServicePlan {
  const plan: ServicePlan = { name: next.name, action: "update", roll: [], scale: [], inPlace: [] };
  if (prior === undefined || prior.deleting) {
    plan.action = "create";
    for (const p of next.pools) if (p.replicas) plan.scale.push({ pool: p.name, from: 0, to: p.replicas.count });
    return plan;
  }
  if (!same(prior.aliases, next.aliases)) plan.inPlace.push("aliases");
  for (const p of next.pools) {
    const before = prior.pools.find((x) => x.name === p.name);
    if (before === undefined) {
      plan.inPlace.push(`pool ${p.name} added`);
      if (p.replicas) plan.scale.push({ pool: p.name, from: 0, to: p.replicas.count });
      continue;
    }
    if (before.priority !== p.priority) plan.inPlace.push(`${p.name}.priority`);
    if (before.queueThreshold !== p.queueThreshold) plan.inPlace.push(`${p.name}.queueThreshold`);
    if (!same(before.backends, p.backends)) plan.inPlace.push(`${p.name}.backends`);
    const from = before.replicas?.count ?? 0;
    const to = p.replicas?.count ?? 0;
    if (from !== to) plan.scale.push({ pool: p.name, from, to });
    if (before.replicas && p.replicas) {
      const fields = replicaChanges(before.replicas, p.replicas, prior.workdir, next.workdir);
      // Replicas that stay: those beyond the new count are scaled away, not rolled.
      if (fields.length > 0 && Math.min(from, to) > 0)
        plan.roll.push({ pool: p.name, replicas: Math.min(from, to), fields });
      for (const f of inPlaceFields) if (!same(before.replicas[f], p.replicas[f])) plan.inPlace.push(`${p.name}.${f}`);
    }
  }
  for (const p of prior.pools) {
    if (next.pools.some((x) => x.name === p.name)) continue;
    plan.inPlace.push(`pool ${p.name} removed`);
    if (p.replicas) plan.scale.push({ pool: p.name, from: p.replicas.count, to: 0 });
  }
  if (plan.roll.length === 0 && plan.scale.length === 0 && plan.inPlace.length === 0) plan.action = "unchanged";
  return plan;
}

/** One line for a plan, as `deploy` prints it. */
export function describePlan(plan: ServicePlan): string {
  if (plan.action === "unchanged") return `unchanged ${plan.name}: the running service already matches the file`;
  const scale = plan.scale.map((s) => `${s.pool} ${s.from}→${s.to}`).join(", ");
  if (plan.action === "create") {
    const where = plan.scale.map((s) => `${s.to} replica(s) on ${s.pool}`).join(", ");
    return `created ${plan.name}: ${where || "external backends only"}`;
  }
  const parts: string[] = [];
  for (const r of plan.roll) {
    parts.push(
      `rolling ${r.pool} (${r.fields.join(", ")} changed): ${r.replicas} replica(s) replaced one at a time, each successor ready before its predecessor drains`,
    );
  }
  if (scale) parts.push(`scaled ${scale}`);
  if (plan.inPlace.length > 0) parts.push(`updated ${plan.inPlace.join(", ")} (no restart)`);
  return `${plan.name}: ${parts.join("; ")}`;
}

export class Services {
  /** This server instance: a restarted server's set has a new epoch (control-plane-source.ts). */
  readonly epoch = randomBytes(6).toString("hex");
  private version = Date.now();
  private set: BackendSet;
  private setKey = "";
  private waiters = new Set<() => void>();
  private published!: () => void;
  private readonly firstPublish = new Promise<void>((resolve) => (this.published = resolve));
  private reconciling: Promise<void> | null = null;
  /** Verified checkpoints by path (a verified checkpoint stays verified while it exists); failures by path and time. */
  private readonly verified = new Map<string, number>();
  private readonly unverified = new Map<string, number>();
  /** Liveness probe failures of ready replicas, by job id. */
  private readonly liveness = new Map<string, { failures: number; since: number }>();
  private readonly targets = new Map<string, ServiceSummary["target"]>();

  constructor(
    private readonly ctx: SupervisorContext,
    private readonly jobs: ServiceJobs,
  ) {
    this.set = { version: this.version, epoch: this.epoch, services: [] };
  }

  private get store(): Store {
    return this.ctx.store;
  }

  // ---------------------------------------------------------------------------------------------------- deploy

  /**
   * Deploys every service of a services file that has a `replicas:` block (or backends): new services are created; an
   * existing one takes the new definition: a change its replicas must restart for (command, args, env, engine, model,
   * ...) rolls them one at a time, readiness-gated, as a newer checkpoint does; a count change scales; the rest applies
   * in place; a file that says what runs already changes nothing. Each answer carries its plan (planDeploy).
   * `dryRun`: the plans only, nothing changed. Refuses pools the cluster does not have and `{checkpoint}` without
   * `model.fromJob`.
   */
  async deploy(text: string, file: string, opts: { dryRun: true }): Promise<Array<{ name: string; plan: ServicePlan }>>;
  async deploy(text: string, file: string, opts?: { dryRun?: false }): Promise<DeployedService[]>;
  async deploy(
    text: string,
    file: string,
    opts: { dryRun?: boolean } = {},
  ): Promise<DeployedService[] | Array<{ name: string; plan: ServicePlan }>> {
    const compiled = parseServicesYaml(text, file);
    const workdir = path.dirname(path.resolve(file));
    const cluster = new Set(this.ctx.cluster.pools.map((p) => p.name));
    const issues: string[] = [];
    const stored: StoredService[] = compiled.services.map((svc, si) =>
      this.toStored(svc, si, file, workdir, cluster, issues),
    );
    if (issues.length > 0) {
      throw new DeployError(`${file}: cannot deploy:\n${issues.map((i) => `  - ${i}`).join("\n")}`);
    }
    const existing = new Map((await this.store.listServices()).map((s) => [s.name, s]));
    const plans = stored.map((s) => {
      const prior = existing.get(s.name)?.spec as unknown as StoredService | undefined;
      // The file's path is where it was deployed from (messages), not a change of the service.
      return planDeploy(prior && { ...prior, file: s.file }, s);
    });
    if (opts.dryRun === true) return plans.map((plan) => ({ name: plan.name, plan }));
    const now = this.ctx.now();
    for (const [i, s] of stored.entries()) {
      const plan = plans[i]!;
      if (plan.action === "unchanged") continue;
      for (const pool of s.pools) {
        if (pool.replicas) pool.replicas.revision = replicaRevision(pool.replicas, s.workdir);
        const rolled = plan.roll.find((r) => r.pool === pool.name);
        if (pool.replicas && rolled) pool.replicas.changed = rolled.fields;
      }
      await this.store.putService({
        name: s.name,
        spec: s as unknown as Record<string, unknown>,
        createdAt: plan.action === "create" ? now : (existing.get(s.name)?.createdAt ?? now),
        updatedAt: now,
      });
      await this.ctx.event(null, "service.deployed", `${describePlan(plan)} (from ${file})`, {
        service: s.name,
        action: plan.action,
        roll: plan.roll,
        scale: plan.scale,
        inPlace: plan.inPlace,
      });
    }
    await this.reconcile();
    const summaries = await this.list();
    return plans.map((plan) => ({ ...summaries.find((x) => x.name === plan.name)!, plan }));
  }

  private toStored(
    svc: CompiledService,
    si: number,
    file: string,
    workdir: string,
    cluster: ReadonlySet<string>,
    issues: string[],
  ): StoredService {
    const home = this.ctx.home;
    let total = 0;
    const pools = svc.pools.map((pool, pi) => {
      const where = `services[${si}] (${svc.model}) pool ${pool.name}`;
      const r = pool.replicas as (ReplicaSpec & { model?: { fromJob?: string }; drainSeconds?: number }) | undefined;
      if (r === undefined) return { ...pool, replicas: undefined };
      total += r.count;
      if (!cluster.has(pool.name)) {
        issues.push(
          `${where}: the cluster has no pool ${pool.name} (fix: use one of ${[...cluster].join(", ")}, or add it to the cluster file and restart the server with --cluster)`,
        );
      }
      const fromJob = r.model?.fromJob;
      if (fromJob === undefined && r.command.some((a) => a.includes(checkpointPlaceholder))) {
        issues.push(`${where}.replicas.command uses {checkpoint} but the block has no model: { fromJob: <job name> }`);
      }
      if (fromJob !== undefined && !jobNameOk.test(fromJob)) {
        issues.push(
          `${where}.replicas.model.fromJob: "${fromJob}" is not a job name (fix: the name in the job's spec)`,
        );
      }
      void pi;
      const command = deployArgv(r.command, home);
      return {
        ...pool,
        replicas: {
          ...r,
          command,
          ...(fromJob !== undefined && { fromJob }),
          drainSeconds: r.drainSeconds ?? 30,
        },
      };
    });
    if (total > maxReplicasPerService) {
      issues.push(`services[${si}] (${svc.model}): ${total} replicas, more than ${maxReplicasPerService} (fix: fewer)`);
    }
    return { name: svc.model, aliases: svc.aliases, file: path.resolve(file), workdir, pools };
  }

  private async services(): Promise<StoredService[]> {
    return (await this.store.listServices()).map((r) => r.spec as unknown as StoredService);
  }

  private async service(name: string): Promise<StoredService> {
    const found = (await this.services()).find((s) => s.name === name || s.aliases.includes(name));
    if (!found) {
      const known = (await this.services()).map((s) => s.name);
      throw new DeployError(
        `no service named ${JSON.stringify(name)} (fix: ${known.length > 0 ? `one of ${known.join(", ")}` : "deploy one first: switchyard deploy services.yaml"})`,
      );
    }
    return found;
  }

  /** Sets the replica count of a pool of a service (default: its first pool with replicas). */
  async scale(name: string, count: number, poolName?: string): Promise<ServiceSummary> {
    if (!Number.isInteger(count) || count < 0 || count > maxReplicasPerService) {
      throw new DeployError(`scale ${name}: the count must be a whole number from 0 to ${maxReplicasPerService}`);
    }
    const svc = await this.service(name);
    const pools = svc.pools.filter((p) => p.replicas);
    const pool = poolName === undefined ? pools[0] : pools.find((p) => p.name === poolName);
    if (!pool?.replicas) {
      throw new DeployError(
        `scale ${name}: ${poolName === undefined ? "the service has no pool with replicas" : `no pool ${poolName} with replicas`} (fix: one of ${pools.map((p) => p.name).join(", ") || "none: add a replicas: block and deploy again"})`,
      );
    }
    const from = pool.replicas.count;
    pool.replicas.count = count;
    const record = (await this.store.listServices()).find((s) => s.name === svc.name)!;
    await this.store.putService({
      ...record,
      spec: svc as unknown as Record<string, unknown>,
      updatedAt: this.ctx.now(),
    });
    await this.ctx.event(
      null,
      "service.scaled",
      `service ${svc.name}: ${pool.name} from ${from} to ${count} replica(s)`,
      {
        service: svc.name,
        pool: pool.name,
        from,
        to: count,
      },
    );
    await this.reconcile();
    return (await this.list()).find((s) => s.name === svc.name)!;
  }

  /** Drains and stops every replica of a service, then forgets it. */
  async undeploy(name: string): Promise<ServiceSummary> {
    const svc = await this.service(name);
    svc.deleting = true;
    const record = (await this.store.listServices()).find((s) => s.name === svc.name)!;
    await this.store.putService({
      ...record,
      spec: svc as unknown as Record<string, unknown>,
      updatedAt: this.ctx.now(),
    });
    await this.ctx.event(null, "service.undeploying", `service ${svc.name}: undeploying (replicas drain, then stop)`, {
      service: svc.name,
    });
    const summary = (await this.list()).find((s) => s.name === svc.name)!;
    await this.reconcile();
    return summary;
  }

  // ------------------------------------------------------------------------------------------------ views

  async list(): Promise<ServiceSummary[]> {
    const out: ServiceSummary[] = [];
    const records = await this.store.listServices();
    const replicas = await this.views();
    for (const rec of records) {
      const svc = rec.spec as unknown as StoredService;
      const mine = replicas.filter((r) => r.service === svc.name && r.state !== "stopped");
      const pools = svc.pools.map((p) => ({
        name: p.name,
        desired: svc.deleting ? 0 : (p.replicas?.count ?? 0),
        ready: mine.filter((r) => r.pool === p.name && r.state === "ready").length,
        engine: p.replicas?.engine ?? p.backends[0]?.engine ?? null,
        backends: p.backends.length,
      }));
      const desired = pools.reduce((s, p) => s + p.desired, 0);
      const ready = pools.reduce((s, p) => s + Math.min(p.ready, p.desired), 0);
      const fromJob = svc.pools.find((p) => p.replicas?.fromJob)?.replicas?.fromJob ?? null;
      const target = this.targets.get(svc.name) ?? null;
      const rolling = mine.some((r) => r.state === "draining") || slotsDoubled(mine);
      const failed = replicas.filter(
        (r) => r.service === svc.name && r.jobState === JobState.Failed && r.state === "stopped",
      );
      let state: ServiceSummary["state"];
      let note: string | null = null;
      if (svc.deleting) state = "undeploying";
      else if (fromJob !== null && target === null && ready === 0) {
        state = "waiting";
        note = `waiting for a verified checkpoint of job ${fromJob}`;
      } else if (rolling) state = "rolling";
      else if (ready >= desired) state = "ready";
      else state = failed.some((r) => r.updatedAt >= rec.updatedAt) ? "degraded" : "deploying";
      const lastFailed = failed[failed.length - 1];
      if (note === null && lastFailed && ready < desired)
        note = `replica ${lastFailed.slot} failed: ${lastFailed.reason ?? "?"}`;
      if (note === null && rolling) note = this.stuckRoll(svc, mine);
      out.push({
        name: svc.name,
        aliases: svc.aliases,
        file: svc.file,
        fromJob,
        target,
        pools,
        desired,
        ready,
        state,
        note,
        createdAt: rec.createdAt,
        updatedAt: rec.updatedAt,
      });
    }
    return out;
  }

  /**
   * A roll whose successor waits for capacity, said with the queue's reason: in a full pool a predecessor drains first
   * only while another replica of the service serves, so a lone replica in a full pool waits for room beside it.
   */
  private stuckRoll(svc: StoredService, live: readonly ReplicaView[]): string | null {
    for (const r of live) {
      if (r.state !== "starting" || r.jobState !== JobState.Pending) continue;
      // At or before: a successor submitted within the same millisecond as its predecessor (a test's clock) is still one.
      const predecessor = live.find((x) => x.slot === r.slot && x.jobId !== r.jobId && x.createdAt <= r.createdAt);
      const why = this.jobs.waitingFor?.(r.jobId);
      if (!predecessor || !why) continue;
      const others = live.some((x) => x.slot !== r.slot && x.state === "ready");
      return (
        `the successor of ${r.slot} waits: ${why}; ${predecessor.jobId} serves meanwhile` +
        (others
          ? ""
          : ` (it is the only replica serving, so it does not drain first; fix: room for one more replica on ${r.pool}, or scale ${svc.name} to 0 and back, with downtime)`)
      );
    }
    return null;
  }

  async describe(name: string): Promise<{ service: ServiceSummary; spec: StoredService; replicas: ReplicaView[] }> {
    const svc = await this.service(name);
    const summary = (await this.list()).find((s) => s.name === svc.name)!;
    return { service: summary, spec: svc, replicas: (await this.views()).filter((r) => r.service === svc.name) };
  }

  private async views(): Promise<ReplicaView[]> {
    const out: ReplicaView[] = [];
    for (const r of await this.store.listReplicas()) {
      const job = await this.store.getJob(r.jobId);
      const attempt = job ? await this.ctx.currentAttempt(job.id) : undefined;
      out.push({
        ...r,
        jobState: job?.state ?? "GONE",
        restarts: job?.restarts ?? 0,
        attempt: attempt?.n ?? null,
        node: attempt && attempt.endedAt === null ? (attempt.nodes[0] ?? null) : null,
        runningPool: attempt && attempt.endedAt === null ? attempt.pool : null,
        reason: job?.reason ?? null,
      });
    }
    return out;
  }

  // --------------------------------------------------------------------------------------------- backend set

  /** The live backend set (see control-plane-source.ts for the contract). */
  backendSet(): BackendSet {
    return this.set;
  }

  /**
   * Answers when the set differs from `since` of `epoch`, or after `waitMs` (the long poll of GET
   * /api/services/backends). Without `since`, at once.
   */
  async waitForChange(
    since: number | null,
    epoch: string | null,
    waitMs: number,
    signal?: AbortSignal,
  ): Promise<BackendSet> {
    // A restarted server answers only once it has rebuilt the set from the store: an empty set of a new epoch would
    // make the gateways drop every backend for a moment.
    await this.firstPublish;
    if (since === null || epoch !== this.epoch || since !== this.set.version) return this.set;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, waitMs);
      this.waiters.add(done);
      signal?.addEventListener("abort", done, { once: true });
    });
    return this.set;
  }

  /** Rebuilds the set from the store; a change gets a new version and wakes the long polls. */
  async publish(): Promise<void> {
    const services: ServiceBackends[] = [];
    const replicas = await this.store.listReplicas();
    for (const svc of await this.services()) {
      const backends: BackendEntry[] = [];
      for (const pool of svc.pools) {
        for (const b of pool.backends) {
          if (svc.deleting) continue;
          backends.push({
            id: b.id,
            url: b.url,
            pool: pool.name,
            engine: b.engine,
            state: "ready",
            model: svc.name,
            weight: b.weight,
            ...(b.servedModel !== undefined && { servedModel: b.servedModel }),
            ...(b.maxInFlight !== undefined && { maxInFlight: b.maxInFlight }),
            ...(b.apiKeyEnv !== undefined && { apiKeyEnv: b.apiKeyEnv }),
          });
        }
      }
      for (const r of replicas.filter((x) => x.service === svc.name)) {
        if ((r.state !== "ready" && r.state !== "draining") || r.url === null || r.readyAttempt === null) continue;
        const attempt = await this.ctx.currentAttempt(r.jobId);
        if (!attempt || attempt.n !== r.readyAttempt || attempt.endedAt !== null) continue;
        const spec = svc.pools.find((p) => p.name === r.pool)?.replicas;
        backends.push({
          id: `${svc.name}/${r.slot}/${r.jobId}`,
          url: r.url,
          pool: attempt.pool,
          engine: spec?.engine ?? "openai-generic",
          state: r.state,
          model: svc.name,
          replica: r.slot,
          ...(attempt.nodes[0] !== undefined && { node: attempt.nodes[0] }),
          checkpointStep: r.checkpointStep,
          ...(spec?.weight !== undefined && { weight: spec.weight }),
          ...(spec?.servedModel !== undefined && { servedModel: spec.servedModel }),
          ...(spec?.maxInFlight !== undefined && { maxInFlight: spec.maxInFlight }),
          ...(spec?.apiKeyEnv !== undefined && { apiKeyEnv: spec.apiKeyEnv }),
        });
      }
      services.push({
        name: svc.name,
        aliases: svc.aliases,
        pools: svc.pools.map((p) => ({ name: p.name, priority: p.priority, queueThreshold: p.queueThreshold })),
        backends,
      });
    }
    const key = JSON.stringify(services);
    this.published();
    if (key === this.setKey) return;
    this.setKey = key;
    this.version = Math.max(this.version + 1, Date.now());
    this.set = { version: this.version, epoch: this.epoch, services };
    for (const w of [...this.waiters]) w();
  }

  // -------------------------------------------------------------------------------------------- readiness

  /** What services-watch.ts needs to probe a replica: its URL and engine, and whether this attempt is ready. */
  async replicaOf(jobId: string): Promise<ReplicaRecord | null> {
    return (await this.store.listReplicas()).find((r) => r.jobId === jobId) ?? null;
  }

  private readonly urls = new Map<string, { attempt: number; url: string }>();

  /**
   * Where a replica's attempt answers (replicaEndpoint): asked once per attempt, since a node's address does not
   * change under a running replica.
   */
  async replicaUrl(job: JobRecord, attempt: AttemptRecord): Promise<string> {
    const known = this.urls.get(job.id);
    if (known?.attempt === attempt.n) return known.url;
    const host = job.spec.workload?.host ?? "127.0.0.1";
    const pool = this.ctx.pool(attempt.pool);
    const { urlHost } = pool
      ? await replicaEndpointOn(this.ctx.executor, pool, host, attempt.nodes[0])
      : replicaEndpoint(host, "local", null, undefined);
    const url = `http://${urlHostPart(urlHost)}:${attempt.masterPort}`;
    this.urls.set(job.id, { attempt: attempt.n, url });
    return url;
  }

  /** The replica's engine answered its readiness probe in this attempt: it joins the backend set. */
  async markReady(job: JobRecord, attempt: AttemptRecord, url: string): Promise<void> {
    const r = await this.replicaOf(job.id);
    if (!r || r.state === "stopped") return;
    const at = this.ctx.now();
    await this.store.putReplica({
      ...r,
      state: r.state === "draining" ? "draining" : "ready",
      readyAttempt: attempt.n,
      url,
      checkpoint: attempt.resumeFrom,
      checkpointStep: attempt.resumeStep,
      updatedAt: at,
    });
    this.liveness.delete(job.id);
    const served = attempt.resumeFrom ? `; serving ${attempt.resumeFrom} (step ${attempt.resumeStep ?? "?"})` : "";
    await this.ctx.event(
      job.id,
      "replica.ready",
      `replica ${r.service}/${r.slot} ready at ${url} after ${((at - attempt.startedAt) / 1000).toFixed(1)} s on ${attempt.nodes.join(",")}${served}`,
      { attempt: attempt.n, url, pool: attempt.pool, service: r.service, step: attempt.resumeStep },
    );
    await this.publish();
    // What the model server warned about while starting (e.g. random weights), said where people look.
    const [rank] = await this.store.listRanks(job.id, attempt.n);
    for (const warning of logWarnings(rank?.logPath)) {
      await this.ctx.event(job.id, "replica.warning", `replica ${r.service}/${r.slot}: its log says: ${warning}`, {
        service: r.service,
        slot: r.slot,
      });
    }
  }

  /** A ready replica's liveness probe failed: true once it has failed `count` times over at least `forMs`. */
  livenessFailed(jobId: string, ok: boolean, count = 5, forMs = 15_000): boolean {
    if (ok) {
      this.liveness.delete(jobId);
      return false;
    }
    const now = this.ctx.now();
    const l = this.liveness.get(jobId) ?? { failures: 0, since: now };
    l.failures++;
    this.liveness.set(jobId, l);
    return l.failures >= count && now - l.since >= forMs;
  }

  private readonly probedAt = new Map<string, number>();

  /** Is a ready replica's next liveness probe due (every `everyMs`)? */
  probeDue(jobId: string, everyMs = 2000): boolean {
    const now = this.ctx.now();
    if (now - (this.probedAt.get(jobId) ?? 0) < everyMs) return false;
    this.probedAt.set(jobId, now);
    return true;
  }

  /** The replica's attempt ended (an incident): it leaves the backend set until its next attempt is ready. */
  async markDown(jobId: string): Promise<void> {
    const r = await this.replicaOf(jobId);
    if (!r || r.readyAttempt === null) return;
    await this.store.putReplica({
      ...r,
      state: r.state === "ready" ? "starting" : r.state,
      readyAttempt: null,
      updatedAt: this.ctx.now(),
    });
    this.liveness.delete(jobId);
    await this.publish();
  }

  // ------------------------------------------------------------------------------------------------ reconcile

  /** Runs one reconcile unless one is under way (the supervisor calls it every pass). */
  reconcileSoon(): void {
    if (this.reconciling) return;
    this.reconciling = this.reconcile()
      .catch((err: unknown) =>
        this.ctx.log(`services: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`),
      )
      .finally(() => {
        this.reconciling = null;
      });
  }

  async drain(): Promise<void> {
    while (this.reconciling) await this.reconciling;
  }

  private serialized: Promise<void> = Promise.resolve();

  /** Makes the replicas match the services: create, roll, drain, stop; then publishes the backend set. */
  reconcile(): Promise<void> {
    const run = this.serialized.then(() => this.reconcileOnce());
    this.serialized = run.catch(() => undefined);
    return run;
  }

  private async reconcileOnce(): Promise<void> {
    const services = await this.services();
    const all = await this.store.listReplicas();
    for (const svc of services) {
      const mine = all.filter((r) => r.service === svc.name);
      await this.syncStates(mine);
      const live = mine.filter((r) => r.state !== "stopped");
      if (svc.deleting) {
        for (const r of live) await this.drainOrStop(svc, r, true);
        if ((await this.store.listReplicas({ service: svc.name })).every((r) => r.state === "stopped")) {
          await this.store.deleteService(svc.name);
          for (const r of await this.store.listReplicas({ service: svc.name })) await this.store.deleteReplica(r.jobId);
          this.targets.delete(svc.name);
          await this.ctx.event(null, "service.undeployed", `service ${svc.name} undeployed: every replica stopped`, {
            service: svc.name,
          });
        }
        continue;
      }
      await this.reconcileService(svc, mine);
    }
    await this.publish();
  }

  /** Replica records follow their jobs: a job that ended (cancelled, failed) is a stopped replica. */
  private async syncStates(replicas: ReplicaRecord[]): Promise<void> {
    for (const r of replicas) {
      if (r.state === "stopped") continue;
      const job = await this.store.getJob(r.jobId);
      if (job && !terminalJobStates.has(job.state)) {
        if (r.readyAttempt !== null) {
          const attempt = await this.ctx.currentAttempt(job.id);
          if (!attempt || attempt.n !== r.readyAttempt || attempt.endedAt !== null) {
            r.state = r.state === "draining" ? "draining" : "starting";
            r.readyAttempt = null;
            r.updatedAt = this.ctx.now();
            await this.store.putReplica(r);
          }
        }
        continue;
      }
      r.state = "stopped";
      r.readyAttempt = null;
      r.updatedAt = this.ctx.now();
      await this.store.putReplica(r);
      if (job?.state === JobState.Failed) {
        await this.ctx.event(r.jobId, "replica.failed", `replica ${r.service}/${r.slot} failed: ${job.reason ?? "?"}`, {
          service: r.service,
          slot: r.slot,
        });
      }
    }
  }

  private async reconcileService(svc: StoredService, mine: ReplicaRecord[]): Promise<void> {
    const target = await this.target(svc);
    let rollingNow = slotsDoubled(mine.filter((r) => r.state !== "stopped"));
    const wanted = new Set<string>();
    for (const pool of svc.pools) {
      const spec = pool.replicas;
      if (!spec) continue;
      if (spec.fromJob !== undefined && target === null) continue; // nothing verified to serve yet
      for (let i = 0; i < spec.count; i++) {
        const slot = `${pool.name}-${i}`;
        wanted.add(slot);
        const inSlot = mine.filter((r) => r.slot === slot && r.state !== "stopped");
        if (inSlot.length === 0) {
          // A slot whose replica failed for good since the last deploy stays empty (said in `services`).
          const last = mine.filter((r) => r.slot === slot).pop();
          const svcRecord = (await this.store.listServices()).find((s) => s.name === svc.name);
          if (
            last &&
            (await this.store.getJob(last.jobId))?.state === JobState.Failed &&
            last.updatedAt >= (svcRecord?.updatedAt ?? 0)
          ) {
            continue;
          }
          await this.createReplica(svc, pool.name, i, slot, target);
          continue;
        }
        const newest = inSlot[inSlot.length - 1]!;
        const older = inSlot.slice(0, -1);
        if (older.length > 0) {
          // A roll under way in this slot: the old replica drains once the new one is ready.
          if (newest.state === "ready") for (const r of older) await this.drainOrStop(svc, r, false);
          // No room beside it (the pool is full): the old one drains first, as long as another replica serves
          // meanwhile (maxUnavailable 1); its node then goes to the new one.
          else if (await this.noRoomFor(newest, mine)) for (const r of older) await this.drainOrStop(svc, r, false);
          continue;
        }
        if (newest.state === "draining") {
          await this.drainOrStop(svc, newest, false);
          continue;
        }
        // A replica made from an older spec of its pool (a redeploy changed its command, env, ...).
        const stale = await this.onOldSpec(newest, spec, svc.workdir);
        if (stale && newest.state === "starting") {
          // Not serving: nothing to keep available while it is replaced.
          await this.stopReplica(
            newest,
            `replaced: its spec changed (${(spec.changed ?? []).join(", ") || "redeployed"})`,
          );
          await this.createReplica(svc, pool.name, i, slot, target);
          continue;
        }
        // One at a time: a newer verified checkpoint, or a changed spec, rolls onto the slots in turn.
        const newer = target !== null && isNewer(target, newest);
        if (!rollingNow && newest.state === "ready" && (newer || stale)) {
          rollingNow = true;
          await this.ctx.event(
            newest.jobId,
            "replica.rolling",
            stale
              ? `replica ${svc.name}/${slot}: its spec changed (${(spec.changed ?? []).join(", ") || "redeployed"}); starting its successor beside it`
              : `replica ${svc.name}/${slot}: checkpoint ${target!.path} (step ${target!.step}) verified; starting its successor beside it`,
            {
              service: svc.name,
              slot,
              ...(stale ? { spec: spec.changed ?? [] } : {}),
              ...(target ? { step: target.step, from: newest.checkpointStep } : {}),
            },
          );
          await this.createReplica(svc, pool.name, i, slot, target);
        }
      }
    }
    // Slots no longer wanted (scaled down, pool removed): drain and stop.
    for (const r of mine) if (r.state !== "stopped" && !wanted.has(r.slot)) await this.drainOrStop(svc, r, true);
  }

  /** Was the replica's job made from another spec than its pool's now (replicaRevision)? Older replicas say nothing. */
  private async onOldSpec(r: ReplicaRecord, spec: StoredReplicas, workdir: string): Promise<boolean> {
    const made = (await this.store.getJob(r.jobId))?.spec.workload?.revision;
    return made !== undefined && made !== (spec.revision ?? replicaRevision(spec, workdir));
  }

  /**
   * A successor that has waited a few seconds for capacity while another replica of the service (not in its slot)
   * serves: its predecessor may drain first.
   */
  private async noRoomFor(successor: ReplicaRecord, mine: readonly ReplicaRecord[]): Promise<boolean> {
    const job = await this.store.getJob(successor.jobId);
    if (!job || job.state !== JobState.Pending || this.ctx.now() - job.createdAt < 3000) return false;
    return mine.some((r) => r.slot !== successor.slot && r.state === "ready");
  }

  private async createReplica(
    svc: StoredService,
    poolName: string,
    index: number,
    slot: string,
    target: { path: string; step: number; folder: string } | null,
  ): Promise<void> {
    const pool = svc.pools.find((p) => p.name === poolName)!;
    const spec = pool.replicas!;
    const workload: ReplicaWorkload = {
      kind: "replica",
      service: svc.name,
      slot,
      engine: spec.engine,
      host: spec.host,
      port: spec.port + index <= 65535 ? spec.port + index : null,
      readiness: { path: engineAdapter(spec.engine).healthPath, timeoutSeconds: spec.readyTimeoutS },
      restart: "always",
      revision: spec.revision ?? replicaRevision(spec, svc.workdir),
    };
    const rec = spec.recovery ?? {};
    const others = svc.pools
      .map((p) => p.name)
      .filter((p) => p !== poolName && this.ctx.cluster.pools.some((c) => c.name === p));
    const jobSpec: CompiledJobSpec = {
      name: replicaJobName(svc.name, slot),
      pools: [poolName, ...others],
      nodes: 1,
      minNodes: 1,
      procsPerNode: 1,
      command: spec.command,
      env: { ...spec.env, SWITCHYARD_SERVICE: svc.name, SWITCHYARD_REPLICA: slot },
      workdir: svc.workdir,
      steps: null,
      checkpoint: {
        // Replicas write no checkpoints; they read the training job's newest verified one (resumeFrom: its folder).
        dir: path.join(this.ctx.home, "services", replicaJobName(svc.name, "x").slice(0, -2), "none"),
        keep: 1,
        perRun: false,
        resumeFrom: target?.folder ?? null,
      },
      progress: { regex: null },
      detection: {
        startupSeconds: spec.readyTimeoutS,
        hangMinSeconds: 10,
        hangMultiple: 3,
        stackDumpSeconds: 2,
        nanIsFailure: false,
      },
      recovery: {
        maxRestarts: rec.maxRestarts ?? 10,
        // Restart "always": only the failures of the last 5 minutes count against the budget.
        restartWindowSeconds: 300,
        crashLoopAttempts: 2,
        poolFailures: { count: 3, windowSeconds: 1800 },
        backoffSeconds: rec.backoffSeconds ?? 1,
        maxBackoffSeconds: rec.maxBackoffSeconds ?? 30,
        strikesBeforeCordon: rec.strikesBeforeCordon ?? 2,
        graceSeconds: rec.graceSeconds ?? 5,
      },
      source: svc.file,
      workload,
    };
    const job = await this.jobs.submit(jobSpec);
    const now = this.ctx.now();
    await this.store.putReplica({
      jobId: job.id,
      service: svc.name,
      slot,
      pool: poolName,
      state: "starting",
      readyAttempt: null,
      url: null,
      checkpoint: null,
      checkpointStep: null,
      drainingSince: null,
      createdAt: now,
      updatedAt: now,
    });
    await this.ctx.event(
      job.id,
      "replica.created",
      `replica ${svc.name}/${slot} created as job ${job.id}${target ? ` to serve checkpoint step ${target.step} of ${target.folder}` : ""}`,
      { service: svc.name, slot, pool: poolName },
    );
  }

  /**
   * Drains a replica (out of the backend set for new requests: state "draining"), then stops it once its engine has
   * no request in flight (after a moment for the gateways to see the new set) or its drainSeconds are up. `now`:
   * stop a replica that is not serving at once.
   */
  private async drainOrStop(svc: StoredService, r: ReplicaRecord, scaleDown: boolean): Promise<void> {
    const spec = svc.pools.find((p) => p.name === r.pool)?.replicas;
    const drainMs = (spec?.drainSeconds ?? 30) * 1000;
    const now = this.ctx.now();
    if (r.state === "starting" || r.url === null) {
      await this.stopReplica(r, scaleDown ? "scaled down" : "replaced");
      return;
    }
    if (r.state !== "draining") {
      r.state = "draining";
      r.drainingSince = now;
      r.updatedAt = now;
      await this.store.putReplica(r);
      await this.ctx.event(
        r.jobId,
        "replica.draining",
        `replica ${r.service}/${r.slot} draining: no new requests; stops when its requests in flight are done (at most ${drainMs / 1000} s)`,
        { service: r.service, slot: r.slot },
      );
      await this.publish();
      return;
    }
    const since = r.drainingSince ?? now;
    const settled = now - since >= Math.min(2000, drainMs);
    if (!settled) return;
    const busy = now - since < drainMs ? await this.inFlight(r, spec?.engine) : 0;
    if (busy === 0 || busy === null || now - since >= drainMs) {
      if (busy === null && now - since < drainMs) return; // the engine cannot say: wait the drain period out
      await this.stopReplica(
        r,
        `drained after ${((now - since) / 1000).toFixed(1)} s${busy ? ` (${busy} request(s) still in flight)` : ""}`,
      );
    }
  }

  /** Requests the replica's engine is working on (its own metrics), or null when it does not say. */
  private async inFlight(r: ReplicaRecord, engine: EngineKind | undefined): Promise<number | null> {
    if (r.url === null || engine === undefined) return null;
    const adapter = engineAdapter(engine);
    if (adapter.defaultMetricsPath === undefined) return null;
    try {
      const res = await fetch(r.url + adapter.defaultMetricsPath, { signal: AbortSignal.timeout(2000) });
      if (!res.ok) return null;
      const load = adapter.parseLoad(parsePrometheusText((await res.text()).slice(0, 1 << 20)));
      if (load.running === undefined) return null;
      return load.running + (load.waiting ?? 0);
    } catch {
      return null;
    }
  }

  private async stopReplica(r: ReplicaRecord, why: string): Promise<void> {
    this.urls.delete(r.jobId);
    r.state = "stopped";
    r.readyAttempt = null;
    r.updatedAt = this.ctx.now();
    await this.store.putReplica(r);
    await this.publish();
    await this.jobs.cancel(r.jobId);
    await this.ctx.event(r.jobId, "replica.stopped", `replica ${r.service}/${r.slot} stopped: ${why}`, {
      service: r.service,
      slot: r.slot,
    });
  }

  // ------------------------------------------------------------------------------------------- checkpoints

  /**
   * The checkpoint a service's replicas should serve: the newest one of the newest run of its `fromJob` whose
   * manifest verifies (a torn or corrupted newer one is skipped). Null when the service names no job or none verifies.
   */
  private async target(svc: StoredService): Promise<{ path: string; step: number; folder: string } | null> {
    const fromJob = svc.pools.find((p) => p.replicas?.fromJob)?.replicas?.fromJob;
    if (fromJob === undefined) return null;
    const runs = (await this.store.listJobs()).filter((j) => j.name === fromJob && j.spec.workload === undefined);
    for (const job of runs) {
      const recorded = (await this.store.listCheckpoints(job.id))
        .filter((c) => c.verified)
        .map((c) => ({ path: c.path, step: c.step }));
      const onDisk = await listCheckpointDirs(job.spec.checkpoint.dir);
      const candidates = [...new Map([...onDisk, ...recorded].map((c) => [c.path, c])).values()].sort(
        (a, b) => b.step - a.step,
      );
      for (const c of candidates) {
        if (await this.verifies(c.path, c.step)) {
          const found = { path: c.path, step: c.step, folder: path.dirname(c.path) };
          const prior = this.targets.get(svc.name);
          if (prior?.path !== found.path) {
            this.targets.set(svc.name, { path: found.path, step: found.step, jobId: job.id });
            await this.ctx.event(
              null,
              "service.checkpoint",
              `service ${svc.name}: checkpoint ${found.path} (step ${found.step}) of ${job.id} verifies`,
              {
                service: svc.name,
                path: found.path,
                step: found.step,
                job: job.id,
              },
            );
          }
          return found;
        }
      }
    }
    return null;
  }

  /** Verifies a checkpoint's manifest, remembering success while the folder exists and failure for 3 s. */
  private async verifies(dir: string, step: number): Promise<boolean> {
    if (this.verified.has(dir)) {
      if (
        await lstat(dir).then(
          () => true,
          () => false,
        )
      )
        return true;
      this.verified.delete(dir);
      return false;
    }
    const failedAt = this.unverified.get(dir);
    if (failedAt !== undefined && this.ctx.now() - failedAt < 3000) return false;
    const v = await verifyCheckpoint(dir, step);
    if (v.ok) {
      this.verified.set(dir, step);
      this.unverified.delete(dir);
    } else this.unverified.set(dir, this.ctx.now());
    return v.ok;
  }

  /**
   * Which pool does what: per pool, its nodes (cordoned ones counted), the training jobs on it and the services whose
   * replicas run there, with the nodes each kind holds (one inventory: a node serves or trains, never both).
   */
  async pools(): Promise<PoolUse[]> {
    const nodes = await this.store.listNodes();
    const out = new Map<string, PoolUse>();
    for (const p of this.ctx.cluster.pools) {
      const mine = nodes.filter((n) => n.pool === p.name);
      out.set(p.name, {
        pool: p.name,
        executor: p.executor,
        vendor: p.accelerator.vendor,
        nodes: mine.length,
        cordoned: mine.filter((n) => n.cordoned).length,
        training: [],
        serving: [],
        trainingNodes: [],
        servingNodes: [],
      });
    }
    for (const job of await this.store.listJobs({ activeOnly: true })) {
      const a = await this.ctx.currentAttempt(job.id);
      if (!a || a.endedAt !== null) continue;
      const use = out.get(a.pool);
      if (!use) continue;
      const replica = job.spec.workload;
      const names = replica ? use.serving : use.training;
      const held = replica ? use.servingNodes : use.trainingNodes;
      const name = replica ? replica.service : job.id;
      if (!names.includes(name)) names.push(name);
      for (const n of a.nodes) if (!held.includes(n)) held.push(n);
    }
    return [...out.values()];
  }

  // ---------------------------------------------------------------------------------------------- the ledger

  /**
   * Replica-seconds by state per pool: serving (ready, draining included), starting (launched, not ready yet), down
   * (between attempts: backoff, waiting for a node). From the replicas' jobs, attempts and readiness events.
   */
  async ledger(now = this.ctx.now()): Promise<ServingLedgerRow[]> {
    const rows = new Map<string, ServingLedgerRow>();
    const row = (pool: string): ServingLedgerRow => {
      let r = rows.get(pool);
      if (!r) rows.set(pool, (r = { pool, serving: 0, starting: 0, down: 0 }));
      return r;
    };
    for (const rep of await this.store.listReplicas()) {
      const job = await this.store.getJob(rep.jobId);
      if (!job) continue;
      const end = job.endedAt ?? now;
      const attempts = await this.store.listAttempts(job.id);
      const ready = new Map<number, number>();
      for (const e of await this.store.listEvents({ jobId: job.id, limit: 100_000 })) {
        if (e.kind === "replica.ready" && typeof e.data.attempt === "number") ready.set(e.data.attempt, e.t);
      }
      let cursor = job.createdAt;
      for (const a of attempts) {
        if (a.startedAt > cursor) row(a.pool).down += (a.startedAt - cursor) / 1000;
        const aEnd = Math.min(a.endedAt ?? end, end);
        const readyAt = ready.get(a.n);
        if (readyAt !== undefined && readyAt <= aEnd) {
          row(a.pool).starting += Math.max(0, readyAt - a.startedAt) / 1000;
          row(a.pool).serving += Math.max(0, aEnd - readyAt) / 1000;
        } else row(a.pool).starting += Math.max(0, aEnd - a.startedAt) / 1000;
        cursor = Math.max(cursor, aEnd);
      }
      if (end > cursor && !terminalJobStates.has(job.state))
        row(attempts[attempts.length - 1]?.pool ?? rep.pool).down += (end - cursor) / 1000;
    }
    return [...rows.values()].sort((a, b) => (a.pool < b.pool ? -1 : 1));
  }
}

/** Does a slot hold more than one live replica (a roll under way)? */
function slotsDoubled(live: ReadonlyArray<{ slot: string }>): boolean {
  const seen = new Set<string>();
  for (const r of live) {
    if (seen.has(r.slot)) return true;
    seen.add(r.slot);
  }
  return false;
}

/** Is the target checkpoint newer than what the replica serves? Another run's folder, or a higher step in the same. */
function isNewer(target: { path: string; step: number; folder: string }, r: ReplicaRecord): boolean {
  if (r.checkpoint === null) return true;
  if (r.checkpoint === target.path) return false;
  if (path.dirname(r.checkpoint) !== target.folder) return true;
  return target.step > (r.checkpointStep ?? -1);
}

const warningLine = /\bWARNING\b/;
const maxWarnings = 5;

/** The WARNING lines of a replica's log (the first few, each shortened), so that they are said, not only logged. */
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
    if (!warningLine.test(line)) continue;
    const trimmed = line.trim();
    out.push(trimmed.length > 300 ? `${trimmed.slice(0, 300)}…` : trimmed);
    if (out.length === maxWarnings) break;
  }
  return out;
}
