/**
 * Node health from a probe's report (agent/health_probe.py prints it on the host; the executor brings it back): the
 * raw outputs of nvidia-smi, the kernel log's Xid lines, npu-smi and hccn_tool, and the host's free disk and memory,
 * parsed with the device parsers and turned into findings. Each finding carries a cause from the incident vocabulary
 * (core/classify.ts: device, network, host...) and a grade: fatal (cordon the node now), degraded (a strike),
 * info (said, nothing done). Pure: no I/O, no clock.
 */
import type { Cause } from "./classify.js";
import { parseHccnLink } from "./devices/hccn.js";
import { healthFromNpu, parseNpuHealth, parseNpuSmiInfo, type NpuHealthReport } from "./devices/npu-smi.js";
import {
  healthFromNvidia,
  parseNvidiaHealth,
  parseNvidiaInventory,
  parseNvidiaRemappedRows,
  parseXidLines,
  type DeviceHealth,
  type DeviceHealthStatus,
  type NvidiaGpu,
  type NvidiaRemappedRows,
} from "./devices/nvidia-smi.js";

export const HealthGrade = { Fatal: "fatal", Degraded: "degraded", Info: "info" } as const;
export type HealthGrade = (typeof HealthGrade)[keyof typeof HealthGrade];

/** A node's health after a probe: unknown when the probe itself did not answer (nothing is done about it). */
export const NodeHealthStatus = { Ok: "ok", Degraded: "degraded", Fatal: "fatal", Unknown: "unknown" } as const;
export type NodeHealthStatus = (typeof NodeHealthStatus)[keyof typeof NodeHealthStatus];

export interface HealthFinding {
  grade: HealthGrade;
  cause: Cause;
  /** What said it: nvidia-smi, kernel-log, npu-smi, hccn_tool, disk, memory, probe. */
  source: string;
  /** One line for a person, e.g. "GPU 1 (GPU-9a1d...): 3 uncorrected ECC error(s) since boot". */
  message: string;
}

/** One tool command as the probe ran it. */
export interface ProbeCommand {
  tool: string;
  query: string;
  argv: string[];
  code: number | null;
  stdout: string;
  stderr: string;
  error: string | null;
}

export interface ProbeReport {
  node: string;
  t: number;
  /** The per-host tools folder put first on PATH (SWITCHYARD_HOST_TOOLS), or null. */
  hostTools: string | null;
  commands: ProbeCommand[];
  disk: Array<{ path: string; role: string; free?: number; total?: number; error?: string }>;
  memory: { available: number; total: number } | null;
}

export interface HealthThresholds {
  /** Free space below this (MiB) on a checkpoint folder's or the home's filesystem is degraded. */
  minFreeDiskMiB: number;
  /** Available memory below this (MiB) is degraded. */
  minFreeMemoryMiB: number;
  maxGpuTemperatureC?: number;
  maxNpuTemperatureC?: number;
}

export const defaultHealthThresholds: HealthThresholds = { minFreeDiskMiB: 1024, minFreeMemoryMiB: 256 };

export interface HealthVerdict {
  status: NodeHealthStatus;
  findings: HealthFinding[];
  /** The tools' raw outputs, cut to a few KB, for `nodes describe`. */
  excerpt: string;
}

/** The report of a probe that could not be read: names what was wrong. */
export class ProbeOutputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProbeOutputError";
  }
}

const maxExcerpt = 4096;
const maxFindings = 64;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const str = (v: unknown): string => (typeof v === "string" ? v : "");

export const probeReportBegin = "switchyard-health-report-begin";
export const probeReportEnd = "switchyard-health-report-end";

/**
 * Reads the probe's stdout: base64 lines between the begin and end markers (srun --label cuts long lines, so the
 * probe never prints one), or a single JSON line.
 */
export function parseProbeReport(stdout: string): ProbeReport {
  const lines = stdout.split("\n").map((l) => l.trim());
  const begin = lines.indexOf(probeReportBegin);
  const end = lines.indexOf(probeReportEnd, begin + 1);
  let text: string;
  if (begin >= 0) {
    if (end < 0) throw new ProbeOutputError("the probe's report was cut short (no end marker)");
    const data = lines.slice(begin + 1, end).join("");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(data)) throw new ProbeOutputError("the probe's report is not base64");
    text = Buffer.from(data, "base64").toString("utf8");
  } else {
    const line = lines.reverse().find((l) => l.startsWith("{"));
    if (line === undefined) throw new ProbeOutputError("the probe printed no report");
    text = line;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ProbeOutputError(`the probe's report is not JSON: ${(err as Error).message}`);
  }
  if (!isObject(raw) || raw.probe !== "switchyard-health") {
    throw new ProbeOutputError('the probe\'s report lacks "probe": "switchyard-health"');
  }
  if (raw.version !== 1) throw new ProbeOutputError(`probe report version ${String(raw.version)}, expected 1`);
  const commands = Array.isArray(raw.commands) ? raw.commands.filter(isObject) : [];
  const mem = isObject(raw.memory) ? raw.memory : null;
  return {
    node: str(raw.node),
    t: typeof raw.t === "number" ? raw.t : 0,
    hostTools: typeof raw.hostTools === "string" ? raw.hostTools : null,
    commands: commands.map((c) => ({
      tool: str(c.tool),
      query: str(c.query),
      argv: Array.isArray(c.argv) ? c.argv.map(String) : [],
      code: typeof c.code === "number" ? c.code : null,
      stdout: str(c.stdout),
      stderr: str(c.stderr),
      error: typeof c.error === "string" ? c.error : null,
    })),
    disk: (Array.isArray(raw.disk) ? raw.disk.filter(isObject) : []).map((d) => ({
      path: str(d.path),
      role: str(d.role),
      ...(typeof d.free === "number" ? { free: d.free } : {}),
      ...(typeof d.total === "number" ? { total: d.total } : {}),
      ...(typeof d.error === "string" ? { error: d.error } : {}),
    })),
    memory:
      mem && typeof mem.available === "number" && typeof mem.total === "number"
        ? { available: mem.available, total: mem.total }
        : null,
  };
}

const gradeOf: Record<DeviceHealthStatus, HealthGrade | null> = { ok: null, degraded: "degraded", failed: "fatal" };

function firstLine(text: string): string {
  return (
    text
      .split("\n")
      .map((l) => l.trim())
      .find((l) => l !== "") ?? ""
  ).slice(0, 300);
}

/** A tool that did not answer: what it said, or why it did not run. */
function failedCommand(c: ProbeCommand): string | null {
  if (c.error) return c.error;
  if (c.code !== 0)
    return `exited with ${c.code ?? "a signal"}: ${firstLine(c.stderr) || firstLine(c.stdout) || "no output"}`;
  return null;
}

/** nvidia-smi could not reach the driver or a GPU: the devices are unusable. */
const nvidiaDriverGone =
  /couldn't communicate with the NVIDIA driver|No devices were found|GPU is lost|Unable to determine the device handle/i;

function gradeNvidia(commands: ProbeCommand[], t: HealthThresholds, out: HealthFinding[]): void {
  const by = (q: string) => commands.find((c) => c.tool === "nvidia-smi" && c.query === q);
  const health = by("health");
  if (!health) return;
  const add = (grade: HealthGrade, message: string, source = "nvidia-smi", cause: Cause = "device") =>
    out.push({ grade, cause, source, message });
  const failed = failedCommand(health);
  if (
    failed &&
    !(health.code !== null && health.code !== 0 && /Unable to determine the device handle/.test(health.stdout))
  ) {
    const text = `${health.stdout}\n${health.stderr}`;
    add(nvidiaDriverGone.test(text) ? "fatal" : "degraded", `nvidia-smi ${failed}`);
    return;
  }
  const parsed: { h?: ReturnType<typeof parseNvidiaHealth>; rows?: NvidiaRemappedRows[]; inv?: NvidiaGpu[] } = {};
  try {
    parsed.h = parseNvidiaHealth(health.stdout);
  } catch (err) {
    add("info", `cannot read nvidia-smi health output: ${(err as Error).message}`);
    return;
  }
  const remap = by("remapped-rows");
  if (remap && !failedCommand(remap)) {
    try {
      parsed.rows = parseNvidiaRemappedRows(remap.stdout).rows;
    } catch (err) {
      add("info", `cannot read nvidia-smi remapped rows: ${(err as Error).message}`);
    }
  }
  const inv = by("inventory");
  if (inv && !failedCommand(inv)) {
    try {
      parsed.inv = parseNvidiaInventory(inv.stdout).rows;
    } catch (err) {
      add("info", `cannot read nvidia-smi inventory: ${(err as Error).message}`);
    }
  }
  const kernel = commands.find((c) => c.query === "kernel-log");
  const kernelFailed = kernel ? failedCommand(kernel) : null;
  if (kernel && kernelFailed)
    add("info", `kernel log not readable (${kernel.tool} ${kernelFailed}): Xids unseen`, "kernel-log");
  const xids = kernel && !kernelFailed ? parseXidLines(kernel.stdout.split("\n")) : [];
  const summary = healthFromNvidia(
    {
      health: parsed.h,
      ...(parsed.rows ? { remappedRows: parsed.rows } : {}),
      ...(parsed.inv ? { inventory: parsed.inv } : {}),
      xids,
    },
    t.maxGpuTemperatureC !== undefined ? { maxTemperatureC: t.maxGpuTemperatureC } : {},
  );
  pushDevice(summary, out, (reason) => (/Xid \d+/.test(reason) ? "kernel-log" : "nvidia-smi"), "device");
  if (summary.graded.length === 0) {
    add(
      "info",
      `${parsed.h.rows.length} GPU(s) healthy${xids.length > 0 ? ` (${xids.length} application Xid line(s) ignored)` : ""}`,
    );
  }
}

function pushDevice(
  summary: DeviceHealth,
  out: HealthFinding[],
  source: (reason: string) => string,
  cause: Cause,
): void {
  for (const g of summary.graded) {
    const grade = gradeOf[g.status] ?? "info";
    out.push({ grade, cause, source: source(g.reason), message: g.reason });
  }
}

function gradeNpu(commands: ProbeCommand[], t: HealthThresholds, out: HealthFinding[]): void {
  const info = commands.find((c) => c.tool === "npu-smi" && c.query === "info");
  if (!info) return;
  const failed = failedCommand(info);
  if (failed) {
    out.push({ grade: "degraded", cause: "device", source: "npu-smi", message: `npu-smi info ${failed}` });
    return;
  }
  let chips;
  try {
    chips = parseNpuSmiInfo(info.stdout).chips;
  } catch (err) {
    out.push({
      grade: "info",
      cause: "device",
      source: "npu-smi",
      message: `cannot read npu-smi info: ${(err as Error).message}`,
    });
    return;
  }
  const details: Array<NpuHealthReport & { npuId: number; chipId: number }> = [];
  for (const c of commands) {
    const m = /^health (\d+) (\d+)$/.exec(c.query);
    if (c.tool !== "npu-smi" || !m) continue;
    const why = failedCommand(c);
    if (why) {
      out.push({
        grade: "degraded",
        cause: "device",
        source: "npu-smi",
        message: `NPU ${m[1]} chip ${m[2]}: health query ${why}`,
      });
      continue;
    }
    try {
      details.push({ ...parseNpuHealth(c.stdout), npuId: Number(m[1]), chipId: Number(m[2]) });
    } catch (err) {
      out.push({
        grade: "info",
        cause: "device",
        source: "npu-smi",
        message: `cannot read npu-smi health: ${(err as Error).message}`,
      });
    }
  }
  const summary = healthFromNpu(
    { chips, details },
    t.maxNpuTemperatureC !== undefined ? { maxTemperatureC: t.maxNpuTemperatureC } : {},
  );
  pushDevice(summary, out, () => "npu-smi", "device");
  if (summary.graded.length === 0)
    out.push({ grade: "info", cause: "device", source: "npu-smi", message: `${chips.length} NPU chip(s) healthy` });
}

function gradeHccn(commands: ProbeCommand[], out: HealthFinding[]): void {
  const links = commands.filter((c) => c.tool === "hccn_tool");
  let up = 0;
  for (const c of links) {
    const device = /^link (\d+)$/.exec(c.query)?.[1] ?? "?";
    const why = failedCommand(c);
    if (why) {
      out.push({
        grade: "degraded",
        cause: "network",
        source: "hccn_tool",
        message: `NPU ${device} port: link query ${why}`,
      });
      continue;
    }
    try {
      const status = parseHccnLink(c.stdout);
      if (status === "DOWN") {
        out.push({ grade: "fatal", cause: "network", source: "hccn_tool", message: `NPU ${device} port: link DOWN` });
      } else up++;
    } catch (err) {
      out.push({
        grade: "info",
        cause: "network",
        source: "hccn_tool",
        message: `cannot read hccn_tool: ${(err as Error).message}`,
      });
    }
  }
  if (links.length > 0 && up === links.length) {
    out.push({ grade: "info", cause: "network", source: "hccn_tool", message: `${up} NPU port link(s) UP` });
  }
}

const mib = (bytes: number): string =>
  bytes >= 10 * 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(0)} GiB` : `${(bytes / 1024 ** 2).toFixed(0)} MiB`;

function gradeHost(report: ProbeReport, t: HealthThresholds, out: HealthFinding[]): void {
  for (const d of report.disk) {
    if (d.error !== undefined || d.free === undefined) {
      out.push({
        grade: "info",
        cause: "host",
        source: "disk",
        message: `${d.role} ${d.path}: cannot tell free space (${d.error ?? "no answer"})`,
      });
      continue;
    }
    const low = d.free < t.minFreeDiskMiB * 1024 * 1024;
    out.push({
      grade: low ? "degraded" : "info",
      cause: "host",
      source: "disk",
      message: `${d.role} ${d.path}: ${mib(d.free)} free of ${mib(d.total ?? 0)}${low ? ` (below ${t.minFreeDiskMiB} MiB)` : ""}`,
    });
  }
  if (report.memory) {
    const low = report.memory.available < t.minFreeMemoryMiB * 1024 * 1024;
    out.push({
      grade: low ? "degraded" : "info",
      cause: "host",
      source: "memory",
      message: `memory: ${mib(report.memory.available)} available of ${mib(report.memory.total)}${low ? ` (below ${t.minFreeMemoryMiB} MiB)` : ""}`,
    });
  }
}

/** The findings of one report, worst first, and the node's status: the worst grade (no finding above info: ok). */
export function gradeProbe(report: ProbeReport, thresholds: HealthThresholds = defaultHealthThresholds): HealthVerdict {
  const findings: HealthFinding[] = [];
  gradeNvidia(report.commands, thresholds, findings);
  gradeNpu(report.commands, thresholds, findings);
  gradeHccn(report.commands, findings);
  gradeHost(report, thresholds, findings);
  const order: Record<HealthGrade, number> = { fatal: 0, degraded: 1, info: 2 };
  findings.sort((a, b) => order[a.grade] - order[b.grade]);
  const status: NodeHealthStatus = findings.some((f) => f.grade === "fatal")
    ? "fatal"
    : findings.some((f) => f.grade === "degraded")
      ? "degraded"
      : "ok";
  return { status, findings: findings.slice(0, maxFindings), excerpt: excerptOf(report) };
}

/** The tools' outputs, each under a `$ tool args` header, cut to maxExcerpt characters. */
export function excerptOf(report: ProbeReport): string {
  let text = report.hostTools ? `# tools from ${report.hostTools}\n` : "";
  for (const c of report.commands) {
    const shown = c.argv.map((a, i) => (i === 0 ? (a.split("/").pop() ?? a) : a)).join(" ");
    text += `$ ${shown}${c.code !== 0 ? `  [${c.error ?? `exit ${c.code ?? "signal"}`}]` : ""}\n${c.stdout}${c.stderr ? `${c.stderr}` : ""}`;
    if (!text.endsWith("\n")) text += "\n";
    if (text.length > maxExcerpt) break;
  }
  return text.length > maxExcerpt ? `${text.slice(0, maxExcerpt)}\n[cut]\n` : text;
}

/**
 * What one host's probe run says: its report graded, or unknown with why when the probe did not run, timed out or
 * printed no report (an unanswered probe proves nothing against the host).
 */
export function gradeProbeRun(
  run: { code: number | null; stdout: string; stderr: string; timedOut?: boolean },
  thresholds: HealthThresholds = defaultHealthThresholds,
): HealthVerdict {
  const unknown = (why: string): HealthVerdict => ({
    status: "unknown",
    findings: [{ grade: "info", cause: "unknown", source: "probe", message: why }],
    excerpt: `${run.stdout}${run.stderr}`.slice(-maxExcerpt),
  });
  if (run.timedOut) return unknown("the probe did not finish in time");
  if (run.code !== 0) {
    return unknown(
      `the probe exited with ${run.code ?? "a signal"}: ${firstLine(run.stderr) || firstLine(run.stdout) || "no output"}`,
    );
  }
  try {
    return gradeProbe(parseProbeReport(run.stdout), thresholds);
  } catch (err) {
    return unknown((err as Error).message);
  }
}

/** The finding that speaks for a status: the first fatal one, else the first degraded one; null when none. */
export function headline(findings: readonly HealthFinding[]): HealthFinding | null {
  return findings.find((f) => f.grade === "fatal") ?? findings.find((f) => f.grade === "degraded") ?? null;
}
