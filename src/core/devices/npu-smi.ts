/**
 * Parsers for Huawei Ascend telemetry from `npu-smi`: the `npu-smi info` box table and the `Key : Value` views
 * (`npu-smi info -i <id> -c <chip> -t health|ecc|board|usages`), plus a health summary for probes. Pure.
 */
import {
  DeviceOutputError,
  worst,
  type DeviceHealth,
  type DeviceHealthEntry,
  type GradedReason,
} from "./nvidia-smi.js";

export const NpuHealth = {
  Ok: "OK",
  Warning: "Warning",
  Alarm: "Alarm",
  Critical: "Critical",
  Unknown: "UNKNOWN",
} as const;
export type NpuHealth = (typeof NpuHealth)[keyof typeof NpuHealth];

const healthWords = new Map<string, NpuHealth>(Object.values(NpuHealth).map((h) => [h.toLowerCase(), h]));

/** One chip of `npu-smi info`: the NPU row (name, health, power, temperature) joined with its chip row. */
export interface NpuChip {
  npuId: number;
  chipId: number;
  name: string;
  health: NpuHealth;
  powerW: number | null;
  temperatureC: number | null;
  hugepagesUsed: number | null;
  hugepagesTotal: number | null;
  busId: string | null;
  aicorePercent: number | null;
  memoryUsedMB: number | null;
  memoryTotalMB: number | null;
  hbmUsedMB: number | null;
  hbmTotalMB: number | null;
}

export interface NpuProcess {
  npuId: number;
  chipId: number;
  pid: number;
  name: string;
  memoryMB: number | null;
}

export interface NpuSmiInfo {
  version: string | null;
  chips: NpuChip[];
  processes: NpuProcess[];
}

const tool = "npu-smi info";

function cellsOf(line: string): string[] | null {
  const t = line.trim();
  if (!t.startsWith("|") || !t.endsWith("|")) return null;
  return t
    .slice(1, -1)
    .split("|")
    .map((c) => c.trim());
}

/** "93.6  37  0 / 0" -> ["93.6", "37", "0/0"]. */
function tokens(cell: string): string[] {
  return cell
    .replace(/\s*\/\s*/g, "/")
    .split(/\s+/)
    .filter((t) => t !== "");
}

function num(value: string | undefined): number | null {
  if (value === undefined || value === "-" || value === "" || /^N\/?A$/i.test(value)) return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}

function pair(value: string | undefined): [number | null, number | null] {
  if (value === undefined) return [null, null];
  const [a, b] = value.split("/");
  return [num(a), num(b)];
}

function parseHealthWord(word: string): NpuHealth | null {
  return healthWords.get(word.trim().toLowerCase()) ?? null;
}

const busIdPattern = /^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]$/;

/** Parses the `npu-smi info` table: two rows per chip (NPU row, then chip row), then the process table. */
export function parseNpuSmiInfo(text: string): NpuSmiInfo {
  const chips: NpuChip[] = [];
  const processes: NpuProcess[] = [];
  let version: string | null = null;
  let inProcesses = false;
  let pending: { line: number; npuId: number; name: string; health: NpuHealth; rest: string[] } | null = null;

  text.split(/\r?\n/).forEach((raw, i) => {
    const lineNo = i + 1;
    const cells = cellsOf(raw);
    if (!cells) return;
    const first = cells[0] ?? "";
    const versionMatch = /npu-smi\s+(\S+)/.exec(first);
    if (versionMatch && cells.length === 1) {
      version = versionMatch[1] ?? null;
      return;
    }
    if (cells.some((c) => /^Process id$/i.test(c))) {
      inProcesses = true;
      return;
    }
    if (/^NPU\s+Name$/i.test(first) || /^Chip$/i.test(first) || /^No running processes/i.test(first)) return;

    if (inProcesses) {
      const [ids, pid, name, memory] = cells;
      const [npuId, chipId] = tokens(ids ?? "").map(Number);
      if (npuId === undefined || chipId === undefined || pid === undefined || !/^\d+$/.test(pid)) return;
      processes.push({ npuId, chipId, pid: Number(pid), name: name ?? "", memoryMB: num(memory) });
      return;
    }

    if (cells.length < 3) return;
    const health = parseHealthWord(cells[1] ?? "");
    if (health) {
      const [id, ...nameParts] = tokens(first);
      if (id === undefined || !/^\d+$/.test(id)) {
        throw new DeviceOutputError(tool, lineNo, raw.trim(), "expected an NPU id before the name");
      }
      pending = { line: lineNo, npuId: Number(id), name: nameParts.join(" "), health, rest: tokens(cells[2] ?? "") };
      return;
    }
    const busCell = cells[1] ?? "";
    if (busIdPattern.test(busCell) || /^N\/?A$/i.test(busCell)) {
      if (!pending) throw new DeviceOutputError(tool, lineNo, raw.trim(), "chip row without an NPU row above it");
      const [chip] = tokens(first);
      if (chip === undefined || !/^\d+$/.test(chip)) {
        throw new DeviceOutputError(tool, lineNo, raw.trim(), "expected a chip id");
      }
      const [power, temp, hugepages] = pending.rest;
      const [aicore, memory, hbm] = tokens(cells[2] ?? "");
      const [hugepagesUsed, hugepagesTotal] = pair(hugepages);
      const [memoryUsedMB, memoryTotalMB] = pair(memory);
      const [hbmUsedMB, hbmTotalMB] = pair(hbm);
      chips.push({
        npuId: pending.npuId,
        chipId: Number(chip),
        name: pending.name,
        health: pending.health,
        powerW: num(power),
        temperatureC: num(temp),
        hugepagesUsed,
        hugepagesTotal,
        busId: busIdPattern.test(busCell) ? busCell : null,
        aicorePercent: num(aicore),
        memoryUsedMB,
        memoryTotalMB,
        hbmUsedMB,
        hbmTotalMB,
      });
      return;
    }
    // A row whose second cell is neither a health word nor a bus id: an NPU row with a health word we do not know.
    if (/^\d+\s+\S/.test(first)) {
      throw new DeviceOutputError(
        tool,
        lineNo,
        raw.trim(),
        `unknown health "${cells[1] ?? ""}" (expected one of ${Object.values(NpuHealth).join(", ")})`,
      );
    }
  });
  return { version, chips, processes };
}

/**
 * Parses `Key : Value` output. A line whose text starts with `:` continues the previous key, so every key maps to
 * its list of values in order.
 */
export function parseNpuSmiKeyValues(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let last: string[] | null = null;
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === "") return;
    if (line.startsWith(":")) {
      if (!last) throw new DeviceOutputError("npu-smi", i + 1, line, "continuation line without a key above it");
      last.push(line.slice(1).trim());
      return;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) {
      last = null;
      return;
    }
    const key = line.slice(0, colon).trim();
    const values = [line.slice(colon + 1).trim()];
    out.set(key, values);
    last = values;
  });
  return out;
}

export interface NpuHealthReport {
  health: NpuHealth;
  errorCodes: string[];
  /** One entry per line of `Error Information`, without the NA placeholder. */
  errorInformation: string[];
}

const isNa = (v: string) => v === "" || /^N\/?A$/i.test(v);

/** Parses `npu-smi info -i <id> -c <chip> -t health`. */
export function parseNpuHealth(text: string): NpuHealthReport {
  const kv = parseNpuSmiKeyValues(text);
  const status = kv.get("Health Status")?.[0] ?? kv.get("Health")?.[0];
  if (status === undefined) {
    throw new DeviceOutputError("npu-smi -t health", 1, text.trim().split("\n")[0] ?? "", 'no "Health Status" line');
  }
  const health = parseHealthWord(status);
  if (!health) {
    throw new DeviceOutputError(
      "npu-smi -t health",
      1,
      status,
      `unknown health (expected one of ${Object.values(NpuHealth).join(", ")})`,
    );
  }
  const errorCodes = (kv.get("Error Code") ?? []).flatMap((v) => v.split(/[\s,]+/)).filter((c) => !isNa(c));
  const errorInformation = (kv.get("Error Information") ?? []).filter((v) => !isNa(v));
  return { health, errorCodes, errorInformation };
}

/** Error information that means the chip is gone, whatever the health word says. */
const hardInformation = /heart ?beat lost|multi bit ecc|UCE/i;

export interface NpuHealthInput {
  chips: readonly NpuChip[];
  /** Detailed health per chip, when the probe asked for it. */
  details?: readonly (NpuHealthReport & { npuId: number; chipId: number })[];
}

export interface NpuHealthOptions {
  maxTemperatureC?: number;
}

/**
 * Summarises one node's Ascend devices. Failed: Alarm or Critical health, or error information such as a lost heart
 * beat. Degraded: Warning, UNKNOWN (the chip did not answer), too hot.
 */
export function healthFromNpu(input: NpuHealthInput, options: NpuHealthOptions = {}): DeviceHealth {
  const maxTemperatureC = options.maxTemperatureC ?? 95;
  const devices: DeviceHealthEntry[] = input.chips.map((chip) => {
    const reasons: string[] = [];
    const statuses: DeviceHealthEntry["status"][] = [];
    const graded: GradedReason[] = [];
    const say = (status: DeviceHealthEntry["status"], reason: string) => {
      statuses.push(status);
      reasons.push(reason);
      graded.push({ status, reason });
    };
    const detail = input.details?.find((d) => d.npuId === chip.npuId && d.chipId === chip.chipId);
    const health = detail?.health ?? chip.health;
    // Error codes and information go with the health word: as bad as it is (an Alarm's codes are the alarm).
    const healthStatus: DeviceHealthEntry["status"] =
      health === "Alarm" || health === "Critical"
        ? "failed"
        : health === "Warning" || health === "UNKNOWN"
          ? "degraded"
          : "ok";
    if (healthStatus !== "ok") say(healthStatus, `health ${health}`);
    if (detail && detail.errorCodes.length > 0) say(healthStatus, `error codes ${detail.errorCodes.join(" ")}`);
    for (const info of detail?.errorInformation ?? []) say(hardInformation.test(info) ? "failed" : healthStatus, info);
    if (chip.temperatureC !== null && chip.temperatureC >= maxTemperatureC) {
      say("degraded", `temperature ${chip.temperatureC} C (limit ${maxTemperatureC} C)`);
    }
    return {
      index: chip.npuId,
      id: chip.busId ?? `npu${chip.npuId}-chip${chip.chipId}`,
      status: worst(statuses),
      reasons,
      graded,
    };
  });
  const graded = devices.flatMap((d) =>
    (d.graded ?? []).map((g) => ({ status: g.status, reason: `NPU ${d.index} (${d.id}): ${g.reason}` })),
  );
  return {
    status: worst(devices.map((d) => d.status)),
    reasons: graded.map((g) => g.reason),
    graded,
    devices,
  };
}
