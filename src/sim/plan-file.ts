/**
 * Plan files (YAML): schema, defaults and error messages that name the file, the YAML path, the line and the fix.
 * See docs/planner.md for the reference.
 */
import { SpecError, validateYaml, type SpecIssue } from "../core/spec-errors.js";
import { z } from "zod";
import { BANDWIDTH_HINT, BYTES_HINT, DURATION_HINT, parseBandwidth, parseBytes, parseDuration } from "./duration.js";

const duration = z.unknown().transform((value, ctx) => {
  const seconds = parseDuration(value);
  if (seconds === undefined) {
    ctx.addIssue({ code: "custom", message: `not a duration: ${JSON.stringify(value)}. Fix: use ${DURATION_HINT}` });
    return z.NEVER;
  }
  return seconds;
});

const positiveDuration = duration.refine((s) => s > 0, {
  message: `must be longer than zero. Fix: use ${DURATION_HINT}`,
});

/** A duration with spread: drawn anew each time it happens. */
export interface Spread {
  /** Mean in seconds. */
  mean: number;
  /** Coefficient of variation (standard deviation / mean) of a lognormal; 0 = a constant. */
  cv: number;
}

const SPREAD_HINT = `${DURATION_HINT}, or { mean: <duration>, cv: <spread, e.g. 0.5> } for a lognormal spread`;

/** A constant duration, or { mean, cv }: a lognormal with that mean and coefficient of variation. */
const spread = z.unknown().transform((value, ctx): Spread => {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    const entries = value as Record<string, unknown>;
    const unknown = Object.keys(entries).filter((k) => k !== "mean" && k !== "cv");
    const mean = parseDuration(entries.mean);
    const cv = entries.cv ?? 0;
    if (unknown.length > 0 || mean === undefined || typeof cv !== "number" || !(cv >= 0 && cv <= 10)) {
      ctx.addIssue({
        code: "custom",
        message: `not a duration with spread: ${JSON.stringify(value)}${unknown.length > 0 ? ` (unknown key ${unknown.join(", ")})` : ""}${typeof cv === "number" && !(cv >= 0 && cv <= 10) ? " (cv must be 0..10)" : ""}. Fix: use ${SPREAD_HINT}`,
      });
      return z.NEVER;
    }
    return { mean, cv };
  }
  const seconds = parseDuration(value);
  if (seconds === undefined) {
    ctx.addIssue({ code: "custom", message: `not a duration: ${JSON.stringify(value)}. Fix: use ${SPREAD_HINT}` });
    return z.NEVER;
  }
  return { mean: seconds, cv: 0 };
});

const bytes = z.unknown().transform((value, ctx) => {
  const n = parseBytes(value);
  if (n === undefined || n <= 0) {
    ctx.addIssue({ code: "custom", message: `not a size: ${JSON.stringify(value)}. Fix: use ${BYTES_HINT}` });
    return z.NEVER;
  }
  return n;
});

const bandwidth = z.unknown().transform((value, ctx) => {
  const n = parseBandwidth(value);
  if (n === undefined || n <= 0) {
    ctx.addIssue({ code: "custom", message: `not a bandwidth: ${JSON.stringify(value)}. Fix: use ${BANDWIDTH_HINT}` });
    return z.NEVER;
  }
  return n;
});

const handledBy = z.enum(["auto", "manual"]).optional().default("auto");

/** Failure or straggler rate: exactly one of per_device_day and per_node_day (events per device or node per day). */
const rateFields = {
  per_device_day: z.number().nonnegative().optional(),
  per_node_day: z.number().nonnegative().optional(),
};

function requireOneRate(
  value: { per_device_day?: number | undefined; per_node_day?: number | undefined },
  ctx: z.RefinementCtx,
): void {
  const given = (value.per_device_day !== undefined ? 1 : 0) + (value.per_node_day !== undefined ? 1 : 0);
  if (given !== 1) {
    ctx.addIssue({
      code: "custom",
      message:
        given === 0
          ? "no rate given. Fix: add per_device_day (events per device per day) or per_node_day (events per node per day)"
          : "both per_device_day and per_node_day given. Fix: keep one of them",
    });
  }
}

const failureCause = z
  .strictObject({
    cause: z.string().min(1),
    ...rateFields,
    /** Events per failure domain (of `hosts` hosts) per day. */
    per_domain_day: z.number().nonnegative().optional(),
    /** Events per day for the whole fleet, whatever its size. */
    per_day: z.number().nonnegative().optional(),
    /** Hosts one event takes down at once: 1 (a host), k (a switch, rack or power domain) or "all" (the cluster). */
    hosts: z
      .union([z.number().int().positive(), z.literal("all")])
      .optional()
      .default(1),
    /** Time from the failure until the supervisor has noticed it and stopped the gang. */
    detect: spread.optional().default({ mean: 0, cv: 0 }),
    /** Hardware causes cost the job a node (cordoned, swapped for a spare, repaired); software causes do not. */
    replaces_node: z.boolean().optional().default(true),
    /** Until the lost hosts are back (default: the fleet's node_replace_time); for hosts: all, the outage. */
    repair: spread.optional(),
    /** auto: the supervisor restarts the job; manual: a person must act first (recovery.manual). */
    handled_by: handledBy,
  })
  .superRefine((value, ctx) => {
    const given = [value.per_device_day, value.per_node_day, value.per_domain_day, value.per_day].filter(
      (r) => r !== undefined,
    ).length;
    const perHost = value.per_device_day !== undefined || value.per_node_day !== undefined;
    if (given !== 1) {
      ctx.addIssue({
        code: "custom",
        message:
          given === 0
            ? "no rate given. Fix: add per_device_day or per_node_day (events per device or node per day), per_domain_day (per failure domain of `hosts` hosts) or per_day (for the whole fleet)"
            : "more than one rate given. Fix: keep one of per_device_day, per_node_day, per_domain_day, per_day",
      });
    } else if (value.hosts !== 1 && perHost) {
      ctx.addIssue({
        code: "custom",
        path: ["hosts"],
        message: `an event that takes ${value.hosts === "all" ? "all hosts" : `${value.hosts} hosts`} needs a rate per domain or per fleet. Fix: use per_domain_day (events per domain of ${value.hosts} hosts per day) or per_day`,
      });
    } else if (value.per_domain_day !== undefined && typeof value.hosts !== "number") {
      ctx.addIssue({
        code: "custom",
        path: ["per_domain_day"],
        message:
          'per_domain_day needs the domain size. Fix: set hosts to the number of hosts one event takes (hosts: "all" takes per_day)',
      });
    }
  });

const stragglers = z
  .strictObject({
    ...rateFields,
    /** Fraction by which a degraded device or link slows the whole synchronous job: 0.1 = 10% slower. */
    slowdown: z.number().positive(),
    detect: duration,
  })
  .superRefine(requireOneRate);

/** Hosts (re)placed into the job fail more often for a while (infant mortality). */
const burnIn = z.strictObject({
  period: positiveDuration,
  /** Failure rate of a fresh host, as a multiple of the per-node rate of the causes that replace a node. */
  multiplier: z.number().min(1),
});

/** Some repaired hosts come back with the fault not fixed, fail again at a higher rate and are then retired. */
const repeatOffenders = z.strictObject({
  /** Share of hosts back from repair whose fault was not fixed. */
  share: z.number().min(0).max(1),
  multiplier: z.number().min(1),
});

const collapses = z
  .strictObject({
    per_day: z.number().positive(),
    duration: spread,
    /** Step time multiplier during an episode: 3 = three times slower. */
    slowdown: z.number().gt(1),
  })
  .superRefine((value, ctx) => {
    if (value.duration.mean <= 0) {
      ctx.addIssue({
        code: "custom",
        path: ["duration"],
        message: `must be longer than zero. Fix: use ${SPREAD_HINT}`,
      });
    }
  });

/** Degraded interconnect: a steady share of slow links, and episodes of collapse under load. */
const network = z.strictObject({
  /** Share of links running degraded (0..1). */
  degraded_share: z.number().min(0).max(1).optional().default(0),
  /** Step time grows by sensitivity x degraded_share: 1 = 10% degraded links make steps 10% slower. */
  sensitivity: z.number().min(0).optional().default(1),
  collapses: collapses.optional(),
});

const fleet = z
  .strictObject({
    device: z.string().min(1),
    devices: z.number().int().positive(),
    devices_per_node: z.number().int().positive(),
    spare_nodes: z.number().int().nonnegative().optional().default(0),
    node_replace_time: positiveDuration.optional().default(86_400),
    failures: z.array(failureCause).optional().default([]),
    stragglers: stragglers.optional(),
    burn_in: burnIn.optional(),
    repeat_offenders: repeatOffenders.optional(),
    network: network.optional(),
  })
  .superRefine((value, ctx) => {
    if (value.devices % value.devices_per_node !== 0) {
      ctx.addIssue({
        code: "custom",
        path: ["devices"],
        message: `${value.devices} devices do not fill whole nodes of ${value.devices_per_node}. Fix: use a multiple of devices_per_node`,
      });
    }
    const nodes = Math.floor(value.devices / value.devices_per_node);
    value.failures.forEach((f, i) => {
      if (typeof f.hosts === "number" && f.hosts > nodes) {
        ctx.addIssue({
          code: "custom",
          path: ["failures", i, "hosts"],
          message: `${f.hosts} hosts per event, but the fleet has ${nodes} nodes. Fix: use at most ${nodes}, or "all" for whole-cluster events`,
        });
      }
    });
  });

/** Loss spikes that need a rollback further than the last checkpoint, and a skip of the data that caused them. */
const lossSpikes = z.strictObject({
  cause: z.string().min(1).optional().default("loss-spike"),
  /** Spikes per day of training (compute time), whatever the fleet size. */
  per_day: z.number().positive(),
  /** How many persistent checkpoints back the job restarts from: 1 = the last one, 2 = the one before, ... */
  rollback: z.number().int().min(1).max(1000).optional().default(2),
  /** Spike -> diagnosed and the data skip decided (the job is stopped meanwhile). */
  detect: spread.optional().default({ mean: 0, cv: 0 }),
  handled_by: handledBy,
});

const workload = z
  .strictObject({
    steps: z.number().positive().optional(),
    step_time: positiveDuration.optional(),
    tokens: z.number().positive().optional(),
    tokens_per_device_second: z.number().positive().optional(),
    /** Simulate a fixed wall-clock window (e.g. a published snapshot) instead of a run to completion. */
    window: positiveDuration.optional(),
    loss_spikes: lossSpikes.optional(),
  })
  .superRefine((value, ctx) => {
    const fix =
      "Fix: give steps and step_time, or tokens and tokens_per_device_second, or window (a fixed wall-clock span) with at most a step_time or tokens_per_device_second";
    const hasRate = value.step_time !== undefined || value.tokens_per_device_second !== undefined;
    if (value.step_time !== undefined && value.tokens_per_device_second !== undefined) {
      ctx.addIssue({ code: "custom", message: `both step_time and tokens_per_device_second given. ${fix}` });
    } else if (value.window !== undefined) {
      if (value.steps !== undefined || value.tokens !== undefined) {
        ctx.addIssue({
          code: "custom",
          message: `window simulates a fixed span, so steps or tokens do not apply. ${fix}`,
        });
      }
    } else if (value.steps !== undefined && value.tokens !== undefined) {
      ctx.addIssue({ code: "custom", message: `both steps and tokens given. ${fix}` });
    } else if (value.steps === undefined && value.tokens === undefined) {
      ctx.addIssue({ code: "custom", message: `no amount of work given. ${fix}` });
    } else if (!hasRate || (value.steps !== undefined) !== (value.step_time !== undefined)) {
      ctx.addIssue({
        code: "custom",
        message: `${value.steps !== undefined ? "steps need step_time" : "tokens need tokens_per_device_second"}. ${fix}`,
      });
    }
  });

/** Where persistent checkpoints go: save and load times follow from the size and the bandwidth. */
const storage = z.strictObject({
  /** Aggregate bandwidth of the storage system for writes and for reads. */
  write_bandwidth: bandwidth,
  read_bandwidth: bandwidth,
  /** Each host's own link to the storage; with hosts_at_once it caps the aggregate. */
  per_host_bandwidth: bandwidth.optional(),
  /** Hosts that write (and read) their shards at once; default every node of the job. */
  hosts_at_once: z.number().int().positive().optional(),
  /** Coefficient of variation of each save and load time (lognormal), 0 = constant. */
  spread: z.number().min(0).max(10).optional().default(0),
});

/** A fast in-memory (optionally peer-replicated) snapshot tier in front of the persistent checkpoint. */
const memoryTier = z.strictObject({
  /** Compute time between snapshots, or "optimal" (Daly's interval at the rate of failures it survives). */
  interval: z.union([z.literal("optimal"), positiveDuration]),
  save: spread,
  load: spread.optional().default({ mean: 0, cv: 0 }),
  /** software: survives failures that keep the hosts (crashes, hangs); host: also the loss of one host (a copy on a peer). */
  survives: z.enum(["software", "host"]).optional().default("software"),
});

const checkpoint = z
  .strictObject({
    /** Compute time between persistent checkpoints, or "optimal" for Daly's interval at the fleet's failure rate. */
    interval: z.union([z.literal("optimal"), positiveDuration]),
    save: spread.optional(),
    load: spread.optional(),
    /** Bytes of one checkpoint (all shards); with storage, save and load follow from it. */
    size: bytes.optional(),
    storage: storage.optional(),
    memory: memoryTier.optional(),
  })
  .superRefine((value, ctx) => {
    const sized = value.size !== undefined || value.storage !== undefined;
    if (sized && (value.size === undefined || value.storage === undefined)) {
      ctx.addIssue({
        code: "custom",
        path: [value.size === undefined ? "size" : "storage"],
        message: `${value.size === undefined ? "storage needs size" : "size needs storage"}. Fix: give both size (bytes of a checkpoint) and storage (its bandwidths), or save and load times instead`,
      });
    } else if (sized && (value.save !== undefined || value.load !== undefined)) {
      ctx.addIssue({
        code: "custom",
        path: [value.save !== undefined ? "save" : "load"],
        message: "save and load follow from size and storage. Fix: remove save and load, or size and storage",
      });
    } else if (!sized && value.save === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["save"],
        message: "required key is missing. Fix: add save (the blocking part of a save), or size and storage",
      });
    }
  });

const fallback = z.strictObject({
  scenario: z.string().min(1),
  after_failures: z.number().int().positive(),
  within: positiveDuration,
  migrate: duration.optional().default(0),
});

/** Data-parallel replica groups: losing a host drops its replica; the others train on while it is replaced. */
const partial = z
  .strictObject({
    replicas: z.number().int().min(2),
    /** Below this many replicas the job stops and restarts whole. Default: half the replicas. */
    min_replicas: z.number().int().min(1).optional(),
    /** A replacement host loading the state from its peers and joining again. */
    rejoin: spread.optional().default({ mean: 0, cv: 0 }),
  })
  .superRefine((value, ctx) => {
    if (value.min_replicas !== undefined && value.min_replicas >= value.replicas) {
      ctx.addIssue({
        code: "custom",
        path: ["min_replicas"],
        message: `must be fewer than replicas (${value.replicas}). Fix: lower min_replicas`,
      });
    }
  });

/** Who acts on a failure marked handled_by: manual, and how fast, in and out of working hours. */
const manual = z
  .strictObject({
    response: spread.optional().default({ mean: 1200, cv: 0 }),
    off_hours_response: spread.optional().default({ mean: 4 * 3600, cv: 0 }),
    /** Working hours [from, to) in hours of the day, Monday to the last work day. */
    day_start: z.number().min(0).max(24).optional().default(9),
    day_end: z.number().min(0).max(24).optional().default(18),
    work_days: z.number().int().min(0).max(7).optional().default(5),
    /** The run starts this many hours into Monday (0 = Monday 00:00). */
    start_hour: z.number().min(0).max(168).optional().default(0),
  })
  .superRefine((value, ctx) => {
    if (value.day_end <= value.day_start) {
      ctx.addIssue({
        code: "custom",
        path: ["day_end"],
        message: `working hours end (${value.day_end}) before they start (${value.day_start}). Fix: use day_start < day_end`,
      });
    }
  });

const recovery = z.strictObject({
  restart: spread,
  no_spare: z.enum(["wait", "shrink"]).optional().default("wait"),
  /** Shrinking stops at this fraction of the fleet's nodes; below it the job waits for repaired nodes. */
  shrink_floor: z.number().gt(0).lte(1).optional().default(0.75),
  fallback: fallback.optional(),
  partial: partial.optional(),
  manual: manual.optional(),
});

const scenario = z.strictObject({
  name: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "not a valid scenario name (it is used on the command line and in charts)"),
  description: z.string().optional(),
  fleet,
  workload,
  checkpoint,
  recovery,
  deadline: positiveDuration.optional(),
});

export const planSchema = z
  .strictObject({
    version: z.literal(1).optional().default(1),
    scenarios: z.array(scenario).min(1),
  })
  .superRefine((plan, ctx) => {
    const names = new Map<string, number>();
    plan.scenarios.forEach((s, i) => {
      const earlier = names.get(s.name);
      if (earlier !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["scenarios", i, "name"],
          message: `scenario name "${s.name}" is already used by scenarios[${earlier}]. Fix: give each scenario its own name`,
        });
      }
      names.set(s.name, i);
    });
    plan.scenarios.forEach((s, i) => {
      const target = s.recovery.fallback?.scenario;
      if (target === undefined) return;
      const path = ["scenarios", i, "recovery", "fallback", "scenario"];
      const targetIndex = names.get(target);
      const other = targetIndex === undefined ? undefined : plan.scenarios[targetIndex];
      if (other === undefined || target === s.name) {
        const known = [...names.keys()].filter((n) => n !== s.name).join(", ") || "(none)";
        ctx.addIssue({
          code: "custom",
          path,
          message: `fallback scenario "${target}" ${target === s.name ? "is this scenario itself" : "does not exist"}. Fix: name another scenario of this file: ${known}`,
        });
      } else if (workUnit(s) !== workUnit(other)) {
        ctx.addIssue({
          code: "custom",
          path,
          message: `fallback scenario "${target}" measures work in ${workUnit(other)}, this one in ${workUnit(s)}. Fix: describe both workloads the same way`,
        });
      }
    });
    plan.scenarios.forEach((s, i) => {
      const nodes = Math.floor(s.fleet.devices / s.fleet.devices_per_node);
      const replicas = s.recovery.partial?.replicas;
      if (replicas !== undefined && nodes % replicas !== 0) {
        ctx.addIssue({
          code: "custom",
          path: ["scenarios", i, "recovery", "partial", "replicas"],
          message: `${nodes} nodes do not split into ${replicas} equal replica groups. Fix: use a divisor of ${nodes}`,
        });
      }
      const memory = s.checkpoint.memory;
      if (memory !== undefined && s.checkpoint.interval !== "optimal" && memory.interval !== "optimal") {
        if (memory.interval > s.checkpoint.interval) {
          ctx.addIssue({
            code: "custom",
            path: ["scenarios", i, "checkpoint", "memory", "interval"],
            message: `in-memory snapshots every ${memory.interval} s are rarer than persistent checkpoints every ${s.checkpoint.interval} s. Fix: snapshot to memory at least as often`,
          });
        }
      }
      if (s.deadline !== undefined && s.workload.window !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["scenarios", i, "deadline"],
          message:
            "a deadline needs a run to completion, but workload.window simulates a fixed span. Fix: remove one of them",
        });
      }
    });
  });

/** Steps unless the workload is given in tokens; a window without a rate counts as steps of 1 s. */
export function workUnit(s: {
  workload: { tokens?: number | undefined; tokens_per_device_second?: number | undefined };
}): "steps" | "tokens" {
  return s.workload.tokens !== undefined || s.workload.tokens_per_device_second !== undefined ? "tokens" : "steps";
}

export type Plan = z.output<typeof planSchema>;
export type PlanScenario = Plan["scenarios"][number];

/** One problem in a plan file: `file:line:col: path: message (fix: ...)`, as in every config file (spec-errors.ts). */
export type PlanIssue = SpecIssue;

/** A plan file that failed to read, parse or validate: a SpecError, so the CLI and --json treat it like any other. */
export class PlanFileError extends SpecError {
  constructor(issues: SpecIssue[], omitted = 0) {
    super(issues, omitted);
    this.name = "PlanFileError";
  }
}

/** Parses and validates plan text; throws PlanFileError listing every problem found. */
export function parsePlan(text: string, file: string): Plan {
  try {
    return validateYaml(planSchema, text, file, {
      merge: true,
      // An empty file is a plan without scenarios: the error says what to add.
      prepare: (value) => withoutExtensionKeys(value ?? {}),
      describe: describeIssue,
    }).data;
  } catch (err) {
    if (err instanceof SpecError && !(err instanceof PlanFileError)) throw new PlanFileError(err.issues, err.omitted);
    throw err;
  }
}

/** Top-level keys starting with "x-" hold YAML anchors shared by scenarios (as in Compose files); they are not plan keys. */
function withoutExtensionKeys(data: unknown): unknown {
  if (data === null || typeof data !== "object" || Array.isArray(data)) return data;
  return Object.fromEntries(Object.entries(data).filter(([key]) => !key.startsWith("x-")));
}

/** The plan's own wording where the generic one says too little: its unions and its names. */
function describeIssue(issue: z.core.$ZodIssue): { message: string; fix: string } | undefined {
  const got = JSON.stringify(issue.input) ?? String(issue.input);
  if (issue.code === "invalid_union") {
    if (issue.path.at(-1) === "hosts") {
      return { message: `${got} is not valid here`, fix: 'use a whole number of hosts (1 or more) or "all"' };
    }
    return { message: `${got} is not valid here`, fix: `use "optimal" or ${DURATION_HINT}` };
  }
  if (issue.code === "invalid_format") {
    return { message: issue.message, fix: "use letters, digits, '.', '_' and '-' only" };
  }
  return undefined;
}
