import { LinearRegExp } from "./linear-regex.js";

/**
 * A `progress.regex` suggested from the lines an unmodified script prints (docs/supervision.md, "Progress without a
 * progress source"): the counter that grows across the lines (a step, an iteration, an epoch) becomes the named
 * group `step`, and a loss printed after it on the same lines the group `loss`. E.g. from
 * `[GPU0] Epoch 3 | Batchsize: 32 | Steps: 64` (Steps is the same on every line, Epoch grows) it suggests
 * `Epoch (?<step>\d+)`. The suggestion is RE2 syntax (linear-time: src/core/linear-regex.ts) and is checked against
 * the lines it came from before it is offered. Pure: no I/O.
 */

export interface ProgressSuggestion {
  regex: string;
  /** The counter's word as printed (e.g. `Epoch`) and the values read from the lines, in order. */
  counter: string;
  steps: number[];
  /** Whether the regex has a `loss` group. */
  loss: boolean;
  /** A line it matches. */
  example: string;
}

/** Words that name a progress counter, finest first (a step counter beats an epoch counter). */
const counterWords = [
  "global_step",
  "global step",
  "step",
  "steps",
  "iteration",
  "iter",
  "it",
  "update",
  "updates",
  "batch",
  "round",
  "epoch",
] as const;
/** Words that name a loss, tried in this order. */
const lossWords = ["train_loss", "training loss", "train loss", "loss"] as const;

/** At most this many lines and characters per line are looked at: the suggester never costs more than a glance. */
const maxLines = 400;
const maxLineChars = 2000;

// A counter word, a short separator ("", " ", ": ", "=", " [", " #"), digits. The word must stand alone (no letter
// or digit right before it), and is matched case-insensitively; (?i) keeps the separator and digits literal.
const counterPattern = new RegExp(
  `(^|[^A-Za-z0-9_])(${[...counterWords].sort((a, b) => b.length - a.length).join("|")})([ \\t]{0,3}(?:[:=#\\[][ \\t]{0,3})?)(\\d{1,15})(?![\\d.])`,
  "gi",
);

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");

/** The separator as a pattern: runs of spaces match any run of spaces, the rest literally. */
const separatorPattern = (sep: string): string =>
  sep
    .replace(/[ \t]+/g, "\0")
    .split("\0")
    .map(escape)
    .join("\\s*");

const ansi = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*[A-Za-z]`, "g");

/** The lines as a terminal would have shown them: each `\r`-redrawn segment (a progress bar) is a line of its own. */
export function visibleLines(lines: readonly string[]): string[] {
  const out: string[] = [];
  for (const line of lines.slice(-maxLines)) {
    for (const part of line.slice(0, maxLineChars * 50).split("\r")) {
      const clean = part.replace(ansi, "").slice(0, maxLineChars).trimEnd();
      if (clean.trim() !== "") out.push(clean);
    }
  }
  return out.slice(-maxLines);
}

interface Candidate {
  word: string;
  sep: string;
  rank: number;
  values: number[];
  lines: string[];
}

/**
 * The suggested `progress.regex` for these log lines, or null when no counter grows across them. Lines may hold
 * carriage returns (progress bars) and terminal colours.
 */
export function suggestProgressRegex(lines: readonly string[]): ProgressSuggestion | null {
  const shown = visibleLines(lines);
  const byKey = new Map<string, Candidate>();
  for (const line of shown) {
    const seenInLine = new Set<string>();
    for (const m of line.matchAll(counterPattern)) {
      const word = m[2]!;
      const sep = m[3]!;
      const key = `${word.toLowerCase()}\0${sep.replace(/[ \t]+/g, " ")}`;
      // The first occurrence per line is what a regex without anchors would match.
      if (seenInLine.has(key)) continue;
      seenInLine.add(key);
      let c = byKey.get(key);
      if (!c) {
        const rank = counterWords.indexOf(word.toLowerCase() as (typeof counterWords)[number]);
        c = { word, sep, rank, values: [], lines: [] };
        byKey.set(key, c);
      }
      c.values.push(Number(m[4]));
      c.lines.push(line);
    }
  }
  const growing = [...byKey.values()].filter((c) => {
    const distinct = new Set(c.values).size;
    if (distinct < 2) return false;
    // A counter never goes back (a progress bar's in-epoch count does: it restarts every epoch).
    return c.values.every((v, i) => i === 0 || v >= c.values[i - 1]!);
  });
  growing.sort((a, b) => a.rank - b.rank || new Set(b.values).size - new Set(a.values).size);
  for (const c of growing) {
    const suggestion = build(c);
    if (suggestion) return suggestion;
  }
  return null;
}

function build(c: Candidate, withLoss = true): ProgressSuggestion | null {
  const stepPart = `${escape(c.word)}${separatorPattern(c.sep)}(?<step>\\d+)`;
  const loss = withLoss ? lossAfterCounter(c) : null;
  const source = loss
    ? `${stepPart}.*?${escape(loss.word)}${separatorPattern(loss.sep)}(?<loss>[-+]?(?:\\d+\\.?\\d*(?:[eE][-+]?\\d+)?|[nN]a[nN]|[iI]nf))`
    : stepPart;
  let re: LinearRegExp;
  try {
    re = new LinearRegExp(source);
  } catch {
    return withLoss ? build(c, false) : null;
  }
  // Offered only when it reads back every value it was made from.
  const read = c.lines.map((l) => re.exec(l)?.groups?.step);
  if (read.some((v, i) => v === undefined || Number(v) !== c.values[i])) return withLoss ? build(c, false) : null;
  return {
    regex: source,
    counter: c.word,
    steps: c.values,
    loss: loss !== null,
    example: c.lines[c.lines.length - 1]!,
  };
}

/** A loss word and separator that follows the counter on every one of its lines, or null. */
function lossAfterCounter(c: Candidate): { word: string; sep: string } | null {
  for (const word of lossWords) {
    const re = new RegExp(`(^|[^A-Za-z0-9_])(${escape(word)})([ \\t]{0,3}[:=]?[ \\t]{0,3})[-+]?(\\d|nan|inf)`, "i");
    let found: { word: string; sep: string } | null = null;
    let everyLine = true;
    for (const line of c.lines) {
      const at = line.toLowerCase().indexOf(c.word.toLowerCase());
      const m = re.exec(line.slice(at < 0 ? 0 : at + c.word.length));
      if (!m) {
        everyLine = false;
        break;
      }
      found ??= { word: m[2]!, sep: m[3]! };
    }
    if (everyLine && found) return found;
  }
  return null;
}
