import { constants as fsConstants } from "node:fs";
import { access, mkdir, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import path from "node:path";
import type { CheckpointCandidate } from "../core/checkpoints.js";
import type { CompiledJobSpec, PoolSpec } from "../core/spec.js";
import { AttemptState, JobState } from "../core/states.js";
import { torchrunEnv, type TorchrunEnvInput } from "../core/torchrun-env.js";
import type { AttemptRecord, JobRecord } from "../store/port.js";
import type { Adopter, AdoptedLaunch } from "./adopt.js";
import { findResumePoint, verifyCheckpoint } from "./checkpoint-scan.js";
import type { SupervisorContext } from "./context.js";
import type { Placement, Queue } from "./queue.js";
import { replicaEndpointOn, replicaLaunchArgv, replicaPortsOn } from "./services.js";
import type { Verdict } from "./verdict.js";

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

/** A launch's end: the gang runs, or the launch failed with the verdict the loop acts on. */
export type LaunchResult =
  | { kind: "launched"; attempt: AttemptRecord }
  | { kind: "failed"; attempt: AttemptRecord; verdict: Extract<Verdict, { kind: "failed" | "disk-full" }> };

/**
 * A queue decision becomes an attempt: the resume point chosen (the newest checkpoint that verifies; torn ones are
 * skipped and said), the attempt recorded with its devices, the gang launched through the executor, its ranks
 * recorded, and what a person should know said (a foreign checkpoint, a move to another pool, a shrink).
 */
export async function launchAttempt(
  ctx: SupervisorContext,
  queue: Queue,
  job: JobRecord,
  placement: Placement,
  adopter?: Adopter,
): Promise<LaunchResult> {
  const { store } = ctx;
  const spec = job.spec;
  const failing = placement.failing;
  const pool = ctx.pool(placement.pool) as PoolSpec;

  const { chosen, known } = await chooseResumePoint(ctx, job);

  const previous = await ctx.currentAttempt(job.id);
  const n = (previous?.n ?? 0) + 1;
  const dir = path.join(ctx.home, "jobs", job.id, `attempt-${n}`);
  await mkdir(dir, { recursive: true });
  // Checkpoints the script writes itself: verified (and restored, or set aside for a new run) before it starts.
  let adopted: AdoptedLaunch | null = null;
  let adoptError: unknown = null;
  if (adopter && spec.checkpoint.watch) {
    adopted = await adopter.prepareLaunch(job, n).catch((err: unknown) => {
      adoptError = err;
      return null;
    });
  }
  const attempt: AttemptRecord = {
    jobId: job.id,
    n,
    state: AttemptState.Launching,
    pool: pool.name,
    nodes: placement.nodes,
    // A replica's port must also differ from those of the replicas already on its node (a roll's successor beside its
    // predecessor): on another host, a free port here says nothing about that node.
    masterPort: spec.workload?.port
      ? await preferredPort(
          spec.workload.port,
          pool.executor === "local" ? [] : await replicaPortsOn(ctx, placement.nodes[0]),
        )
      : await freePort(),
    dir,
    resumeFrom: chosen?.path ?? adopted?.resumeFrom ?? null,
    resumeStep: chosen?.step ?? adopted?.resumeStep ?? null,
    startedAt: ctx.now(),
    endedAt: null,
    reason: null,
  };
  // The devices are the attempt's from now on (devices.json lets a restarted server count them too).
  queue.holdDevices(job.id, n, placement.devices);
  await writeFile(path.join(dir, "devices.json"), JSON.stringify(placement.devices), { mode: 0o600 });
  await store.createAttempt(attempt);
  await ctx.setJobState(job, JobState.Starting, null);
  let launched;
  try {
    if (adoptError !== null) {
      const e = adoptError as NodeJS.ErrnoException;
      throw new LaunchError(
        `checking the checkpoints checkpoint.watch adopts failed: ${e.message ?? String(e)} ` +
          `(fix: check that the workdir and ${spec.checkpoint.dir} are writable)`,
        e.code ?? "EADOPT",
        false,
      );
    }
    await checkLaunchable(spec);
    // A replica listens where it is reached: on a workload manager's node, that node's address (services.ts).
    const replicaHost = spec.workload
      ? (await replicaEndpointOn(ctx.executor, pool, spec.workload.host, placement.nodes[0])).listen
      : "";
    launched = await ctx.executor.launch({
      jobId: job.id,
      jobName: job.name,
      attempt: n,
      dir,
      pool,
      nodes: placement.nodes,
      devices: placement.devices,
      procsPerNode: spec.procsPerNode,
      // A replica's {port} is its attempt's port, {checkpoint} the verified checkpoint it serves.
      command: spec.workload
        ? replicaLaunchArgv(spec.command, attempt.masterPort, chosen?.path ?? null, replicaHost)
        : spec.command,
      // What torchrun gives its workers (restart count, run id, ...), under the job's own env.
      env: { ...torchrunEnv(torchrunEnvInput(job, n)), ...spec.env },
      workdir: spec.workdir,
      masterPort: attempt.masterPort,
      checkpointDir: spec.checkpoint.dir,
      resumeFrom: chosen?.path ?? null,
    });
  } catch (err) {
    return { kind: "failed", attempt, verdict: judgeLaunchError(err, job, attempt, placement, ctx.now()) };
  }
  for (const r of launched) {
    await store.upsertRank({
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
  await store.updateAttempt(job.id, n, { state: AttemptState.Running });
  const from = chosen
    ? `resuming from ${chosen.path} (step ${chosen.step})`
    : (adopted?.summary ?? "starting fresh (no verified checkpoint)");
  if (chosen && !known.some((c) => c.path === chosen.path)) {
    // Not a checkpoint this job wrote or resumed before: another run's, taken on purpose. Say so.
    const why =
      path.dirname(chosen.path) === spec.checkpoint.dir
        ? `found in the shared checkpoint.dir ${spec.checkpoint.dir}`
        : `asked for with --resume-from ${spec.checkpoint.resumeFrom ?? ""}`;
    await ctx.event(
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
    await ctx.event(job.id, "job.moved", `moving from pool ${previous.pool} to ${pool.name}: ${why}`, {
      from: previous.pool,
      to: pool.name,
    });
  }
  if (placement.shrunk) {
    const message = `running on ${placement.nodes.length} of ${spec.nodes} node(s): no pool has enough free, healthy nodes`;
    await ctx.event(job.id, "job.shrunk", message, { nodes: placement.nodes.length });
  }
  const preflight = placement.preflight ? `; ${placement.preflight}` : "";
  await ctx.event(
    job.id,
    "attempt.launched",
    `attempt ${n} on ${pool.name} [${placement.nodes.join(", ")}]: ${from}${preflight}`,
    {
      attempt: n,
      ...(placement.preflight ? { preflight: placement.preflight } : {}),
      pool: pool.name,
      nodes: placement.nodes,
      resumeStep: attempt.resumeStep,
      ...(adopted?.summary ? { adopted: adopted.summary } : {}),
      masterPort: attempt.masterPort,
    },
  );
  return { kind: "launched", attempt };
}

/**
 * Checkpoint choice: the newest checkpoint of the job's folder that verifies (else the one `--resume-from` names);
 * every newer one that does not verify is recorded and said as skipped. Returns the choice and the checkpoints the
 * job knew before (to tell its own from another run's).
 */
async function chooseResumePoint(
  ctx: SupervisorContext,
  job: JobRecord,
): Promise<{ chosen: CheckpointCandidate | null; known: Array<{ path: string }> }> {
  const { store } = ctx;
  const own = await findResumePoint(job.spec.checkpoint.dir);
  const { chosen, skipped } = own.chosen ? own : await foreignResumePoint(job.spec, own);
  const known = await store.listCheckpoints(job.id);
  for (const s of skipped) {
    const reason = s.verification.ok ? "" : s.verification.reason;
    await store.upsertCheckpoint({
      jobId: job.id,
      step: s.step,
      path: s.path,
      verified: false,
      reason,
      seenAt: ctx.now(),
    });
    await ctx.event(job.id, "checkpoint.skipped", `skipping checkpoint ${s.path}: ${reason}`, {
      path: s.path,
      step: s.step,
      reason,
    });
  }
  if (chosen) {
    await store.upsertCheckpoint({
      jobId: job.id,
      step: chosen.step,
      path: chosen.path,
      verified: true,
      reason: null,
      seenAt: ctx.now(),
    });
  }
  return { chosen, known };
}

/** Where `run --resume-from` points: a folder of step-* checkpoints, or one checkpoint, of another run. */
async function foreignResumePoint(
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

/**
 * A launch that failed (the workdir or command is missing, spawn failed): an incident like any other, counted against
 * recovery.maxRestarts; when no retry can help (ENOENT of the workdir or command) the job fails at once. ENOSPC is no
 * incident: launches pause until there is space.
 */
export function judgeLaunchError(
  err: unknown,
  job: JobRecord,
  attempt: AttemptRecord,
  placement: Placement,
  now: number,
): Extract<Verdict, { kind: "failed" | "disk-full" }> {
  const e = err as NodeJS.ErrnoException;
  const code = err instanceof LaunchError ? err.code : (e?.code ?? "");
  if (code === "ENOSPC") {
    const why = `launch paused: disk full (${err instanceof Error ? err.message : String(err)})`;
    return { kind: "disk-full", why, path: e?.path ?? null };
  }
  const permanent = err instanceof LaunchError ? err.permanent : permanentLaunchCodes.has(code);
  const message = err instanceof Error ? err.message : String(err);
  return {
    kind: "failed",
    facts: {
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
    },
  };
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

function torchrunEnvInput(job: JobRecord, attempt: number): TorchrunEnvInput {
  const spec = job.spec;
  return {
    jobId: job.id,
    attempt,
    maxRestarts: spec.recovery.maxRestarts,
    procsPerNode: spec.procsPerNode,
    inherited: { ...process.env, ...spec.env },
  };
}

/** `port` when nobody listens on it now and it is not `taken` (a replica's configured port), else a free one. */
async function preferredPort(port: number, taken: readonly number[] = []): Promise<number> {
  if (taken.includes(port)) return freePort();
  const free = await new Promise<boolean>((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", () => resolve(false));
    srv.listen({ host: "127.0.0.1", port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
  return free ? port : freePort();
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
