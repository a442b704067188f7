import { isMap, isScalar, LineCounter, parseDocument, visit, type Document } from "yaml";
import type { z } from "zod";

/**
 * One problem in a user's file (job spec, cluster, services, plan, gateway keys) or request body: where it is and how
 * to fix it. Every such error in switchyard reads `file:line:col: path: message (fix: ...)` (formatIssue).
 */
export interface SpecIssue {
  /** The file, or for a request body the route (`POST /api/jobs`). */
  file: string;
  path: string;
  /** 1-based; 0 when the problem has no place in the text (the file cannot be read; a request body). */
  line: number;
  column: number;
  message: string;
  fix: string;
}

/** Largest spec file accepted: a spec is a page of YAML, and every byte of it is parsed on the server. */
export const maxSpecBytes = 256 * 1024;
/** Issues listed in one error; the rest are counted ("and N more"), so a broken file gives a short answer. */
export const maxIssuesReported = 20;

/** Longest text kept per issue field, so an error never echoes a huge key or value back. */
const issueFieldLimits = { file: 512, path: 256, message: 1024, fix: 1024 } as const;

export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/**
 * A spec that failed to parse or validate; `message` lists every issue as `file:line:col: path: message (fix: ...)`.
 * At most `maxIssuesReported` issues are kept, each field bounded; `omitted` counts the rest.
 */
export class SpecError extends Error {
  readonly issues: SpecIssue[];
  readonly omitted: number;

  constructor(issues: SpecIssue[], omitted = 0) {
    const shown = issues.slice(0, maxIssuesReported).map((i) => ({
      ...i,
      file: truncate(i.file, issueFieldLimits.file),
      path: truncate(i.path, issueFieldLimits.path),
      message: truncate(i.message, issueFieldLimits.message),
      fix: truncate(i.fix, issueFieldLimits.fix),
    }));
    const more = omitted + issues.length - shown.length;
    super(
      shown.map(formatIssue).join("\n") +
        (more > 0 ? `\n... and ${more} more issue(s) (fix: correct the ones above, then validate again)` : ""),
    );
    this.name = "SpecError";
    this.issues = shown;
    this.omitted = more;
  }
}

export function formatIssue(issue: SpecIssue): string {
  // Line 0: a problem with the file as a whole (it cannot be read, say), at no position in it.
  const where = issue.line > 0 ? `${issue.file}:${issue.line}:${issue.column}` : issue.file;
  const path = issue.path === "" ? "" : `${issue.path}: `;
  return `${where}: ${path}${issue.message} (fix: ${issue.fix})`;
}

export interface ParsedYaml {
  doc: Document;
  lines: LineCounter;
  value: unknown;
}

/** A problem with a file as a whole (it cannot be read, it is too large): a SpecError at no position. */
export function fileError(file: string, message: string, fix: string): SpecError {
  return new SpecError([{ file, path: "", line: 0, column: 0, message, fix }]);
}

export interface ParseYamlOptions {
  /** Resolve YAML merge keys (`<<: *defaults`), as plan files allow. */
  merge?: boolean;
  /** What the text is, for syntax errors: "YAML" (default) or "JSON" (parsed by the same parser, a YAML subset). */
  syntax?: "YAML" | "JSON";
}

/** Parses YAML keeping positions; syntax errors become SpecErrors with line numbers. */
export function parseYaml(text: string, file: string, opts: ParseYamlOptions = {}): ParsedYaml {
  if (text.length > maxSpecBytes || Buffer.byteLength(text, "utf8") > maxSpecBytes) {
    throw new SpecError([
      {
        file,
        path: "",
        line: 1,
        column: 1,
        message: `the file has ${Buffer.byteLength(text, "utf8")} bytes, more than the ${maxSpecBytes} a spec may have`,
        fix: "shorten it: move large data (env files, argument lists) into files the job reads",
      },
    ]);
  }
  const syntax = opts.syntax ?? "YAML";
  if (syntax === "JSON") jsonSyntaxErrors(text, file);
  const lines = new LineCounter();
  // Duplicate keys are found below in one pass: the YAML library's own check compares every key with every other.
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: false, merge: opts.merge });
  if (doc.errors.length === 0) duplicateKeyErrors(doc, lines, file, opts.merge === true);
  if (doc.errors.length > 0) {
    throw new SpecError(
      doc.errors.map((e) => {
        const pos = lines.linePos(e.pos[0]);
        return {
          file,
          path: "",
          line: pos.line,
          column: pos.col,
          message: `invalid ${syntax}: ${e.message.split("\n")[0]}`,
          fix: `correct the ${syntax} syntax at this position`,
        };
      }),
    );
  }
  return { doc, lines, value: toJs(doc, lines, file) };
}

/**
 * JSON is parsed for positions by the YAML parser (JSON is YAML), which also takes what JSON refuses (`{"a": }`):
 * JSON.parse says first whether it is JSON at all, and where it stops.
 */
function jsonSyntaxErrors(text: string, file: string): void {
  try {
    JSON.parse(text);
  } catch (err) {
    // V8 says "... in JSON at position N" or "Unexpected token 'x', ...<excerpt>... is not valid JSON" (no offset).
    const reason = (err as Error).message
      .replace(/, (\.\.\.)?".*" is not valid JSON$/s, "")
      .replace(/ in JSON at position \d+.*$/s, "");
    const at = /position (\d+)/.exec((err as Error).message);
    let offset = at ? Number(at[1]) : undefined;
    // Without an offset, the YAML parser's first complaint is usually the same place; failing that, the file as a whole.
    offset ??= parseDocument(text, { prettyErrors: false }).errors[0]?.pos[0];
    const before = offset === undefined ? undefined : text.slice(0, offset).split("\n");
    throw new SpecError([
      {
        file,
        path: "",
        line: before?.length ?? 0,
        column: before ? (before.at(-1)?.length ?? 0) + 1 : 0,
        message: `invalid JSON: ${truncate(reason, 200)}`,
        fix: before ? "correct the JSON syntax at this position" : "correct the JSON syntax",
      },
    ]);
  }
}

export interface ValidateYamlOptions extends ParseYamlOptions {
  /** Changes the parsed value before validation (plan files drop their `x-` anchor keys). */
  prepare?: (value: unknown) => unknown;
  /** A file-specific wording for some issues. */
  describe?: DescribeIssue;
}

/**
 * The one error path for a user's config file: parse with positions, validate with `schema`, and throw a SpecError
 * whose issues read `file:line:col: path: message (fix: ...)`, bounded in count and length.
 */
export function validateYaml<S extends z.ZodType>(
  schema: S,
  text: string,
  file: string,
  opts: ValidateYamlOptions = {},
): { data: z.output<S>; parsed: ParsedYaml } {
  const parsed = parseYaml(text, file, opts);
  const value = opts.prepare ? opts.prepare(parsed.value) : parsed.value;
  if (value === null || value === undefined) {
    throw new SpecError([
      {
        file,
        path: "",
        line: 1,
        column: 1,
        message: "the file is empty",
        fix: `write a ${opts.syntax ?? "YAML"} mapping`,
      },
    ]);
  }
  const result = schema.safeParse(value, { reportInput: true });
  if (!result.success) {
    const shown = zodIssuesToSpecIssues(result.error.issues, parsed, file, schema, opts.describe);
    throw new SpecError(shown, countZodIssues(result.error.issues) - shown.length);
  }
  return { data: result.data, parsed };
}

/** Where the node at `path` (or its key `key`) starts in the file, for issues found after validation. */
export function positionAt(
  parsed: ParsedYaml,
  path: readonly PropertyKey[],
  key?: string,
): { line: number; column: number } {
  return positionOf(parsed, path, key);
}

/** `doc.toJS()`, whose alias errors (an undefined anchor, an alias bomb) become SpecErrors at the first alias. */
function toJs(doc: Document, lines: LineCounter, file: string): unknown {
  try {
    return doc.toJS({ maxAliasCount: 1000 }) as unknown;
  } catch (err) {
    if (!(err instanceof ReferenceError)) throw err;
    let at = 0;
    visit(doc, {
      Alias(_key, node) {
        if (node.resolve(doc) === undefined || /excessive/i.test(err.message)) {
          at = node.range?.[0] ?? 0;
          return visit.BREAK;
        }
        return undefined;
      },
    });
    const pos = lines.linePos(at);
    throw new SpecError([
      {
        file,
        path: "",
        line: pos.line,
        column: pos.col,
        message: `invalid YAML: ${err.message}`,
        fix: "define each &anchor before its *alias, and expand repeated structures instead of nesting aliases",
      },
    ]);
  }
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path) {
    const name = truncate(String(part), 64);
    if (typeof part === "number") out += `[${part}]`;
    else out += out === "" ? name : `.${name}`;
  }
  return out;
}

function positionOf(parsed: ParsedYaml, path: readonly PropertyKey[], key?: string): { line: number; column: number } {
  const keys = path.map((p) => (typeof p === "symbol" ? String(p) : p));
  // Walk down as far as the document goes, so a missing field points at its parent.
  for (let depth = keys.length; depth >= 0; depth--) {
    const node = depth === 0 ? parsed.doc.contents : parsed.doc.getIn(keys.slice(0, depth), true);
    if (node === undefined || node === null) continue;
    if (key !== undefined && depth === keys.length && isMap(node)) {
      const pair = node.items.find((item) => isScalar(item.key) && item.key.value === key);
      const range = pair && isScalar(pair.key) ? pair.key.range : undefined;
      if (range) {
        const pos = parsed.lines.linePos(range[0]);
        return { line: pos.line, column: pos.col };
      }
    }
    const range = (node as { range?: [number, number, number] }).range;
    if (range) {
      const pos = parsed.lines.linePos(range[0]);
      return { line: pos.line, column: pos.col };
    }
  }
  return { line: 1, column: 1 };
}

/** Per-object hints for keys users often write there by mistake: key -> the fix to show instead of "remove it". */
const keyHintsBySchema = new WeakMap<object, Readonly<Record<string, string>>>();

/**
 * Attaches hints to a strict object schema for keys that are no typo of a known key but a known mistake (a service's
 * `name:`, say, when services are named by `model:`). Returns the schema itself.
 */
export function withKeyHints<S extends z.ZodType>(schema: S, hints: Readonly<Record<string, string>>): S {
  keyHintsBySchema.set(schema, hints);
  return schema;
}

/** zod's internal definition of a schema (`schema._zod.def`), read structurally: every schema kind has one. */
interface SchemaDef {
  type: string;
  innerType?: z.ZodType;
  in?: z.ZodType;
  out?: z.ZodType;
  getter?: () => z.ZodType;
  options?: readonly z.ZodType[];
  left?: z.ZodType;
  right?: z.ZodType;
  shape?: Record<string, z.ZodType>;
  catchall?: z.ZodType;
  element?: z.ZodType;
  items?: readonly z.ZodType[];
  rest?: z.ZodType | null;
  valueType?: z.ZodType;
}

function defOf(schema: unknown): SchemaDef | undefined {
  return (schema as { _zod?: { def?: SchemaDef } } | undefined)?._zod?.def;
}

/** Schemas that only wrap another: what the user writes is checked by the inner one. */
const wrapperTypes = new Set(["optional", "nullable", "default", "prefault", "catch", "readonly", "nonoptional"]);
/** Deepest nesting of wrappers, pipes, lazies and unions opened (a recursive lazy schema ends here). */
const maxUnwrapDepth = 16;

/** The schemas that check a value here: wrappers, pipes (their input side), lazies and union options opened. */
function leaves(schema: z.ZodType | undefined, depth = 0): z.ZodType[] {
  const def = defOf(schema);
  if (schema === undefined || def === undefined || depth > maxUnwrapDepth) return [];
  if (wrapperTypes.has(def.type)) return leaves(def.innerType, depth + 1);
  if (def.type === "pipe") return leaves(defOf(def.in)?.type === "transform" ? def.out : def.in, depth + 1);
  if (def.type === "lazy") return def.getter ? leaves(def.getter(), depth + 1) : [];
  if (def.type === "union") return (def.options ?? []).flatMap((o) => leaves(o, depth + 1));
  if (def.type === "intersection") return [...leaves(def.left, depth + 1), ...leaves(def.right, depth + 1)];
  return [schema];
}

/** The schemas of a value's child `part` (a key or an index). */
function childSchemas(schema: z.ZodType, part: PropertyKey): z.ZodType[] {
  const def = defOf(schema);
  let child: z.ZodType | undefined | null;
  switch (def?.type) {
    case "object":
      child = typeof part === "string" && def.shape && Object.hasOwn(def.shape, part) ? def.shape[part] : def.catchall;
      break;
    case "array":
      child = typeof part === "number" ? def.element : undefined;
      break;
    case "tuple":
      child = typeof part === "number" ? (def.items?.[part] ?? def.rest) : undefined;
      break;
    case "record":
      child = def.valueType;
      break;
  }
  return child ? leaves(child) : [];
}

/** Every schema that checks the value at `path` of a document checked by `root` (several under a union). */
function schemasAt(root: z.ZodType, path: readonly PropertyKey[]): z.ZodType[] {
  let current = leaves(root);
  for (const part of path) {
    current = current.flatMap((s) => childSchemas(s, part));
    if (current.length === 0) break;
  }
  return current;
}

/** The keys the object(s) at `path` accept, for "did you mean" and "allowed keys" (all options of a union). */
export function knownKeysAt(root: z.ZodType, path: readonly PropertyKey[]): string[] {
  const keys = new Set<string>();
  for (const s of schemasAt(root, path)) {
    const def = defOf(s);
    if (def?.type === "object" && def.shape) for (const k of Object.keys(def.shape)) keys.add(k);
  }
  return [...keys];
}

function keyHintAt(root: z.ZodType, path: readonly PropertyKey[], key: string): string | undefined {
  for (const s of schemasAt(root, path)) {
    const hints = keyHintsBySchema.get(s);
    if (hints && Object.hasOwn(hints, key)) return hints[key];
  }
  return undefined;
}

/** Levels below the object at hand searched for a key written one level too high ("count" beside "replicas"). */
const nestedKeyDepth = 3;
/** Keys collected at most in that search, so a huge schema costs a bounded walk. */
const maxNestedKeys = 500;

/** Keys of objects nested below `path`, with where they go relative to it (`pools[].replicas`), shallowest first. */
function nestedKeysAt(root: z.ZodType, path: readonly PropertyKey[]): { key: string; where: string }[] {
  const out: { key: string; where: string }[] = [];
  const queue = schemasAt(root, path).map((schema) => ({ schema, where: "", depth: 0 }));
  for (let item = queue.shift(); item !== undefined && out.length < maxNestedKeys; item = queue.shift()) {
    const def = defOf(item.schema);
    const push = (child: z.ZodType | undefined, where: string, depth: number) => {
      if (depth <= nestedKeyDepth) for (const schema of leaves(child)) queue.push({ schema, where, depth });
    };
    if (def?.type === "object" && def.shape) {
      for (const [key, child] of Object.entries(def.shape)) {
        const where = item.where === "" ? key : `${item.where}.${key}`;
        if (item.depth > 0) out.push({ key, where });
        push(child, where, item.depth + 1);
      }
    } else if (def?.type === "array") {
      push(def.element, `${item.where}[]`, item.depth);
    } else if (def?.type === "record") {
      push(def.valueType, `${item.where}.<name>`, item.depth);
    }
  }
  return out;
}

/** The fix for an unknown key: a hint, a near key here, a near key one level down, or the allowed keys. */
function unknownKeyFix(root: z.ZodType, path: readonly PropertyKey[], key: string, present: readonly string[]): string {
  const hint = keyHintAt(root, path, key);
  if (hint !== undefined) return hint;
  const allowed = knownKeysAt(root, path);
  // A key the mapping already has is a worse guess than one it lacks ("devics" beside "devices" means "device").
  const unused = allowed.filter((k) => !present.includes(k));
  const suggestion = closest(key, unused) ?? closest(key, allowed);
  if (suggestion !== undefined) return `did you mean "${suggestion}"?`;
  const nested = nestedKeysAt(root, path);
  const deeper = closest(
    key,
    nested.map((n) => n.key),
  );
  const where = nested.find((n) => n.key === deeper)?.where;
  if (deeper !== undefined && where !== undefined) {
    const at = formatPath(path);
    const full = `${at === "" ? "" : `${at}.`}${where}`;
    return deeper === key ? `move it: it belongs at ${full}` : `did you mean "${deeper}"? it belongs at ${full}`;
  }
  return `remove it; allowed keys here: ${shortList(allowed) || "(none)"}`;
}

/** Names joined with ", ", at most 40 of them ("and N more"). */
function shortList(names: readonly string[]): string {
  const shown = names.slice(0, 40).join(", ");
  return names.length > 40 ? `${shown} and ${names.length - 40} more` : shown;
}

function closest(word: string, candidates: readonly string[]): string | undefined {
  // A key much longer than every candidate is no typo of one; bounding it keeps the edit distance cheap.
  if (word.length > 64) return undefined;
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    if (c.length > 64) continue;
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = c;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

/**
 * A value close enough to a listed one to be its typo: stricter than for keys, since short values differ by a letter
 * on purpose ("tpu" is no typo of "cpu").
 */
function closestValue(word: string, candidates: readonly string[]): string | undefined {
  if (word.length > 64) return undefined;
  const allowed = word.length >= 5 ? 2 : word.length >= 4 ? 1 : 0;
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = c.length > 64 ? Infinity : editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = c;
    }
  }
  return bestDistance <= allowed ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}

/**
 * zod's issues with every union opened: where one option of a union fits the value's shape, its own issues (with
 * full paths) stand for the union, so a typo deep in one option reads like any other typo.
 */
export function flattenZodIssues(
  issues: readonly z.core.$ZodIssue[],
  prefix: readonly PropertyKey[] = [],
  depth = 0,
): z.core.$ZodIssue[] {
  const out: z.core.$ZodIssue[] = [];
  for (const issue of issues) {
    const path = [...prefix, ...issue.path];
    if (issue.code === "invalid_union" && depth < maxUnwrapDepth) {
      const branch = bestBranch(issue.errors);
      if (branch !== undefined) {
        out.push(...flattenZodIssues(branch, path, depth + 1));
        continue;
      }
    }
    out.push({ ...issue, path } as z.core.$ZodIssue);
  }
  return out;
}

/** The union option the value was most likely meant for: right type at the top, fewest problems; none if no option fits. */
function bestBranch(branches: readonly (readonly z.core.$ZodIssue[])[]): readonly z.core.$ZodIssue[] | undefined {
  let best: readonly z.core.$ZodIssue[] | undefined;
  let bestScore = Infinity;
  for (const branch of branches) {
    let score = 0;
    for (const issue of branch) {
      if (issue.path.length === 0 && issue.code !== "unrecognized_keys" && issue.code !== "custom") {
        score = Infinity; // the value is not even of this option's type
        break;
      }
      // A wrong literal one level down (a `kind:` discriminator) says this is another option's value.
      if (issue.path.length === 1 && issue.code === "invalid_value") score += 100;
      else score += issue.code === "unrecognized_keys" ? issue.keys.length : 1;
    }
    if (score < bestScore) {
      bestScore = score;
      best = branch;
    }
  }
  return best;
}

/** How many problems zod found: an unknown-keys issue counts once per key, unions opened. */
export function countZodIssues(issues: readonly z.core.$ZodIssue[]): number {
  let n = 0;
  for (const issue of flattenZodIssues(issues)) n += issue.code === "unrecognized_keys" ? issue.keys.length : 1;
  return n;
}

const noPosition = { line: 0, column: 0 } as const;

/** A file-specific wording for an issue, where the generic one says too little (undefined: use the generic one). */
export type DescribeIssue = (issue: z.core.$ZodIssue) => { message: string; fix: string } | undefined;

/**
 * Turns zod issues into SpecIssues with positions, plain messages and fixes: the first `maxIssuesReported` only
 * (finding a position costs a walk of the document; count the rest with `countZodIssues`). `schema` is the one that
 * produced the issues: unknown keys are answered from it ("did you mean", inside arrays, records and unions too).
 */
export function zodIssuesToSpecIssues(
  issues: readonly z.core.$ZodIssue[],
  /** The parsed file, for positions; none for input without any (an API request's JSON body): line 0. */
  parsed: ParsedYaml | undefined,
  file: string,
  schema: z.ZodType,
  describeHook?: DescribeIssue,
): SpecIssue[] {
  const out: SpecIssue[] = [];
  for (const issue of flattenZodIssues(issues)) {
    if (out.length >= maxIssuesReported) break;
    const path = issue.path;
    if (issue.code === "unrecognized_keys") {
      const input = (issue as { input?: unknown }).input;
      const present = input !== null && typeof input === "object" ? Object.keys(input).slice(0, 1000) : [];
      for (const key of issue.keys) {
        if (out.length >= maxIssuesReported) break;
        const pos = parsed ? positionOf(parsed, path, key) : noPosition;
        out.push({
          file,
          path: formatPath([...path, key]),
          ...pos,
          message: `unknown key "${truncate(key, 64)}"`,
          fix: unknownKeyFix(schema, path, key, present),
        });
      }
      continue;
    }
    const pos = parsed ? positionOf(parsed, path) : noPosition;
    const { message, fix } = describeHook?.(issue) ?? describe(issue);
    out.push({ file, path: formatPath(path), ...pos, message, fix });
  }
  return out;
}

/** Splits a schema's message "what | fix: how" (or "what. Fix: how") into its two parts. */
export function splitFix(text: string): { message: string; fix: string | undefined } {
  const bar = text.indexOf(" | fix: ");
  if (bar >= 0) return { message: text.slice(0, bar), fix: text.slice(bar + 8) };
  const dot = text.indexOf(". Fix: ");
  if (dot >= 0) return { message: text.slice(0, dot), fix: text.slice(dot + 7) };
  return { message: text, fix: undefined };
}

function bound(n: unknown): string {
  return typeof n === "bigint" ? n.toString() : String(n);
}

function describe(issue: z.core.$ZodIssue): { message: string; fix: string } {
  switch (issue.code) {
    case "invalid_type":
      if (issue.input === undefined) return { message: "is required", fix: `add this field (${issue.expected})` };
      return {
        message: `expected ${issue.expected}, got ${describeValue(issue.input)}`,
        fix: `write a ${issue.expected} here`,
      };
    case "too_small":
    case "too_big": {
      const own = splitFix(issue.message);
      // A schema's own wording ("must be at most 86400 seconds | fix: ...") says it best.
      if (own.fix !== undefined) return { message: own.message, fix: own.fix };
      const small = issue.code === "too_small";
      const limit = bound(small ? issue.minimum : issue.maximum);
      const inclusive = issue.inclusive !== false;
      const op = small ? (inclusive ? ">=" : ">") : inclusive ? "<=" : "<";
      const got = issue.input === undefined ? "" : `, got ${describeValue(issue.input)}`;
      if (issue.origin === "array" || issue.origin === "set") {
        const count = Array.isArray(issue.input) ? `, got ${issue.input.length}` : "";
        return {
          message: `needs ${small ? "at least" : "at most"} ${limit} item(s)${count}`,
          fix: small ? `add at least ${limit} item(s)` : `keep at most ${limit} item(s)`,
        };
      }
      if (issue.origin === "string")
        return {
          message: `must have ${small ? "at least" : "at most"} ${limit} character(s)`,
          fix: small ? (limit === "1" ? "write a non-empty value" : "write a longer value") : "shorten it",
        };
      return { message: `must be ${op} ${limit}${got}`, fix: `use a value ${op} ${limit}` };
    }
    case "invalid_value": {
      const values = issue.values.map((v) => JSON.stringify(v) ?? String(v));
      const guess =
        typeof issue.input === "string"
          ? closestValue(
              issue.input,
              issue.values.filter((v): v is string => typeof v === "string"),
            )
          : undefined;
      return {
        message: `must be one of ${shortList(values)}${issue.input === undefined ? "" : `, got ${describeValue(issue.input)}`}`,
        fix: guess !== undefined ? `did you mean "${guess}"?` : "pick one of the listed values",
      };
    }
    case "invalid_union": {
      // A discriminated union that found no option for its tag: the tag's allowed values.
      const options = (issue as { options?: unknown[] }).options;
      if (issue.errors.length === 0 && Array.isArray(options)) {
        return {
          message: `must be one of ${shortList(options.map((o) => JSON.stringify(o) ?? String(o)))}`,
          fix: "pick one of the listed values",
        };
      }
      // No option fits the value's type: what each would take.
      const expected = new Set<string>();
      for (const branch of issue.errors) {
        for (const inner of branch) {
          if (inner.path.length > 0) continue;
          if (inner.code === "invalid_type") expected.add(`a ${inner.expected}`);
          else if (inner.code === "invalid_value")
            for (const v of inner.values) expected.add(JSON.stringify(v) ?? String(v));
          else expected.add(splitFix(inner.message).message);
        }
      }
      const list = [...expected].slice(0, 8).join(" or ");
      return {
        message: `expected ${list || "another value"}${issue.input === undefined ? "" : `, got ${describeValue(issue.input)}`}`,
        fix: "write one of the accepted forms",
      };
    }
    case "invalid_key": {
      // A record's key failed its own check: say what the key's schema said.
      const inner = issue.issues[0]?.message ?? issue.message;
      const { message, fix } = splitFix(inner);
      return { message: `key ${message}`, fix: fix ?? "rename the key" };
    }
    case "invalid_format": {
      // A schema's own words ("an http:// or https:// URL") say what is wanted; zod's default ("Invalid ...") less so.
      const own = splitFix(issue.message);
      const wanted = /^invalid\b/i.test(own.message)
        ? `must be a valid ${issue.format}`
        : /^(must|is|not)\b/.test(own.message)
          ? own.message
          : `must be ${own.message}`;
      const got = issue.input === undefined ? "" : `, got ${describeValue(issue.input)}`;
      return { message: `${wanted}${got}`, fix: own.fix ?? `write a valid ${issue.format} here` };
    }
    default: {
      const { message, fix } = splitFix(issue.message);
      return { message, fix: fix ?? "correct this value" };
    }
  }
}

function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  return `${typeof value} ${truncate(JSON.stringify(value) ?? String(value), 80)}`;
}

/** Throws a SpecError naming every repeated key of a mapping (linear: one Set per mapping). */
function duplicateKeyErrors(doc: Document, lines: LineCounter, file: string, merge: boolean): void {
  const issues: SpecIssue[] = [];
  visit(doc, {
    Map(_key, node) {
      const seen = new Set<unknown>();
      for (const item of node.items) {
        if (!isScalar(item.key)) continue;
        const key = item.key.value;
        if (merge && key === "<<") continue; // several merge keys are allowed
        if (seen.has(key)) {
          const pos = lines.linePos(item.key.range?.[0] ?? 0);
          issues.push({
            file,
            path: "",
            line: pos.line,
            column: pos.col,
            message: `invalid YAML: map keys must be unique; "${truncate(String(key), 64)}" is repeated`,
            fix: "remove or rename the repeated key",
          });
        }
        seen.add(key);
      }
    },
  });
  if (issues.length > 0) throw new SpecError(issues);
}
