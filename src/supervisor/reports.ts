import { open, stat } from "node:fs/promises";
import type { RankCursor, RankRecord, StepSample } from "../store/port.js";

/** Longest report or log line that is parsed; a longer one is skipped (and counted), never waited on. */
export const maxLineBytes = 64 * 1024;
/** Most bytes read from one file in one pass: a flood is ingested over several ticks, never all in one. */
export const maxReadBytes = 1 << 20;

export interface NewLines {
  lines: string[];
  /** File offset just past each line's newline: where the line ends in the file. */
  ends: number[];
  /** The offset to read from next time. */
  offset: number;
  /** Lines skipped because they were longer than maxLineBytes. */
  overlong: number;
  /** The file's size and modification time at this read (0 and null when it does not exist). */
  size: number;
  mtimeMs: number | null;
}

/**
 * Reads the complete lines appended to a file since `offset`; a partial last line waits for the next read. Reads at
 * most `maxBytes` per call. A line longer than `lineLimit` is skipped: its bytes are passed over (across calls if
 * need be: an offset that does not follow a newline is inside a skipped line) and it is counted once in `overlong`.
 */
export async function readNewLines(
  file: string,
  offset: number,
  opts: { maxBytes?: number; lineLimit?: number } = {},
): Promise<NewLines> {
  const lineLimit = opts.lineLimit ?? maxLineBytes;
  const maxBytes = Math.max(opts.maxBytes ?? maxReadBytes, 2 * lineLimit + 2);
  const none = (size: number, mtimeMs: number | null): NewLines => ({
    lines: [],
    ends: [],
    offset,
    overlong: 0,
    size,
    mtimeMs,
  });
  let handle;
  try {
    handle = await open(file, "r");
  } catch {
    return none(0, null);
  }
  try {
    const st = await handle.stat();
    if (st.size <= offset) return none(st.size, st.mtimeMs);
    // One byte before the offset tells whether the offset starts a line or lies inside a skipped one.
    const from = offset > 0 ? offset - 1 : 0;
    const length = Math.min(st.size - from, maxBytes + (offset > 0 ? 1 : 0));
    const buf = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buf, 0, length, from);
    const data = buf.subarray(0, bytesRead);
    let pos = offset > 0 ? 1 : 0;
    const base = from;
    const out: NewLines = { lines: [], ends: [], offset, overlong: 0, size: st.size, mtimeMs: st.mtimeMs };
    if (offset > 0 && data[0] !== 0x0a) {
      const nl = data.indexOf(0x0a, pos);
      if (nl < 0) {
        out.offset = base + bytesRead;
        return out;
      }
      pos = nl + 1;
    }
    for (;;) {
      const nl = data.indexOf(0x0a, pos);
      if (nl < 0) break;
      if (nl - pos > lineLimit) out.overlong++;
      else {
        out.lines.push(data.subarray(pos, nl).toString("utf8"));
        out.ends.push(base + nl + 1);
      }
      pos = nl + 1;
    }
    if (bytesRead - pos > lineLimit) {
      // The start of an over-long line: pass over it now; the rest is skipped up to its newline on later reads.
      out.overlong++;
      pos = bytesRead;
    }
    out.offset = base + pos;
    return out;
  } finally {
    await handle.close();
  }
}

/** The last `n` lines of a file (reads at most the last 64 KiB). */
export async function tailLines(file: string, n: number): Promise<string[]> {
  let handle;
  try {
    handle = await open(file, "r");
  } catch {
    return [];
  }
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, 64 * 1024);
    const buf = Buffer.alloc(length);
    await handle.read(buf, 0, length, size - length);
    return buf
      .toString("utf8")
      .split("\n")
      .filter((l) => l.trim() !== "")
      .slice(-n);
  } finally {
    await handle.close();
  }
}

export type ReportLine =
  | { kind: "step"; t: number; step: number; loss: number | null; tokens: number | null; computeS: number | null }
  | { kind: "checkpoint"; t: number; step: number; path: string; saveS: number | null }
  | { kind: "start" | "done" | "other"; t: number; step: number | null };

/** A line that is not a report: what was wrong with it, for the event that says it was skipped. */
export interface BadLine {
  kind: "bad";
  why: string;
}

/** The reader's clock: report times are clamped into [notBefore, now] (a rank cannot report from the future). */
export interface ReadClock {
  now: number;
  notBefore: number;
}

const longestPath = 4096;

function finiteOrNull(v: unknown): number | null {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

function nonNegativeOrNull(v: unknown): number | null {
  const n = finiteOrNull(v);
  return n !== null && n >= 0 ? n : null;
}

/**
 * A loss as written: a number (JSON's 1e999 parses as Infinity), or one of the contract's strings "nan", "inf",
 * "-inf" (any case, also "infinity"), or a number in text. NaN or ±Infinity for a non-finite loss; null when absent or
 * unreadable.
 */
export function lossValue(v: unknown): number | null {
  if (typeof v === "number") return v;
  if (typeof v !== "string") return null;
  const text = v.trim().toLowerCase();
  if (/^[+-]?nan$/.test(text)) return Number.NaN;
  const inf = /^([+-]?)inf(inity)?$/.exec(text);
  if (inf) return inf[1] === "-" ? Number.NEGATIVE_INFINITY : Number.POSITIVE_INFINITY;
  const n = Number.parseFloat(text);
  return Number.isNaN(n) ? null : n;
}

function stepOrNull(v: unknown): number | null {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0 ? v : null;
}

const clamp = (t: number, clock: ReadClock): number => Math.min(clock.now, Math.max(clock.notBefore, t));

/**
 * Parses one SDK report line. Every field is checked: a line that is not a JSON object, or a report without what its
 * kind needs, is a BadLine (skipped and counted by the caller: a rank must never be able to wedge the supervisor); a
 * blank line is null. Times are clamped to the reader's clock.
 */
export function parseReportLine(line: string, clock: ReadClock): ReportLine | BadLine | null {
  if (line.trim() === "") return null;
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { kind: "bad", why: "not JSON" };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { kind: "bad", why: "not a JSON object" };
  }
  const raw = value as Record<string, unknown>;
  if (raw.t !== undefined && finiteOrNull(raw.t) === null) return { kind: "bad", why: "t is not a finite number" };
  const t = clamp(typeof raw.t === "number" ? raw.t * 1000 : clock.now, clock);
  const step = stepOrNull(raw.step);
  if (raw.step !== undefined && raw.step !== null && step === null) {
    return { kind: "bad", why: "step is not a non-negative integer" };
  }
  switch (raw.kind) {
    case "step":
      if (step === null) return { kind: "bad", why: "a step report without a step" };
      return {
        kind: "step",
        t,
        step,
        loss: lossValue(raw.loss),
        tokens: nonNegativeOrNull(raw.tokens),
        computeS: nonNegativeOrNull(raw.compute_s),
      };
    case "checkpoint":
      if (step === null) return { kind: "bad", why: "a checkpoint report without a step" };
      if (typeof raw.path !== "string" || raw.path === "" || raw.path.length > longestPath) {
        return { kind: "bad", why: "a checkpoint report without a usable path" };
      }
      return { kind: "checkpoint", t, step, path: raw.path, saveS: nonNegativeOrNull(raw.save_s) };
    case "start":
    case "done":
      return { kind: raw.kind, t, step };
    default:
      return { kind: "other", t, step };
  }
}

/** Progress from a plain log line through the job's regex (named groups `step`, optional `loss`). */
export function parseLogProgress(line: string, regex: RegExp): { step: number; loss: number | null } | null {
  const m = regex.exec(line);
  const text = m?.groups?.step;
  if (!m || text === undefined) return null;
  const step = Number(text);
  if (!Number.isSafeInteger(step) || step < 0) return null;
  return { step, loss: m.groups?.loss !== undefined ? lossValue(m.groups.loss) : null };
}

/** A known (file offset, time) pair: every byte before `offset` was written by `t`. */
export interface WriteStamp {
  offset: number;
  t: number;
}

/**
 * The rank wrapper's stamps file: one `<log size> <log mtime, seconds with 3 decimals>` line per sample, written while
 * the log grows. Returns the stamps and how many bytes of complete lines were read.
 */
export function parseStamps(text: string): WriteStamp[] {
  const out: WriteStamp[] = [];
  for (const line of text.split("\n")) {
    const m = /^(\d+) (\d+(?:\.\d+)?)$/.exec(line.trim());
    if (!m) continue;
    const offset = Number(m[1]);
    const t = Math.round(Number(m[2]) * 1000);
    if (Number.isSafeInteger(offset) && Number.isFinite(t)) out.push({ offset, t });
  }
  return out;
}

/**
 * When each line was written, from the byte offsets at which its newline lies. `stamps` bound the write times (the
 * caller passes the last position read before with its time, the wrapper's samples, and the file's size and mtime at
 * this read); between two stamps a line's time is interpolated by offset. Results are clamped to the reader's clock
 * and never go backwards.
 */
export function writeTimes(ends: readonly number[], stamps: readonly WriteStamp[], clock: ReadClock): number[] {
  const sorted = [...stamps].sort((a, b) => a.offset - b.offset || a.t - b.t);
  // Times never decrease with the offset (a later byte was not written earlier).
  let high = -Infinity;
  const mono = sorted.map((s) => ({ offset: s.offset, t: (high = Math.max(high, clamp(s.t, clock))) }));
  let j = 0;
  let last = clock.notBefore;
  return ends.map((end) => {
    while (j < mono.length && mono[j]!.offset < end) j++;
    const next = mono[j];
    const prev = j > 0 ? mono[j - 1] : undefined;
    let t: number;
    if (!next) t = clock.now;
    else if (!prev || next.offset === prev.offset) t = next.t;
    else t = prev.t + ((next.t - prev.t) * (end - prev.offset)) / (next.offset - prev.offset);
    last = Math.max(last, clamp(t, clock));
    return last;
  });
}

/** What one pass over a rank's report file (and, in regex mode, its log) found. */
export interface RankRead {
  /** Step samples, report file first, then log matches. */
  samples: StepSample[];
  checkpoints: Array<{ step: number; path: string; t: number; saveS: number | null }>;
  /** The first non-finite loss, if any. */
  nan: { step: number; t: number } | null;
  /** Where ingestion stands after this pass; empty when nothing moved. */
  cursor: RankCursor;
  /** Lines skipped in this pass (did not parse, or too long), and what was wrong with the first. */
  bad: number;
  firstBad: string | null;
  /** A file still holds bytes this pass did not get to (read budget spent). */
  pending: boolean;
}

export interface RankReadOptions {
  jobId: string;
  attempt: number;
  /** The attempt's launch: no report of it can be older. */
  startedAt: number;
  regex: RegExp | null;
  now: () => number;
  /** Bytes to read at most from each of the rank's files in this pass. */
  budgetBytes?: number;
}

/** The wrapper's write-time stamps of a rank's log (see the local executor). */
export function stampsPath(logPath: string): string {
  return `${logPath}.stamps`;
}

const excerpt = (line: string): string => JSON.stringify(line.length > 80 ? `${line.slice(0, 80)}…` : line);

/**
 * Reads what a rank appended since its cursor: SDK reports (times from the reports, clamped to the reader's clock)
 * and, in regex mode, log lines (times from when each line was written: the wrapper's stamps and the log's mtime,
 * never from when the server happened to read it). Never throws on file contents; bounded by `budgetBytes` per file.
 */
export async function readRank(r: RankRecord, opts: RankReadOptions): Promise<RankRead> {
  const clock = (): ReadClock => ({ now: opts.now(), notBefore: opts.startedAt });
  const maxBytes = opts.budgetBytes ?? maxReadBytes;
  const out: RankRead = { samples: [], checkpoints: [], nan: null, cursor: {}, bad: 0, firstBad: null, pending: false };
  const sample = (step: number, t: number, loss: number | null, tokens: number | null, computeS: number | null) => {
    if (loss !== null && !Number.isFinite(loss)) out.nan ??= { step, t };
    out.samples.push({ jobId: opts.jobId, attempt: opts.attempt, rank: r.rank, step, t, loss, tokens, computeS });
  };
  const reasons: string[] = [];
  const skip = (count: number, why: string): void => {
    out.bad += count;
    // Up to three kinds of bad line, so that the event names each whatever order one read met them in.
    const kind = why.split(":")[0] ?? why;
    if (reasons.length < 3 && !reasons.some((r) => r.startsWith(kind))) reasons.push(why);
    out.firstBad = reasons.join("; ");
  };

  const report = await readNewLines(r.reportPath, r.reportOffset, { maxBytes });
  if (report.overlong > 0) skip(report.overlong, `a line longer than ${maxLineBytes} bytes`);
  for (const line of report.lines) {
    const parsed = parseReportLine(line, clock());
    if (parsed === null) continue;
    if (parsed.kind === "bad") skip(1, `${parsed.why}: ${excerpt(line)}`);
    else if (parsed.kind === "step") sample(parsed.step, parsed.t, parsed.loss, parsed.tokens, parsed.computeS);
    else if (parsed.kind === "checkpoint") out.checkpoints.push(parsed);
  }
  if (report.offset !== r.reportOffset) out.cursor.reportOffset = report.offset;
  out.pending ||= report.size > report.offset;

  if (opts.regex) {
    const logOffset = r.logOffset ?? 0;
    const log = await readNewLines(r.logPath, logOffset, { maxBytes });
    if (log.offset !== logOffset) {
      const stampFile = stampsPath(r.logPath);
      const stampOffset = r.stampOffset ?? 0;
      const stampRead = await readNewLines(stampFile, stampOffset, { maxBytes, lineLimit: 256 });
      // Stamps grow with the log; the first one past what was read bounds the last lines from above.
      const read: Array<{ stamp: WriteStamp | undefined; end: number }> = [];
      let ahead: WriteStamp | undefined;
      for (const [i, line] of stampRead.lines.entries()) {
        const stamp = parseStamps(line)[0];
        if (stamp && stamp.offset > log.offset) {
          ahead = stamp;
          break;
        }
        read.push({ stamp, end: stampRead.ends[i]! });
      }
      let lines = log.lines;
      let ends = log.ends;
      let consumed = log.offset;
      const lastStamp = read.findLast((s) => s.stamp !== undefined)?.stamp;
      if (!ahead && stampRead.size > stampRead.offset && lastStamp && lastStamp.offset > logOffset) {
        // Stamps not read yet date the later lines: take only the lines the stamps read so far can date.
        const keep = ends.findIndex((e) => e > lastStamp.offset);
        if (keep >= 0) {
          lines = lines.slice(0, keep);
          ends = ends.slice(0, keep);
          consumed = keep > 0 ? ends[keep - 1]! : logOffset;
        }
      }
      const stamps: WriteStamp[] = [];
      let stampsUsed = stampOffset;
      for (const { stamp, end } of read) {
        if (stamp && stamp.offset > consumed) {
          ahead ??= stamp;
          break;
        }
        if (stamp && stamp.offset > logOffset) stamps.push(stamp);
        stampsUsed = end;
      }
      const anchors: WriteStamp[] = [
        { offset: logOffset, t: r.logT ?? opts.startedAt },
        ...stamps,
        ...(ahead ? [ahead] : []),
        ...(log.mtimeMs !== null ? [{ offset: log.size, t: log.mtimeMs }] : []),
      ];
      const times = writeTimes([...ends, consumed], anchors, clock());
      lines.forEach((line, i) => {
        const p = parseLogProgress(line.length > maxLineBytes ? line.slice(0, maxLineBytes) : line, opts.regex!);
        if (p) sample(p.step, times[i]!, p.loss, null, null);
      });
      if (consumed !== logOffset) {
        out.cursor.logOffset = consumed;
        out.cursor.logT = times[times.length - 1]!;
      }
      if (stampsUsed !== stampOffset) out.cursor.stampOffset = stampsUsed;
      out.pending ||= log.size > consumed;
    }
  }
  if (out.bad > 0) out.cursor.badReports = (r.badReports ?? 0) + out.bad;
  return out;
}

/**
 * The mtime of the rank's report file (and log, in regex mode) when it holds bytes past the read cursor, else null: a
 * file still growing ahead of the reader shows the rank alive even before its lines are read.
 */
export async function unreadActivity(r: RankRecord, regexMode: boolean): Promise<number | null> {
  const files: Array<[string, number]> = [[r.reportPath, r.reportOffset]];
  if (regexMode) files.push([r.logPath, r.logOffset ?? 0]);
  let at: number | null = null;
  for (const [file, offset] of files) {
    const st = await stat(file).catch(() => null);
    if (st && st.size > offset) at = Math.max(at ?? -Infinity, st.mtimeMs);
  }
  return at;
}
