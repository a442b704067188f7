import { isMap, isScalar, LineCounter, parseDocument, visit, type Document } from "yaml";
import type { z } from "zod";

/** One problem in a user's file: where it is and how to fix it. */
export interface SpecIssue {
  file: string;
  path: string;
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
  const where = `${issue.file}:${issue.line}:${issue.column}`;
  const path = issue.path === "" ? "" : `${issue.path}: `;
  return `${where}: ${path}${issue.message} (fix: ${issue.fix})`;
}

export interface ParsedYaml {
  doc: Document;
  lines: LineCounter;
  value: unknown;
}

/** Parses YAML keeping positions; syntax errors become SpecErrors with line numbers. */
export function parseYaml(text: string, file: string): ParsedYaml {
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
  const lines = new LineCounter();
  // Duplicate keys are found below in one pass: the YAML library's own check compares every key with every other.
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: false });
  if (doc.errors.length === 0) duplicateKeyErrors(doc, lines, file);
  if (doc.errors.length > 0) {
    throw new SpecError(
      doc.errors.map((e) => {
        const pos = lines.linePos(e.pos[0]);
        return {
          file,
          path: "",
          line: pos.line,
          column: pos.col,
          message: `invalid YAML: ${e.message.split("\n")[0]}`,
          fix: "correct the YAML syntax at this position",
        };
      }),
    );
  }
  return { doc, lines, value: toJs(doc, lines, file) };
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

function closest(word: string, candidates: readonly string[]): string | undefined {
  // A key much longer than every candidate is no typo of one; bounding it keeps the edit distance cheap.
  if (word.length > 64) return undefined;
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = c;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
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

/** The keys a strict object at `path` accepts, for "did you mean" hints. */
export type KnownKeys = (path: readonly PropertyKey[]) => readonly string[];

/** How many problems zod found: an unknown-keys issue counts once per key. */
export function countZodIssues(issues: readonly z.core.$ZodIssue[]): number {
  let n = 0;
  for (const issue of issues) n += issue.code === "unrecognized_keys" ? issue.keys.length : 1;
  return n;
}

/**
 * Turns zod issues into SpecIssues with positions, plain messages and fixes: the first `maxIssuesReported` only
 * (finding a position costs a walk of the document; count the rest with `countZodIssues`).
 */
export function zodIssuesToSpecIssues(
  issues: readonly z.core.$ZodIssue[],
  parsed: ParsedYaml,
  file: string,
  knownKeys: KnownKeys,
): SpecIssue[] {
  const out: SpecIssue[] = [];
  for (const issue of issues) {
    if (out.length >= maxIssuesReported) break;
    const path = issue.path;
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        if (out.length >= maxIssuesReported) break;
        const allowed = knownKeys(path);
        const suggestion = closest(key, allowed);
        const pos = positionOf(parsed, path, key);
        out.push({
          file,
          path: formatPath([...path, key]),
          ...pos,
          message: `unknown key "${truncate(key, 64)}"`,
          fix: suggestion
            ? `did you mean "${suggestion}"?`
            : `remove it; allowed keys here: ${allowed.join(", ") || "(none)"}`,
        });
      }
      continue;
    }
    const pos = positionOf(parsed, path);
    const { message, fix } = describe(issue);
    out.push({ file, path: formatPath(path), ...pos, message, fix });
  }
  return out;
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
      return { message: issue.message, fix: `use a value >= ${String(issue.minimum)}` };
    case "too_big":
      return { message: issue.message, fix: `use a value <= ${String(issue.maximum)}` };
    case "invalid_value":
      return {
        message: `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`,
        fix: `pick one of the listed values`,
      };
    case "invalid_key": {
      // A record's key failed its own check: say what the key's schema said.
      const inner = issue.issues[0]?.message ?? issue.message;
      const [message, fix] = inner.split(" | fix: ");
      return { message: `key ${message ?? inner}`, fix: fix ?? "rename the key" };
    }
    default: {
      const [message, fix] = issue.message.split(" | fix: ");
      return { message: message ?? issue.message, fix: fix ?? "correct this value" };
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
function duplicateKeyErrors(doc: Document, lines: LineCounter, file: string): void {
  const issues: SpecIssue[] = [];
  visit(doc, {
    Map(_key, node) {
      const seen = new Set<unknown>();
      for (const item of node.items) {
        if (!isScalar(item.key)) continue;
        const key = item.key.value;
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
