/**
 * Plan files (YAML): schema, defaults and error messages that name the file, the YAML path, the line and the fix.
 * See docs/planner.md for the reference.
 */
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode } from "yaml";
import { z } from "zod";
import { DURATION_HINT, parseDuration } from "./duration.js";

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
    /** Time from the failure until the supervisor has noticed it and stopped the gang. */
    detect: duration.optional().default(0),
    /** Hardware causes cost the job a node (cordoned, swapped for a spare, repaired); software causes do not. */
    replaces_node: z.boolean().optional().default(true),
  })
  .superRefine(requireOneRate);

const stragglers = z
  .strictObject({
    ...rateFields,
    /** Fraction by which a degraded device or link slows the whole synchronous job: 0.1 = 10% slower. */
    slowdown: z.number().positive(),
    detect: duration,
  })
  .superRefine(requireOneRate);

const fleet = z
  .strictObject({
    device: z.string().min(1),
    devices: z.number().int().positive(),
    devices_per_node: z.number().int().positive(),
    spare_nodes: z.number().int().nonnegative().optional().default(0),
    node_replace_time: positiveDuration.optional().default(86_400),
    failures: z.array(failureCause).optional().default([]),
    stragglers: stragglers.optional(),
  })
  .superRefine((value, ctx) => {
    if (value.devices % value.devices_per_node !== 0) {
      ctx.addIssue({
        code: "custom",
        path: ["devices"],
        message: `${value.devices} devices do not fill whole nodes of ${value.devices_per_node}. Fix: use a multiple of devices_per_node`,
      });
    }
  });

const workload = z
  .strictObject({
    steps: z.number().positive().optional(),
    step_time: positiveDuration.optional(),
    tokens: z.number().positive().optional(),
    tokens_per_device_second: z.number().positive().optional(),
    /** Simulate a fixed wall-clock window (e.g. a published snapshot) instead of a run to completion. */
    window: positiveDuration.optional(),
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

const checkpoint = z.strictObject({
  /** Compute time between checkpoints, or "optimal" for Daly's interval at the fleet's failure rate. */
  interval: z.union([z.literal("optimal"), positiveDuration]),
  save: duration,
  load: duration.optional().default(0),
});

const fallback = z.strictObject({
  scenario: z.string().min(1),
  after_failures: z.number().int().positive(),
  within: positiveDuration,
  migrate: duration.optional().default(0),
});

const recovery = z.strictObject({
  restart: duration,
  no_spare: z.enum(["wait", "shrink"]).optional().default("wait"),
  /** Shrinking stops at this fraction of the fleet's nodes; below it the job waits for repaired nodes. */
  shrink_floor: z.number().gt(0).lte(1).optional().default(0.75),
  fallback: fallback.optional(),
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

/** One problem in a plan file, located in the file. */
export interface PlanIssue {
  file: string;
  line: number | undefined;
  /** YAML path such as scenarios[0].fleet.devices ("" for the document). */
  yamlPath: string;
  message: string;
}

export class PlanFileError extends Error {
  constructor(readonly issues: PlanIssue[]) {
    super(issues.map(formatIssue).join("\n"));
    this.name = "PlanFileError";
  }
}

export function formatIssue(issue: PlanIssue): string {
  const where = issue.line === undefined ? issue.file : `${issue.file}:${issue.line}`;
  return `${where}: ${issue.yamlPath === "" ? "" : `${issue.yamlPath}: `}${issue.message}`;
}

/** Parses and validates plan text; throws PlanFileError listing every problem found. */
export function parsePlan(text: string, file: string): Plan {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, merge: true, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new PlanFileError(
      doc.errors.map((err) => ({
        file,
        line: lineCounter.linePos(err.pos[0]).line,
        yamlPath: "",
        message: `YAML syntax error: ${err.message.split("\n")[0] ?? err.code}. Fix: correct the YAML at this line`,
      })),
    );
  }
  const data: unknown = withoutExtensionKeys(doc.toJS({ maxAliasCount: 1000 }));
  const result = planSchema.safeParse(data ?? {});
  if (result.success) return result.data;

  const issues = result.error.issues.flatMap((issue): PlanIssue[] => {
    const path = issue.path.filter((p): p is string | number => typeof p !== "symbol");
    if (issue.code === "unrecognized_keys") {
      return issue.keys.map((key) => ({
        file,
        line: lineOf(doc.contents, [...path, key], lineCounter, true),
        yamlPath: formatPath([...path, key]),
        message: `unknown key "${key}". Fix: ${suggestKey(key, data, path)}`,
      }));
    }
    return [
      {
        file,
        line: lineOf(doc.contents, path, lineCounter, false),
        yamlPath: formatPath(path),
        message: describeIssue(issue, data, path),
      },
    ];
  });
  throw new PlanFileError(issues);
}

/** Top-level keys starting with "x-" hold YAML anchors shared by scenarios (as in Compose files); they are not plan keys. */
function withoutExtensionKeys(data: unknown): unknown {
  if (data === null || typeof data !== "object" || Array.isArray(data)) return data;
  return Object.fromEntries(Object.entries(data).filter(([key]) => !key.startsWith("x-")));
}

function describeIssue(issue: z.core.$ZodIssue, data: unknown, path: (string | number)[]): string {
  if (issue.code === "invalid_type") {
    const value = valueAt(data, path);
    if (value === undefined)
      return `required key is missing. Fix: add ${String(path.at(-1) ?? "it")} (${issue.expected})`;
    return `expected ${issue.expected}, got ${describeValue(value)}. Fix: write a ${issue.expected} here`;
  }
  if (issue.code === "invalid_value") {
    const options = issue.values.map((v) => JSON.stringify(v)).join(", ");
    return `${JSON.stringify(valueAt(data, path))} is not allowed. Fix: use one of ${options}`;
  }
  if (issue.code === "invalid_union") {
    return `${JSON.stringify(valueAt(data, path))} is not valid here. Fix: use "optimal" or ${DURATION_HINT}`;
  }
  if (issue.code === "too_small" || issue.code === "too_big") {
    return `${issue.message.replace(/^Too (small|big): /, "")}, got ${JSON.stringify(valueAt(data, path))}. Fix: change the value`;
  }
  if (issue.code === "invalid_format") return `${issue.message}. Fix: use letters, digits, '.', '_' and '-' only`;
  return issue.message.includes("Fix:") ? issue.message : `${issue.message}. Fix: change the value`;
}

function describeValue(value: unknown): string {
  if (Array.isArray(value)) return "a list";
  if (value === null) return "nothing (null)";
  if (typeof value === "object") return "a mapping";
  return `${typeof value} ${JSON.stringify(value)}`;
}

function suggestKey(key: string, data: unknown, path: (string | number)[]): string {
  const known = KNOWN_KEYS[knownKeysFor(path)] ?? [];
  const present = valueAt(data, path);
  const unused = known.filter((k) => typeof present !== "object" || present === null || !(k in present));
  const closest = known.map((k) => ({ k, d: editDistance(k, key) })).sort((a, b) => a.d - b.d)[0];
  const didYouMean =
    closest !== undefined && closest.d <= Math.max(2, key.length / 3) ? `did you mean "${closest.k}"? ` : "";
  return `${didYouMean}remove it, or use one of: ${(unused.length > 0 ? unused : known).join(", ")}`;
}

/** Known keys by schema location (numbers in paths dropped), for "did you mean". */
const KNOWN_KEYS: Record<string, string[]> = {
  "": Object.keys(planSchema.shape),
  scenarios: Object.keys(scenario.shape),
  "scenarios.fleet": Object.keys(fleet.shape),
  "scenarios.fleet.failures": Object.keys(failureCause.shape),
  "scenarios.fleet.stragglers": Object.keys(stragglers.shape),
  "scenarios.workload": Object.keys(workload.shape),
  "scenarios.checkpoint": Object.keys(checkpoint.shape),
  "scenarios.recovery": Object.keys(recovery.shape),
  "scenarios.recovery.fallback": Object.keys(fallback.shape),
};

function knownKeysFor(path: (string | number)[]): string {
  return path.filter((p) => typeof p === "string").join(".");
}

function valueAt(data: unknown, path: (string | number)[]): unknown {
  let current = data;
  for (const key of path) {
    if (current === null || typeof current !== "object") return undefined;
    current = (current as Record<string | number, unknown>)[key];
  }
  return current;
}

function formatPath(path: (string | number)[]): string {
  return path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");
}

/** Line of the deepest YAML node along the path (the key itself for keyLine), 1-based. */
function lineOf(
  root: YamlNode | null,
  path: (string | number)[],
  counter: LineCounter,
  keyLine: boolean,
): number | undefined {
  let node: unknown = root;
  let line = rangeLine(root, counter);
  for (const [i, key] of path.entries()) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && p.key.value === key);
      if (pair === undefined) break;
      // A missing value or a nested mapping is best shown by its key's line; so is an unknown key.
      line = rangeLine(pair.key, counter) ?? line;
      node = pair.value;
      if (keyLine && i === path.length - 1) break;
    } else if (isSeq(node) && typeof key === "number") {
      node = node.items[key];
      line = rangeLine(node, counter) ?? line;
    } else {
      break;
    }
  }
  return line;
}

function rangeLine(node: unknown, counter: LineCounter): number | undefined {
  const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
  return range === undefined ? undefined : counter.linePos(range[0]).line;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0] ?? 0;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j] ?? 0;
      row[j] = Math.min(above + 1, (row[j - 1] ?? 0) + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length] ?? 0;
}
