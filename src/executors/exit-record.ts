import { readFileSync } from "node:fs";
import { constants as osConstants } from "node:os";
import type { RankStatus } from "./port.js";

/**
 * A rank's exit record, written whole (tmp + rename) by whatever led the rank's process group on its host (the local
 * wrapper, the node agent): `{"code": C, "t": ms}`, death by signal N recorded as 128+N like a POSIX shell does.
 */
export interface ExitRecord {
  code: number;
  t: number;
}

const signalNames = new Map<number, string>(
  Object.entries(osConstants.signals).map(([name, num]) => [num as number, name]),
);

export function readExitRecord(file: string): ExitRecord | null {
  try {
    const parsed = JSON.parse(readFileSync(file, "utf8")) as Partial<ExitRecord> | null;
    if (!parsed || typeof parsed.code !== "number" || !Number.isFinite(parsed.code)) return null;
    return { code: parsed.code, t: typeof parsed.t === "number" && Number.isFinite(parsed.t) ? parsed.t : Date.now() };
  } catch {
    return null;
  }
}

export function exitedStatus(rank: number, record: ExitRecord): RankStatus {
  const bySignal = record.code > 128 && record.code < 128 + 65 ? signalNames.get(record.code - 128) : undefined;
  return bySignal
    ? { rank, state: "exited", code: null, signal: bySignal, at: record.t }
    : { rank, state: "exited", code: record.code, signal: null, at: record.t };
}
