import { open } from "node:fs/promises";

/** Reads the complete lines appended to a file since `offset`; a partial last line waits for the next read. */
export async function readNewLines(
  file: string,
  offset: number,
  maxBytes = 4 << 20,
): Promise<{ lines: string[]; offset: number }> {
  let handle;
  try {
    handle = await open(file, "r");
  } catch {
    return { lines: [], offset };
  }
  try {
    const { size } = await handle.stat();
    if (size <= offset) return { lines: [], offset };
    const length = Math.min(size - offset, maxBytes);
    const buf = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buf, 0, length, offset);
    const lastNewline = buf.subarray(0, bytesRead).lastIndexOf(0x0a);
    if (lastNewline < 0) return { lines: [], offset };
    const text = buf.subarray(0, lastNewline).toString("utf8");
    return { lines: text.split("\n"), offset: offset + lastNewline + 1 };
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

function finiteOrNull(v: unknown): number | null {
  if (typeof v === "number" && Number.isFinite(v)) return v;
  return null;
}

/** Parses one SDK report line; malformed lines are dropped (a rank must never be able to wedge the supervisor). */
export function parseReportLine(line: string): ReportLine | null {
  if (line.trim() === "") return null;
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return null;
  }
  const t = typeof raw.t === "number" ? raw.t * 1000 : Date.now();
  const step = Number.isInteger(raw.step) ? (raw.step as number) : null;
  switch (raw.kind) {
    case "step":
      if (step === null) return null;
      return {
        kind: "step",
        t,
        step,
        loss: typeof raw.loss === "string" ? Number.NaN : finiteOrNull(raw.loss),
        tokens: finiteOrNull(raw.tokens),
        computeS: finiteOrNull(raw.compute_s),
      };
    case "checkpoint":
      if (step === null || typeof raw.path !== "string") return null;
      return { kind: "checkpoint", t, step, path: raw.path, saveS: finiteOrNull(raw.save_s) };
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
  const step = m?.groups?.step;
  if (!m || step === undefined) return null;
  const loss = m.groups?.loss !== undefined ? Number(m.groups.loss) : null;
  return { step: Number(step), loss };
}
