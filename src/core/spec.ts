import { statSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { causePatternListSchema, type CausePattern } from "./classify.js";
import { watchPatternProblem } from "./adopted.js";
import { LinearRegExp, linearRegexProblem } from "./linear-regex.js";
import { SpecError, validateYaml, type ParsedYaml } from "./spec-errors.js";

/**
 * Specs go through stages: YAML text -> validated user spec (zod, strict) -> compiled spec with every default applied
 * and paths made absolute. Defaults live here and nowhere else.
 */

export const Vendor = { Nvidia: "nvidia", Ascend: "ascend", Cpu: "cpu" } as const;
export type Vendor = (typeof Vendor)[keyof typeof Vendor];

const name = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9._-]{0,62}$/,
    "must be lowercase letters, digits, '.', '_' or '-' | fix: rename it, e.g. my-job",
  );

/**
 * Bounds on every field: the server parses specs from anyone who can submit, so no field may cost it unbounded time
 * or memory, and no duration may be large enough to stall a job forever.
 */
export const specLimits = {
  /** Timers (startup, hang, stack dump, backoff, grace): at most a day. */
  durationSeconds: 24 * 3600,
  /** Counting windows (restart budget, pool failures): at most 30 days. */
  windowSeconds: 30 * 24 * 3600,
  envKeys: 1024,
  envKeyLength: 256,
  envValueLength: 32 * 1024,
  commandArgs: 1024,
  commandArgLength: 32 * 1024,
  pathLength: 4096,
  regexLength: 1024,
  jobPools: 64,
  clusterPools: 256,
  causePatterns: 256,
  nodes: 4096,
} as const;

/** A duration in seconds, bounded; the error names the limit in seconds and hours. */
function seconds(max: number = specLimits.durationSeconds) {
  return z.number().max(max, `must be at most ${max} seconds (${max / 3600} h) | fix: use a value <= ${max}`);
}

/** A string that may go into argv or the environment: bounded, no NUL byte (no process can receive one). */
function argString(max: number, what: string) {
  return z
    .string()
    .max(max, `is longer than ${max} characters | fix: shorten it, or pass large data in a file`)
    .refine((v) => !v.includes("\0"), { message: `contains a NUL byte, which no ${what} can hold | fix: remove it` });
}

const faultModelSchema = z.strictObject({
  /** Mean seconds between injected device failures (a rank is killed, as a chip would take it down). */
  deviceMtbfSeconds: z.number().positive().max(1e9).optional(),
  /** Chance per minute that a rank hangs (SIGSTOP), as a collective would with a dead link. */
  hangProbabilityPerMinute: z.number().min(0).max(1).optional(),
  seed: z.number().int().optional(),
});

/** How a pool of `executor: slurm` reaches its Slurm partition (docs/testbed.md). */
const slurmPoolSchema = z.strictObject({
  /** The partition this pool stands for (default: the pool's name). */
  partition: z.string().min(1).max(128).optional(),
  account: z.string().min(1).max(128).optional(),
  qos: z.string().min(1).max(128).optional(),
  /** Slurm's --constraint (node features), e.g. ascend910b. */
  constraint: z.string().min(1).max(512).optional(),
  /** More sbatch arguments for the job's allocation, one per item (never parsed by a shell). */
  sbatchArgs: z.array(argString(1024, "argument")).max(32).default([]),
  /** The Python that runs the node agent on the hosts (stdlib only). */
  agentPython: z.string().min(1).max(specLimits.pathLength).default("python3"),
  /** Environment for every rank on this pool, e.g. GLOO_SOCKET_IFNAME for the hosts' network interface. */
  env: z.record(z.string().max(256), argString(4096, "value")).default({}),
  /** A rank whose agent is silent this long is lost with its host. */
  lostAfterSeconds: z.number().min(1).max(3600).default(5),
});

/**
 * A pool's node health probes (docs/health.md): pre-flight before an attempt is placed on hosts, periodic on every
 * host, and on the culprit's host right after an incident. Defaults: on for Slurm pools (real hosts), off for local
 * pools (virtual nodes on this machine, with no devices of their own).
 */
const healthSchema = z.strictObject({
  preflight: z.boolean().optional(),
  /** Seconds between probes of every host of the pool; 0: never. */
  intervalSeconds: z
    .number()
    .int()
    .min(0)
    .max(7 * 86400)
    .optional(),
  afterIncident: z.boolean().optional(),
  /**
   * switchyard's network probe (agent/netprobe.py) on this pool's hosts: cut short before a launch (a host whose link
   * already collapsed is cordoned and left out), in full to localize a slowdown. Default: on for Slurm pools, off for
   * local pools (their virtual nodes share one machine's network).
   */
  networkProbe: z.boolean().optional(),
  /** A probe that has not answered after this long proves nothing (the host is left as it was). */
  timeoutSeconds: z.number().min(1).max(300).default(20),
  /** Free space on a checkpoint folder's or the home's filesystem below this is degraded. */
  minFreeDiskMiB: z.number().min(0).max(1e9).default(1024),
  minFreeMemoryMiB: z.number().min(0).max(1e9).default(256),
  maxGpuTemperatureC: z.number().min(20).max(200).optional(),
  maxNpuTemperatureC: z.number().min(20).max(200).optional(),
});

const poolSchema = z
  .strictObject({
    name,
    executor: z.enum(["local", "slurm"]).default("local"),
    accelerator: z
      .strictObject({
        vendor: z.enum(["nvidia", "ascend", "cpu"]),
        model: z.string().max(128).optional(),
      })
      .default({ vendor: "cpu" }),
    /** Local pools: how many virtual nodes. Slurm pools: the nodes come from Slurm (sinfo); the number is ignored. */
    nodes: z.number().int().min(1).max(4096).optional(),
    devicesPerNode: z.number().int().min(1).max(64).default(1),
    faultModel: faultModelSchema.optional(),
    slurm: slurmPoolSchema.optional(),
    health: healthSchema.optional(),
  })
  .superRefine((p, ctx) => {
    if (p.executor === "local" && p.nodes === undefined) {
      ctx.addIssue({ code: "custom", path: ["nodes"], message: "a local pool needs a node count | fix: nodes: 2" });
    }
    if (p.executor === "local" && p.nodes !== undefined && p.nodes > 64) {
      ctx.addIssue({ code: "custom", path: ["nodes"], message: "a local pool has at most 64 nodes | fix: nodes: 64" });
    }
    if (p.executor !== "slurm" && p.slurm !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["slurm"],
        message: "only a pool with executor: slurm takes slurm settings | fix: add executor: slurm, or remove slurm",
      });
    }
  })
  .transform((p) => ({ ...p, nodes: p.nodes ?? 0 }));

export const clusterSchema = z.strictObject({
  pools: z.array(poolSchema).min(1).max(specLimits.clusterPools),
  /** Failure patterns tried before the built-in table (docs/failure-causes.md). */
  causePatterns: causePatternListSchema.max(specLimits.causePatterns).default([]),
  /** A node's strike counts for this long (seconds; default 24 h), then decays; at most a year. */
  strikeWindowSeconds: z
    .number()
    .positive()
    .max(365 * 86400)
    .default(86400),
});

/** Defaults of `detection.slowdown`: a 2x slowdown of the char-GPT example (0.2-0.5 s steps) is caught in under a minute. */
export const slowdownDefaults = { factor: 2, windowSeconds: 20, sustainSeconds: 15, warmupSteps: 10 } as const;

/** Slowdown (gray failure) detection from progress alone: see src/core/slowdown.ts. */
const slowdownSchema = z.strictObject({
  /** Slow when the recent median step time is at least this many times the attempt's baseline. */
  factor: z.number().min(1.1).max(1000).default(slowdownDefaults.factor),
  /** The recent window (and the baseline's blocks): medians over this many seconds, at least 5 steps. */
  windowSeconds: seconds().positive().default(slowdownDefaults.windowSeconds),
  /** How long the window must stay slow before it is a slowdown. */
  sustainSeconds: seconds().min(0).default(slowdownDefaults.sustainSeconds),
  /** Steps at the start of each attempt left out of the baseline (compile, caches, data loader start). */
  warmupSteps: z.number().int().min(0).max(1_000_000).default(slowdownDefaults.warmupSteps),
});
export type SlowdownPolicy = z.output<typeof slowdownSchema>;

const detectionSchema = z.strictObject({
  /** Allowed time from launch to the first step report. */
  startupSeconds: seconds().positive().default(300),
  /** A gang silent for longer than max(hangMinSeconds, hangMultiple x p95 step time) is hung. */
  hangMinSeconds: seconds().positive().default(10),
  hangMultiple: z.number().min(1).max(1000).default(3),
  /** How long hung ranks get to write their stacks (SIGUSR1) before the gang is stopped. */
  stackDumpSeconds: seconds().min(0).default(2),
  /**
   * Native (C/C++) stacks of the hung culprit too, from gdb where it is installed (src/executors/native-stacks.ts):
   * about 10 s with PyTorch loaded, so give stackDumpSeconds that long.
   */
  nativeStacks: z.boolean().default(false),
  /** Treat a NaN or infinite loss as an incident and roll back to the last checkpoint. */
  nanIsFailure: z.boolean().default(true),
  slowdown: slowdownSchema.default({ ...slowdownDefaults }),
});

const recoverySchema = z.strictObject({
  maxRestarts: z.number().int().min(0).max(100_000).default(10),
  /** Count only the restarts of the last N seconds against maxRestarts: a long run on a big fleet fails often. */
  restartWindowSeconds: seconds(specLimits.windowSeconds).positive().optional(),
  /** Software crashes with the same signature at the same step on different nodes before the job stops. */
  crashLoopAttempts: z.number().int().min(2).max(1000).default(2),
  /** Infrastructure failures on one pool within a window after which the job moves to the next pool. */
  poolFailures: z
    .strictObject({
      count: z.number().int().min(1).max(100_000).default(3),
      windowSeconds: seconds(specLimits.windowSeconds).positive().default(1800),
    })
    .default({ count: 3, windowSeconds: 1800 }),
  backoffSeconds: seconds().min(0).default(1),
  maxBackoffSeconds: seconds().min(0).default(60),
  strikesBeforeCordon: z.number().int().min(1).max(100_000).default(2),
  graceSeconds: seconds().min(0).default(5),
});

const checkpointSchema = z
  .strictObject({
    dir: argString(specLimits.pathLength, "path").pipe(z.string().min(1)).optional(),
    keep: z.number().int().min(1).max(10_000).default(3),
    /** Files the script writes itself, adopted by switchyard (docs/checkpoints-adopted.md): `snapshot.pt`, `ckpt/*.pt`. */
    watch: z
      .string()
      .superRefine((pattern, ctx) => {
        const problem = watchPatternProblem(pattern);
        if (problem) ctx.addIssue({ code: "custom", message: problem });
      })
      .optional(),
    /** A watched file is adopted once its size and mtime have not changed for this long. */
    settleSeconds: z.number().min(0.2).max(3600, "must be at most 3600 seconds | fix: use a value <= 3600").optional(),
  })
  .superRefine((c, ctx) => {
    if (c.settleSeconds !== undefined && c.watch === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["settleSeconds"],
        message:
          "is set but checkpoint.watch is not | fix: add watch: <the file your script saves>, or drop settleSeconds",
      });
    }
  });

const progressSchema = z.strictObject({
  regex: z
    .string()
    .max(specLimits.regexLength, `is longer than ${specLimits.regexLength} characters | fix: shorten the pattern`)
    .superRefine((source, ctx) => {
      const problem = progressRegexProblem(source);
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    })
    .optional(),
});

/** Why a progress regex is refused: not valid on the linear-time engine (issue #9), or no named group `step`. */
function progressRegexProblem(source: string): string | null {
  const example = "e.g. 'step (?<step>\\d+) loss (?<loss>\\S+)'";
  const problem = linearRegexProblem(source);
  if (problem) return `is not a valid regular expression for the linear-time engine: ${problem} | fix: ${example}`;
  return new LinearRegExp(source).groupNames.includes("step")
    ? null
    : `is not a valid regular expression with a named group 'step' | fix: ${example}`;
}

export const jobSchema = z.strictObject({
  name,
  pools: z.array(name).min(1).max(specLimits.jobPools).optional(),
  nodes: z.number().int().min(1).max(specLimits.nodes).default(1),
  /** Shrink to as few as this many nodes rather than wait for capacity (elastic jobs). */
  minNodes: z.number().int().min(1).max(specLimits.nodes).optional(),
  procsPerNode: z.number().int().min(1).max(64).default(1),
  /** Queue order: higher first; equal priorities in submission order. */
  priority: z.number().int().min(-1000).max(1000).default(0),
  command: z
    .array(argString(specLimits.commandArgLength, "argument").pipe(z.string().min(1)))
    .min(1)
    .max(specLimits.commandArgs, `has more than ${specLimits.commandArgs} arguments | fix: pass them in a file`),
  env: z
    .record(
      z
        .string()
        .max(specLimits.envKeyLength, `is longer than ${specLimits.envKeyLength} characters | fix: shorten the name`)
        .regex(/^[^=\0]+$/, "is not a variable name (it has '=' or a NUL byte) | fix: rename the variable"),
      z
        .union([argString(specLimits.envValueLength, "environment variable"), z.number(), z.boolean()])
        .transform(String),
    )
    .refine((env) => Object.keys(env).length <= specLimits.envKeys, {
      message: `has more than ${specLimits.envKeys} variables | fix: pass the rest in a file the job reads`,
    })
    .default({}),
  workdir: argString(specLimits.pathLength, "path").default("."),
  steps: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  checkpoint: checkpointSchema.default({ keep: 3 }),
  progress: progressSchema.default({}),
  recovery: recoverySchema.default({
    maxRestarts: 10,
    crashLoopAttempts: 2,
    poolFailures: { count: 3, windowSeconds: 1800 },
    backoffSeconds: 1,
    maxBackoffSeconds: 60,
    strikesBeforeCordon: 2,
    graceSeconds: 5,
  }),
  detection: detectionSchema.default({
    startupSeconds: 300,
    hangMinSeconds: 10,
    hangMultiple: 3,
    stackDumpSeconds: 2,
    nativeStacks: false,
    nanIsFailure: true,
    slowdown: { ...slowdownDefaults },
  }),
});

export type ClusterSpecInput = z.input<typeof clusterSchema>;
export type JobSpecInput = z.input<typeof jobSchema>;
export type PoolSpec = z.output<typeof poolSchema>;

export interface ClusterSpec {
  pools: PoolSpec[];
  causePatterns?: CausePattern[];
  /** How long a strike against a node counts (default 86400: 24 h). */
  strikeWindowSeconds?: number;
}

/** A job spec with every default applied and every path absolute: what the supervisor runs. */
export interface CompiledJobSpec {
  name: string;
  /** Pools in order of preference; empty means "any pool, in cluster order". */
  pools: string[];
  nodes: number;
  minNodes: number;
  procsPerNode: number;
  /** Queue order (higher first); absent in specs stored before it existed, which means 0. */
  priority?: number;
  command: string[];
  env: Record<string, string>;
  workdir: string;
  steps: number | null;
  /**
   * `dir` is where this run writes its checkpoints. `perRun`: the spec named no folder, so the supervisor gives each
   * submission its own `<dir>/<job id>` (a new submission never resumes another run by accident). `resumeFrom`: another
   * run's checkpoint folder (or one `step-*` checkpoint) to start from when `dir` holds none (`run --resume-from`).
   * Both optional: specs stored before they existed mean a shared `dir` and no foreign resume point.
   */
  checkpoint: {
    dir: string;
    keep: number;
    perRun?: boolean;
    resumeFrom?: string | null;
    /** `checkpoint.watch`: files the script writes itself, relative to the workdir (absent: none). */
    watch?: { pattern: string; settleSeconds: number } | null;
  };
  progress: { regex: string | null };
  detection: {
    startupSeconds: number;
    hangMinSeconds: number;
    hangMultiple: number;
    stackDumpSeconds: number;
    /** gdb's backtraces of the hung culprit too (absent in specs stored before it existed: off). */
    nativeStacks?: boolean;
    nanIsFailure: boolean;
    /** Absent in specs stored before it existed: `slowdownDefaults` apply. */
    slowdown?: SlowdownPolicy;
  };
  recovery: {
    maxRestarts: number;
    restartWindowSeconds: number | null;
    crashLoopAttempts: number;
    poolFailures: { count: number; windowSeconds: number };
    backoffSeconds: number;
    maxBackoffSeconds: number;
    strikesBeforeCordon: number;
    graceSeconds: number;
  };
  /** Where the spec came from, for messages. */
  source: string;
  /**
   * What kind of workload: absent for a training job; a replica of a deployed service (src/supervisor/services.ts)
   * says here what differs from training: a readiness gate instead of step reports, restart "always" (an exit 0
   * restarts too), no gang (one rank), no crash-loop stop.
   */
  workload?: ReplicaWorkload;
}

/** One replica of a service, as a workload of the supervisor (src/supervisor/services.ts). */
export interface ReplicaWorkload {
  kind: "replica";
  service: string;
  /** `<pool>-<index>` within the service. */
  slot: string;
  engine: string;
  /** Address the model server listens on ({host} in its command). */
  host: string;
  /** Preferred port ({port}); another free one when it is taken. */
  port: number | null;
  readiness: { path: string; timeoutSeconds: number };
  restart: "always";
  /** The spec it was made from (services.ts replicaRevision): a redeploy that changes it rolls the replica. */
  revision?: string;
}

function validate<S extends z.ZodType>(
  schema: S,
  text: string,
  file: string,
): { data: z.output<S>; parsed: ParsedYaml } {
  return validateYaml(schema, text, file);
}

export function parseClusterSpec(text: string, file: string): ClusterSpec {
  const { data: spec, parsed } = validate(clusterSchema, text, file);
  const seen = new Map<string, number>();
  spec.pools.forEach((pool, i) => {
    const first = seen.get(pool.name);
    if (first !== undefined) {
      const range = (parsed.doc.getIn(["pools", i, "name"], true) as { range?: [number] } | undefined)?.range;
      const pos = parsed.lines.linePos(range?.[0] ?? 0);
      throw new SpecError([
        {
          file,
          path: `pools[${i}].name`,
          line: pos.line,
          column: pos.col,
          message: `duplicate pool name "${pool.name}" (also pools[${first}])`,
          fix: "give every pool a unique name",
        },
      ]);
    }
    seen.set(pool.name, i);
  });
  return spec;
}

export interface CompileJobOptions {
  /** The file the spec came from: relative paths resolve against its folder. */
  file: string;
  /** Cluster the job must fit; pool names are checked against it. */
  cluster: ClusterSpec;
  /** Check that the workdir is an existing folder (the server does, at submit: it launches there). */
  checkWorkdir?: boolean;
  /** Where checkpoints go when the spec names no folder: `<root>/<name>/<job id>`, one folder per run. */
  defaultCheckpointRoot: string;
  /** An absolute checkpoint folder of another run to resume from (`run --resume-from`), when this run has none. */
  resumeFrom?: string;
}

/** A workdir that is not an existing folder: a spec error at the `workdir` key (or the top, when it is defaulted). */
function checkWorkdir(workdir: string, parsed: ParsedYaml, file: string): void {
  let problem: string | null = null;
  try {
    if (!statSync(workdir).isDirectory()) problem = "is not a folder";
  } catch {
    problem = "does not exist";
  }
  if (problem === null) return;
  const node = parsed.doc.get("workdir", true) as { range?: [number] } | undefined;
  const pos = parsed.lines.linePos(node?.range?.[0] ?? 0);
  throw new SpecError([
    {
      file,
      path: "workdir",
      line: pos.line,
      column: pos.col,
      message: `${workdir} ${problem}${node ? "" : " (workdir defaults to the spec's folder)"}`,
      fix: "create the folder, or set workdir to an existing one (relative paths start at the spec's folder)",
    },
  ]);
}

/**
 * `checkpoint.watch` made relative to the workdir: an absolute pattern must lie inside it (a spec error otherwise).
 * (`settleSeconds` without `watch` is refused by the schema.)
 */
function compileWatch(
  pattern: string,
  settleSeconds: number,
  workdir: string,
  parsed: ParsedYaml,
  file: string,
): { pattern: string; settleSeconds: number } {
  if (!path.isAbsolute(pattern)) return { pattern, settleSeconds };
  const relative = path.relative(workdir, pattern);
  if (relative !== "" && !relative.startsWith("..") && !path.isAbsolute(relative)) {
    return { pattern: relative.split(path.sep).join("/"), settleSeconds };
  }
  const node = parsed.doc.getIn(["checkpoint", "watch"], true) as { range?: [number] } | undefined;
  const pos = parsed.lines.linePos(node?.range?.[0] ?? 0);
  throw new SpecError([
    {
      file,
      path: "checkpoint.watch",
      line: pos.line,
      column: pos.col,
      message: `${pattern} is outside the job's workdir ${workdir}`,
      fix: "give a path relative to the workdir (e.g. snapshot.pt or ckpt/*.pt), or set workdir to the folder above it",
    },
  ]);
}

export function compileJobSpec(text: string, opts: CompileJobOptions): CompiledJobSpec {
  const { data: spec, parsed } = validate(jobSchema, text, opts.file);
  const baseDir = path.dirname(path.resolve(opts.file));
  const known = opts.cluster.pools.map((p) => p.name);
  spec.pools?.forEach((pool, i) => {
    if (!known.includes(pool)) {
      const range = (parsed.doc.getIn(["pools", i], true) as { range?: [number] } | undefined)?.range;
      const pos = parsed.lines.linePos(range?.[0] ?? 0);
      throw new SpecError([
        {
          file: opts.file,
          path: `pools[${i}]`,
          line: pos.line,
          column: pos.col,
          message: `unknown pool "${pool}"`,
          fix: `use one of the cluster's pools (${known.join(", ")}), or load a cluster that has it: switchyard up --cluster <file>`,
        },
      ]);
    }
  });
  const workdir = path.resolve(baseDir, spec.workdir);
  if (opts.checkWorkdir) checkWorkdir(workdir, parsed, opts.file);
  return {
    name: spec.name,
    pools: spec.pools ?? [],
    nodes: spec.nodes,
    minNodes: Math.min(spec.minNodes ?? spec.nodes, spec.nodes),
    procsPerNode: spec.procsPerNode,
    ...(spec.priority !== 0 ? { priority: spec.priority } : {}),
    command: spec.command,
    env: spec.env,
    workdir,
    steps: spec.steps ?? null,
    checkpoint: {
      dir: spec.checkpoint.dir
        ? path.resolve(workdir, spec.checkpoint.dir)
        : path.join(opts.defaultCheckpointRoot, spec.name),
      keep: spec.checkpoint.keep,
      perRun: !spec.checkpoint.dir,
      resumeFrom: opts.resumeFrom ? path.resolve(opts.resumeFrom) : null,
      ...(spec.checkpoint.watch !== undefined
        ? { watch: compileWatch(spec.checkpoint.watch, spec.checkpoint.settleSeconds ?? 2, workdir, parsed, opts.file) }
        : {}),
    },
    progress: { regex: spec.progress.regex ?? null },
    recovery: { ...spec.recovery, restartWindowSeconds: spec.recovery.restartWindowSeconds ?? null },
    detection: spec.detection,
    source: path.resolve(opts.file),
  };
}

/** The built-in cluster when none is configured: one local CPU pool sized to this host. */
export function defaultClusterSpec(cpus: number): ClusterSpec {
  return {
    pools: [
      {
        name: "local",
        executor: "local",
        accelerator: { vendor: "cpu" },
        nodes: 2,
        devicesPerNode: Math.max(1, Math.min(8, cpus)),
      },
    ],
  };
}
