import path from "node:path";
import { z } from "zod";
import { causePatternListSchema, type CausePattern } from "./classify.js";
import { parseYaml, SpecError, zodIssuesToSpecIssues, type KnownKeys } from "./spec-errors.js";

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

const faultModelSchema = z.strictObject({
  /** Mean seconds between injected device failures (a rank is killed, as a chip would take it down). */
  deviceMtbfSeconds: z.number().positive().optional(),
  /** Chance per minute that a rank hangs (SIGSTOP), as a collective would with a dead link. */
  hangProbabilityPerMinute: z.number().min(0).max(1).optional(),
  seed: z.number().int().optional(),
});

const poolSchema = z.strictObject({
  name,
  executor: z.enum(["local"]).default("local"),
  accelerator: z
    .strictObject({
      vendor: z.enum(["nvidia", "ascend", "cpu"]),
      model: z.string().optional(),
    })
    .default({ vendor: "cpu" }),
  nodes: z.number().int().min(1).max(64),
  devicesPerNode: z.number().int().min(1).max(64).default(1),
  faultModel: faultModelSchema.optional(),
});

export const clusterSchema = z.strictObject({
  pools: z.array(poolSchema).min(1),
  /** Failure patterns tried before the built-in table (docs/failure-causes.md). */
  causePatterns: causePatternListSchema.default([]),
});

const detectionSchema = z.strictObject({
  /** Allowed time from launch to the first step report. */
  startupSeconds: z.number().positive().default(300),
  /** A gang silent for longer than max(hangMinSeconds, hangMultiple x p95 step time) is hung. */
  hangMinSeconds: z.number().positive().default(10),
  hangMultiple: z.number().min(1).default(3),
  /** How long hung ranks get to write their stacks (SIGUSR1) before the gang is stopped. */
  stackDumpSeconds: z.number().min(0).default(2),
  /** Treat a NaN or infinite loss as an incident and roll back to the last checkpoint. */
  nanIsFailure: z.boolean().default(true),
});

const recoverySchema = z.strictObject({
  maxRestarts: z.number().int().min(0).default(10),
  /** Count only the restarts of the last N seconds against maxRestarts: a long run on a big fleet fails often. */
  restartWindowSeconds: z.number().positive().optional(),
  /** Software crashes with the same signature at the same step on different nodes before the job stops. */
  crashLoopAttempts: z.number().int().min(2).default(2),
  /** Infrastructure failures on one pool within a window after which the job moves to the next pool. */
  poolFailures: z
    .strictObject({ count: z.number().int().min(1).default(3), windowSeconds: z.number().positive().default(1800) })
    .default({ count: 3, windowSeconds: 1800 }),
  backoffSeconds: z.number().min(0).default(1),
  maxBackoffSeconds: z.number().min(0).default(60),
  strikesBeforeCordon: z.number().int().min(1).default(2),
  graceSeconds: z.number().min(0).default(5),
});

const checkpointSchema = z.strictObject({
  dir: z.string().min(1).optional(),
  keep: z.number().int().min(1).default(3),
});

const progressSchema = z.strictObject({
  regex: z
    .string()
    .refine(isValidProgressRegex, {
      message:
        "is not a valid regular expression with a named group 'step' | fix: e.g. 'step (?<step>\\d+) loss (?<loss>\\S+)'",
    })
    .optional(),
});

function isValidProgressRegex(source: string): boolean {
  try {
    return new RegExp(source).source.includes("?<step>");
  } catch {
    return false;
  }
}

export const jobSchema = z.strictObject({
  name,
  pools: z.array(name).min(1).optional(),
  nodes: z.number().int().min(1).default(1),
  /** Shrink to as few as this many nodes rather than wait for capacity (elastic jobs). */
  minNodes: z.number().int().min(1).optional(),
  procsPerNode: z.number().int().min(1).default(1),
  command: z.array(z.string().min(1)).min(1),
  env: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()]).transform(String)).default({}),
  workdir: z.string().default("."),
  steps: z.number().int().min(1).optional(),
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
    nanIsFailure: true,
  }),
});

export type ClusterSpecInput = z.input<typeof clusterSchema>;
export type JobSpecInput = z.input<typeof jobSchema>;
export type PoolSpec = z.output<typeof poolSchema>;

export interface ClusterSpec {
  pools: PoolSpec[];
  causePatterns?: CausePattern[];
}

/** A job spec with every default applied and every path absolute: what the supervisor runs. */
export interface CompiledJobSpec {
  name: string;
  /** Pools in order of preference; empty means "any pool, in cluster order". */
  pools: string[];
  nodes: number;
  minNodes: number;
  procsPerNode: number;
  command: string[];
  env: Record<string, string>;
  workdir: string;
  steps: number | null;
  checkpoint: { dir: string; keep: number };
  progress: { regex: string | null };
  detection: {
    startupSeconds: number;
    hangMinSeconds: number;
    hangMultiple: number;
    stackDumpSeconds: number;
    nanIsFailure: boolean;
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
}

function knownKeysFor(root: z.ZodType): KnownKeys {
  return (p) => {
    let schema: z.ZodType | undefined = root;
    for (const part of p) {
      schema = unwrap(schema);
      if (schema instanceof z.ZodObject) schema = (schema.shape as Record<string, z.ZodType>)[String(part)];
      else if (schema instanceof z.ZodArray) schema = schema.element as z.ZodType;
      else if (schema instanceof z.ZodRecord) schema = schema.valueType as z.ZodType;
      else return [];
    }
    schema = unwrap(schema);
    return schema instanceof z.ZodObject ? Object.keys(schema.shape) : [];
  };
}

function unwrap(schema: z.ZodType | undefined): z.ZodType | undefined {
  let s = schema;
  while (s instanceof z.ZodDefault || s instanceof z.ZodOptional) s = s.unwrap() as z.ZodType;
  return s;
}

function validate<S extends z.ZodType>(schema: S, text: string, file: string): z.output<S> {
  const parsed = parseYaml(text, file);
  if (parsed.value === null || parsed.value === undefined) {
    throw new SpecError([
      { file, path: "", line: 1, column: 1, message: "the file is empty", fix: "write a YAML mapping" },
    ]);
  }
  const result = schema.safeParse(parsed.value, { reportInput: true });
  if (!result.success) {
    throw new SpecError(zodIssuesToSpecIssues(result.error.issues, parsed, file, knownKeysFor(schema)));
  }
  return result.data;
}

export function parseClusterSpec(text: string, file: string): ClusterSpec {
  const spec = validate(clusterSchema, text, file);
  const parsed = parseYaml(text, file);
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
  /** Where checkpoints go when the spec names no folder. */
  defaultCheckpointRoot: string;
}

export function compileJobSpec(text: string, opts: CompileJobOptions): CompiledJobSpec {
  const spec = validate(jobSchema, text, opts.file);
  const parsed = parseYaml(text, opts.file);
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
  return {
    name: spec.name,
    pools: spec.pools ?? [],
    nodes: spec.nodes,
    minNodes: Math.min(spec.minNodes ?? spec.nodes, spec.nodes),
    procsPerNode: spec.procsPerNode,
    command: spec.command,
    env: spec.env,
    workdir,
    steps: spec.steps ?? null,
    checkpoint: {
      dir: spec.checkpoint.dir
        ? path.resolve(workdir, spec.checkpoint.dir)
        : path.join(opts.defaultCheckpointRoot, spec.name),
      keep: spec.checkpoint.keep,
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
