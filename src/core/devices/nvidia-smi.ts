/**
 * Parsers for NVIDIA device telemetry (nvidia-smi CSV queries and kernel-log Xid lines) and a health summary that
 * health probes turn into cordon decisions. Pure: the probe runs the commands and passes their output in.
 */

/** A device probe's verdict: failed means drain the node now, degraded means keep watching (strike, not cordon). */
export const DeviceHealthStatus = { Ok: "ok", Degraded: "degraded", Failed: "failed" } as const;
export type DeviceHealthStatus = (typeof DeviceHealthStatus)[keyof typeof DeviceHealthStatus];

export interface DeviceHealthEntry {
  /** Device index as the vendor tool numbers it (nvidia-smi index, npu-smi NPU id). */
  index: number;
  id: string;
  status: DeviceHealthStatus;
  reasons: string[];
  /** Each reason with its own status (a device's status is the worst of them). */
  graded?: GradedReason[];
}

/** One reason and what it alone means for the device. */
export interface GradedReason {
  status: DeviceHealthStatus;
  reason: string;
}

export interface DeviceHealth {
  status: DeviceHealthStatus;
  /** Every reason, each prefixed with the device it concerns. */
  reasons: string[];
  /** The same reasons (same order, same prefixes), each with its own status: a probe grades them one by one. */
  graded: GradedReason[];
  devices: DeviceHealthEntry[];
}

/** Output the parsers cannot read: names the tool, the line and what was expected. */
export class DeviceOutputError extends Error {
  constructor(
    readonly tool: string,
    readonly line: number,
    readonly text: string,
    problem: string,
  ) {
    super(`${tool} output line ${line}: ${problem}: ${JSON.stringify(text.slice(0, 200))}`);
    this.name = "DeviceOutputError";
  }
}

export const nvidiaInventoryFields = [
  "index",
  "uuid",
  "name",
  "driver_version",
  "utilization.gpu",
  "memory.used",
  "memory.total",
  "temperature.gpu",
  "clocks.current.graphics",
  "power.draw",
] as const;

export const nvidiaHealthFields = [
  "index",
  "uuid",
  "pci.bus_id",
  "ecc.errors.corrected.volatile.total",
  "ecc.errors.uncorrected.volatile.total",
  "ecc.errors.uncorrected.aggregate.total",
  "retired_pages.pending",
  "clocks_throttle_reasons.hw_slowdown",
  "clocks_throttle_reasons.hw_thermal_slowdown",
] as const;

export const nvidiaRemappedRowsFields = ["gpu_uuid", "remapped_rows.pending", "remapped_rows.failure"] as const;

/** Arguments for `nvidia-smi` that produce the output the parsers below read. */
export function nvidiaSmiArgs(query: "inventory" | "health" | "remapped-rows"): string[] {
  switch (query) {
    case "inventory":
      return [`--query-gpu=${nvidiaInventoryFields.join(",")}`, "--format=csv,noheader,nounits"];
    case "health":
      return [`--query-gpu=${nvidiaHealthFields.join(",")}`, "--format=csv,noheader,nounits"];
    case "remapped-rows":
      return [`--query-remapped-rows=${nvidiaRemappedRowsFields.join(",")}`, "--format=csv,noheader,nounits"];
  }
}

export interface NvidiaGpu {
  index: number;
  uuid: string;
  name: string;
  driverVersion: string | null;
  utilizationPercent: number | null;
  memoryUsedMiB: number | null;
  memoryTotalMiB: number | null;
  temperatureC: number | null;
  graphicsClockMHz: number | null;
  powerDrawW: number | null;
}

export interface NvidiaHealthRow {
  index: number;
  uuid: string;
  busId: string | null;
  eccCorrectedVolatile: number | null;
  eccUncorrectedVolatile: number | null;
  eccUncorrectedAggregate: number | null;
  retiredPagesPending: boolean | null;
  hwSlowdown: boolean | null;
  hwThermalSlowdown: boolean | null;
}

export interface NvidiaRemappedRows {
  uuid: string;
  pending: boolean | null;
  failure: boolean | null;
}

/** A GPU that nvidia-smi could not reach, e.g. "Unable to determine the device handle for GPU ...: GPU is lost." */
export interface NvidiaLostGpu {
  busId: string;
  message: string;
}

export interface NvidiaQueryResult<Row> {
  rows: Row[];
  lost: NvidiaLostGpu[];
}

const notAvailable = new Set(["[Not Supported]", "[N/A]", "N/A", "[Unknown Error]", "[Insufficient Permissions]", ""]);

function nullable(value: string): string | null {
  return notAvailable.has(value) ? null : value;
}

const lostGpuLine = /Unable to determine the device handle for (?:GPU|gpu) (?<bus>[0-9A-Fa-f:.]+): (?<message>.*)$/;

/** Splits `nvidia-smi --format=csv,noheader` output into rows of fields; lost-GPU lines are collected apart. */
function csvRows(
  tool: string,
  text: string,
  width: number,
): { rows: { line: number; fields: string[] }[]; lost: NvidiaLostGpu[] } {
  const rows: { line: number; fields: string[] }[] = [];
  const lost: NvidiaLostGpu[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === "") return;
    const gone = lostGpuLine.exec(line);
    if (gone?.groups) {
      lost.push({ busId: gone.groups.bus ?? "", message: (gone.groups.message ?? "").trim() });
      return;
    }
    if (/^No devices were found/i.test(line)) return;
    const fields = line.split(",").map((f) => f.trim());
    if (fields.length !== width) {
      throw new DeviceOutputError(tool, i + 1, line, `expected ${width} comma-separated fields, got ${fields.length}`);
    }
    rows.push({ line: i + 1, fields });
  });
  return { rows, lost };
}

function numberField(tool: string, line: number, name: string, value: string): number | null {
  const v = nullable(value);
  if (v === null) return null;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new DeviceOutputError(tool, line, value, `${name} is not a number`);
  return n;
}

function indexField(tool: string, line: number, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new DeviceOutputError(tool, line, value, "index is not a device number");
  return n;
}

const truthy = new Set(["active", "yes", "true", "1"]);
const falsy = new Set(["not active", "no", "false", "0"]);

function flagField(tool: string, line: number, name: string, value: string): boolean | null {
  const v = nullable(value);
  if (v === null) return null;
  const lower = v.toLowerCase();
  if (truthy.has(lower)) return true;
  if (falsy.has(lower)) return false;
  throw new DeviceOutputError(tool, line, value, `${name} is neither Active/Yes nor Not Active/No`);
}

/** Parses `nvidia-smi` with `nvidiaSmiArgs("inventory")`. */
export function parseNvidiaInventory(text: string): NvidiaQueryResult<NvidiaGpu> {
  const tool = "nvidia-smi --query-gpu";
  const { rows, lost } = csvRows(tool, text, nvidiaInventoryFields.length);
  return {
    lost,
    rows: rows.map(({ line, fields }) => {
      const [index, uuid, name, driver, util, memUsed, memTotal, temp, clock, power] = fields as [
        string,
        string,
        string,
        string,
        string,
        string,
        string,
        string,
        string,
        string,
      ];
      return {
        index: indexField(tool, line, index),
        uuid,
        name,
        driverVersion: nullable(driver),
        utilizationPercent: numberField(tool, line, "utilization.gpu", util),
        memoryUsedMiB: numberField(tool, line, "memory.used", memUsed),
        memoryTotalMiB: numberField(tool, line, "memory.total", memTotal),
        temperatureC: numberField(tool, line, "temperature.gpu", temp),
        graphicsClockMHz: numberField(tool, line, "clocks.current.graphics", clock),
        powerDrawW: numberField(tool, line, "power.draw", power),
      };
    }),
  };
}

/** Parses `nvidia-smi` with `nvidiaSmiArgs("health")`. */
export function parseNvidiaHealth(text: string): NvidiaQueryResult<NvidiaHealthRow> {
  const tool = "nvidia-smi --query-gpu";
  const { rows, lost } = csvRows(tool, text, nvidiaHealthFields.length);
  return {
    lost,
    rows: rows.map(({ line, fields }) => {
      const [index, uuid, bus, corrected, uncorrected, aggregate, retired, slowdown, thermal] = fields as [
        string,
        string,
        string,
        string,
        string,
        string,
        string,
        string,
        string,
      ];
      return {
        index: indexField(tool, line, index),
        uuid,
        busId: nullable(bus),
        eccCorrectedVolatile: numberField(tool, line, "ecc.errors.corrected.volatile.total", corrected),
        eccUncorrectedVolatile: numberField(tool, line, "ecc.errors.uncorrected.volatile.total", uncorrected),
        eccUncorrectedAggregate: numberField(tool, line, "ecc.errors.uncorrected.aggregate.total", aggregate),
        retiredPagesPending: flagField(tool, line, "retired_pages.pending", retired),
        hwSlowdown: flagField(tool, line, "clocks_throttle_reasons.hw_slowdown", slowdown),
        hwThermalSlowdown: flagField(tool, line, "clocks_throttle_reasons.hw_thermal_slowdown", thermal),
      };
    }),
  };
}

/** Parses `nvidia-smi` with `nvidiaSmiArgs("remapped-rows")`. */
export function parseNvidiaRemappedRows(text: string): NvidiaQueryResult<NvidiaRemappedRows> {
  const tool = "nvidia-smi --query-remapped-rows";
  const { rows, lost } = csvRows(tool, text, nvidiaRemappedRowsFields.length);
  return {
    lost,
    rows: rows.map(({ line, fields }) => {
      const [uuid, pending, failure] = fields as [string, string, string];
      return {
        uuid,
        pending: flagField(tool, line, "remapped_rows.pending", pending),
        failure: flagField(tool, line, "remapped_rows.failure", failure),
      };
    }),
  };
}

/**
 * What an Xid means for the device. hard: drain the node (DCGM treats these as failures); restart: the device is fine
 * after an application restart; application: the program's fault, not the device's. Unlisted Xids count as device
 * errors that are not drain-worthy on their own.
 */
export const XidKind = { Hard: "hard", Restart: "restart", Application: "application", Other: "other" } as const;
export type XidKind = (typeof XidKind)[keyof typeof XidKind];

export const nvidiaXidCatalog: Readonly<Record<number, { kind: XidKind; meaning: string }>> = {
  13: { kind: "application", meaning: "graphics engine exception (application fault)" },
  31: { kind: "application", meaning: "GPU memory page fault (application fault)" },
  43: { kind: "application", meaning: "GPU stopped processing (application fault)" },
  45: { kind: "application", meaning: "preemptive cleanup after an earlier error" },
  48: { kind: "hard", meaning: "double-bit ECC error" },
  63: { kind: "other", meaning: "ECC page retirement or row remapping recorded" },
  64: { kind: "hard", meaning: "row-remapping failure" },
  68: { kind: "application", meaning: "video processor exception (application fault)" },
  74: { kind: "hard", meaning: "NVLink error" },
  79: { kind: "hard", meaning: "GPU fallen off the bus" },
  92: { kind: "other", meaning: "high single-bit ECC error rate" },
  94: { kind: "restart", meaning: "contained ECC error (an application restart suffices)" },
  95: { kind: "hard", meaning: "uncontained ECC error" },
  109: { kind: "application", meaning: "context switch timeout (application fault)" },
  119: { kind: "hard", meaning: "GSP RPC timeout" },
  120: { kind: "hard", meaning: "GSP error" },
  140: { kind: "hard", meaning: "unrecovered ECC error" },
};

export function xidKind(xid: number): XidKind {
  return nvidiaXidCatalog[xid]?.kind ?? "other";
}

export interface XidEvent {
  /** As the kernel prints it, e.g. "0000:10:1c" (domain:bus:device). */
  pci: string;
  xid: number;
  kind: XidKind;
  pid: number | null;
  processName: string | null;
  /** The driver's text after the pid and name fields. */
  message: string;
  line: string;
}

const xidLine =
  /NVRM: Xid \((?:PCI:)?(?<pci>[^)]+)\): (?<xid>\d+)(?:, pid=(?<pid>'[^']*'|[^,]*))?(?:, name=(?<name>[^,]*))?(?:, (?<message>.*))?$/;

/** Xid events from kernel log lines (dmesg, journalctl -k); other lines are ignored. */
export function parseXidLines(lines: readonly string[]): XidEvent[] {
  const out: XidEvent[] = [];
  for (const raw of lines) {
    const line = raw.trim();
    const m = xidLine.exec(line);
    if (!m?.groups) continue;
    const xid = Number(m.groups.xid);
    const pidText = (m.groups.pid ?? "").replace(/'/g, "");
    const name = m.groups.name?.trim();
    out.push({
      pci: m.groups.pci ?? "",
      xid,
      kind: xidKind(xid),
      pid: /^\d+$/.test(pidText) ? Number(pidText) : null,
      processName: name && name !== "<unknown>" ? name : null,
      message: (m.groups.message ?? "").trim(),
      line,
    });
  }
  return out;
}

/**
 * A comparable key for a PCI address in either spelling: the kernel's "0000:10:1c" (domain:bus:device) or
 * nvidia-smi's "00000000:10:1C.0" (domain:bus:device.function).
 */
export function pciKey(address: string): string | null {
  const m = /^(?:PCI:)?(?:([0-9a-f]{4,8}):)?([0-9a-f]{2}):([0-9a-f]{2})(?:\.[0-7])?$/i.exec(address.trim());
  if (!m) return null;
  return `${parseInt(m[1] ?? "0", 16)}:${(m[2] ?? "").toLowerCase()}:${(m[3] ?? "").toLowerCase()}`;
}

export interface NvidiaHealthInput {
  health: NvidiaQueryResult<NvidiaHealthRow>;
  remappedRows?: readonly NvidiaRemappedRows[];
  /** Xid events since the last probe. */
  xids?: readonly XidEvent[];
  inventory?: readonly NvidiaGpu[];
}

export interface NvidiaHealthOptions {
  /** At or above this temperature a GPU is degraded. */
  maxTemperatureC?: number;
  /** Corrected ECC errors since boot above which a GPU is degraded. */
  maxCorrectedEcc?: number;
}

/**
 * Summarises one node's NVIDIA devices. Failed (drain now): a lost GPU, uncorrected volatile ECC errors, a row-remap
 * failure, a drain-worthy Xid. Degraded: pending page retirement or row remap (needs a GPU reset), hardware slowdown,
 * too hot, many corrected ECC errors, a non-application Xid that is not drain-worthy. Application Xids are ignored.
 */
export function healthFromNvidia(input: NvidiaHealthInput, options: NvidiaHealthOptions = {}): DeviceHealth {
  const maxTemperatureC = options.maxTemperatureC ?? 90;
  const maxCorrectedEcc = options.maxCorrectedEcc ?? 1000;
  const devices: DeviceHealthEntry[] = [];
  const byPci = new Map<string, DeviceHealthEntry>();
  const unplaced: { status: DeviceHealthStatus; reason: string }[] = [];

  for (const row of input.health.rows) {
    const entry: DeviceHealthEntry = { index: row.index, id: row.uuid, status: "ok", reasons: [] };
    const fail = (reason: string) => mark(entry, "failed", reason);
    const degrade = (reason: string) => mark(entry, "degraded", reason);
    if ((row.eccUncorrectedVolatile ?? 0) > 0)
      fail(`${row.eccUncorrectedVolatile} uncorrected ECC error(s) since boot`);
    if ((row.eccCorrectedVolatile ?? 0) > maxCorrectedEcc)
      degrade(`${row.eccCorrectedVolatile} corrected ECC errors since boot (limit ${maxCorrectedEcc})`);
    if (row.retiredPagesPending) degrade("page retirement pending (needs a GPU reset)");
    if (row.hwSlowdown) degrade("hardware slowdown active");
    if (row.hwThermalSlowdown) degrade("hardware thermal slowdown active");
    const remap = input.remappedRows?.find((r) => r.uuid === row.uuid);
    if (remap?.failure) fail("row remapping failed");
    if (remap?.pending) degrade("row remapping pending (needs a GPU reset)");
    const gpu = input.inventory?.find((g) => g.uuid === row.uuid);
    if (gpu?.temperatureC !== null && gpu?.temperatureC !== undefined && gpu.temperatureC >= maxTemperatureC)
      degrade(`temperature ${gpu.temperatureC} C (limit ${maxTemperatureC} C)`);
    devices.push(entry);
    const key = row.busId ? pciKey(row.busId) : null;
    if (key) byPci.set(key, entry);
  }

  for (const event of input.xids ?? []) {
    if (event.kind === "application") continue;
    const meaning = nvidiaXidCatalog[event.xid]?.meaning ?? "device error";
    const reason = `Xid ${event.xid}: ${meaning}`;
    const status: DeviceHealthStatus = event.kind === "hard" ? "failed" : "degraded";
    const key = pciKey(event.pci);
    const entry = key ? byPci.get(key) : undefined;
    if (entry) mark(entry, status, reason);
    else unplaced.push({ status, reason: `${reason} (PCI ${event.pci})` });
  }

  for (const gone of input.health.lost)
    unplaced.push({ status: "failed", reason: `GPU ${gone.busId}: ${gone.message}` });

  const graded: GradedReason[] = [
    ...devices.flatMap((d) =>
      (d.graded ?? []).map((g) => ({ status: g.status, reason: `GPU ${d.index} (${d.id}): ${g.reason}` })),
    ),
    ...unplaced,
  ];
  const statuses = [...devices.map((d) => d.status), ...unplaced.map((u) => u.status)];
  return { status: worst(statuses), reasons: graded.map((g) => g.reason), graded, devices };
}

const severity: Record<DeviceHealthStatus, number> = { ok: 0, degraded: 1, failed: 2 };

export function worst(statuses: readonly DeviceHealthStatus[]): DeviceHealthStatus {
  return statuses.reduce<DeviceHealthStatus>((a, b) => (severity[b] > severity[a] ? b : a), "ok");
}

function mark(entry: DeviceHealthEntry, status: DeviceHealthStatus, reason: string): void {
  entry.reasons.push(reason);
  (entry.graded ??= []).push({ status, reason });
  if (severity[status] > severity[entry.status]) entry.status = status;
}
