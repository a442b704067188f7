import { isMap, isScalar, LineCounter, parseDocument, type Document } from "yaml";
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

/** A spec that failed to parse or validate; `message` lists every issue as `file:line:col: path: message (fix: ...)`. */
export class SpecError extends Error {
  constructor(readonly issues: SpecIssue[]) {
    super(issues.map(formatIssue).join("\n"));
    this.name = "SpecError";
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
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
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
  return { doc, lines, value: doc.toJS() as unknown };
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out === "" ? String(part) : `.${String(part)}`;
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

/** Turns zod issues into SpecIssues with positions, plain messages and fixes. */
export function zodIssuesToSpecIssues(
  issues: readonly z.core.$ZodIssue[],
  parsed: ParsedYaml,
  file: string,
  knownKeys: KnownKeys,
): SpecIssue[] {
  const out: SpecIssue[] = [];
  for (const issue of issues) {
    const path = issue.path;
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        const allowed = knownKeys(path);
        const suggestion = closest(key, allowed);
        const pos = positionOf(parsed, path, key);
        out.push({
          file,
          path: formatPath([...path, key]),
          ...pos,
          message: `unknown key "${key}"`,
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
  return `${typeof value} ${JSON.stringify(value)}`;
}
