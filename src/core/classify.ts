import { z } from "zod";
import { nvidiaXidCatalog } from "./devices/nvidia-smi.js";
import { LinearRegExp, linearOrNull, linearRegexProblem } from "./linear-regex.js";

/**
 * Cause classification of an incident from the culprit rank's exit status, signal and last log lines. Pure: the
 * supervisor passes in what it observed. Patterns live in one table (`defaultCausePatterns`) that users extend in config.
 */

export const Cause = {
  Device: "device",
  Network: "network",
  Oom: "oom",
  Software: "software",
  Hang: "hang",
  Killed: "killed",
  /** The whole host went silent (its node agents stopped reporting): lost with everything on it. */
  Host: "host",
  Unknown: "unknown",
} as const;
export type Cause = (typeof Cause)[keyof typeof Cause];

/**
 * When lines point at different causes, the lower rank wins: a failing device often leaves network-looking timeouts on
 * the same rank, and an out-of-memory error is often wrapped in a generic RuntimeError.
 */
const causeRank: Record<Cause, number> = {
  device: 0,
  oom: 1,
  network: 2,
  software: 3,
  hang: 4,
  killed: 5,
  host: 6,
  unknown: 7,
};

export interface CausePattern {
  /** Stable name, e.g. `nvidia-xid-79`; kept in the incident so a user can see which rule fired. */
  id: string;
  cause: Cause;
  /** JavaScript regular expression source, matched against each log line. */
  regex: string;
  ignoreCase?: boolean;
  /** Human summary; `$<name>` and `$1` are replaced by the regex's capture groups. */
  detail: string;
  /** Drain-worthy device error: the node is cordoned at once instead of collecting strikes. */
  hard?: boolean;
  /** Whether a restart can help; defaults to true. False for errors only a code or config change fixes. */
  retryable?: boolean;
  /** Only applies when the process ended by this signal (e.g. a bare `Killed` line with SIGKILL). */
  signal?: string;
  /** A generic rule: it counts only when no specific rule matched any line of the tail. */
  fallback?: boolean;
}

export interface FailureInput {
  /** Exit code, or null when the process ended by a signal or vanished. */
  code: number | null;
  signal: string | null;
  /** The last lines of the rank's log, newest last. */
  tail: readonly string[];
  /** The supervisor stopped the rank because it made no progress. */
  hung?: boolean;
}

export interface Classification {
  cause: Cause;
  /** e.g. "NVIDIA Xid 79: GPU fallen off the bus". */
  detail: string;
  /** The log line that decided the cause (trimmed to about 300 characters), or "" when none did. */
  evidence: string;
  /** True for drain-worthy device errors: cordon the node at once. */
  hardDeviceEvidence: boolean;
  retryable: boolean;
  /** Normalized error signature for crash-loop detection: equal for the same bug on other nodes and attempts. */
  signature: string;
  /** The pattern that decided, or null when the exit status alone did. */
  patternId: string | null;
}

const xid = (code: number, cause: Cause, detail: string, hard = false): CausePattern => ({
  id: `nvidia-xid-${code}`,
  cause,
  regex: String.raw`NVRM: Xid \([^)]*\): ${code}\b`,
  detail: `NVIDIA Xid ${code}: ${detail}`,
  ...(hard ? { hard } : {}),
});

/**
 * The built-in rules, first match per line wins (user rules are tried before these). Sources: ../shared/ACCELERATORS.md,
 * NVIDIA's Xid catalogue and DCGM's failure list, torch_npu/HCCL error codes, PyTorch's NCCL and gloo messages.
 */
export const defaultCausePatterns: readonly CausePattern[] = [
  // NVIDIA Xids (kernel log). Drain-worthy ones as DCGM treats them; application-level ones are the program's fault.
  ...Object.entries(nvidiaXidCatalog).map(([code, { kind, meaning }]) =>
    xid(Number(code), kind === "application" ? "software" : "device", meaning, kind === "hard"),
  ),
  {
    id: "nvidia-xid",
    cause: "device",
    regex: String.raw`NVRM: Xid \((?<pci>[^)]*)\): (?<xid>\d+)`,
    detail: "NVIDIA Xid $<xid> on $<pci>",
  },
  {
    id: "cuda-uncorrectable-ecc",
    cause: "device",
    regex: String.raw`uncorrectable ECC error encountered`,
    detail: "CUDA uncorrectable ECC error",
    hard: true,
  },
  {
    id: "nvidia-gpu-lost",
    cause: "device",
    regex: String.raw`GPU is lost|Unable to determine the device handle for GPU`,
    detail: "NVIDIA GPU lost (NVML cannot reach it)",
    hard: true,
  },
  {
    id: "cuda-device-unavailable",
    cause: "device",
    regex: String.raw`no CUDA-capable device is detected|CUDA-capable device\(s\) is/are busy or unavailable`,
    detail: "CUDA device missing or unavailable",
  },
  // Ascend hardware strings.
  {
    id: "ascend-uce",
    cause: "device",
    regex: String.raw`UCE ERROR`,
    detail: "Ascend uncorrectable memory error (UCE)",
    hard: true,
  },
  {
    id: "ascend-hbm-multi-bit-ecc",
    cause: "device",
    regex: String.raw`HBM MULTI BIT ECC ERROR`,
    detail: "Ascend HBM multi-bit ECC error",
    hard: true,
  },
  {
    id: "ascend-heartbeat-lost",
    cause: "device",
    regex: String.raw`heart ?beat lost`,
    ignoreCase: true,
    detail: "Ascend NPU heartbeat lost",
    hard: true,
  },
  {
    id: "ascend-force-stop",
    cause: "device",
    regex: String.raw`FORCE STOP`,
    detail: "Ascend device task force-stopped",
  },
  // Out of memory, device and host.
  {
    id: "cuda-oom",
    cause: "oom",
    regex: String.raw`CUDA out of memory|torch\.cuda\.OutOfMemoryError|Cuda failure 'out of memory'`,
    ignoreCase: true,
    detail: "CUDA out of memory",
  },
  {
    id: "npu-oom",
    cause: "oom",
    regex: String.raw`\bEL0004\b|NPU out of memory`,
    detail: "NPU out of memory (EL0004)",
  },
  {
    id: "host-oom-killer",
    cause: "oom",
    regex: String.raw`invoked oom-killer|oom-kill|oom_reaper|Out of memory: Kill(?:ed)? process|Memory cgroup out of memory`,
    ignoreCase: true,
    detail: "host out of memory: the kernel OOM killer ended the process",
  },
  {
    id: "host-oom-sigkill",
    cause: "oom",
    regex: String.raw`^\s*Killed\b`,
    signal: "SIGKILL",
    detail: "host out of memory: SIGKILL with 'Killed' (likely the kernel OOM killer)",
  },
  {
    id: "host-alloc-failed",
    cause: "oom",
    regex: String.raw`DefaultCPUAllocator: can't allocate memory|\bMemoryError\b`,
    detail: "host out of memory: allocation failed",
  },
  // A port another process holds: torch's rendezvous store on MASTER_PORT, a model server (vLLM/uvicorn, Node) on its
  // port. Software, not the node's fault (no strike): a restart on a fresh port gets past a stale process, and a port
  // the spec fixes that stays taken repeats the same error, which the crash-loop rule stops with this line.
  // Listed before the network rules: torch words it DistNetworkError.
  {
    id: "address-in-use",
    cause: "software",
    regex: String.raw`EADDRINUSE|[Aa]ddress already in use`,
    detail: "a port was already in use on the node (another process holds it)",
  },
  // Network: NCCL, HCCL, gloo, and what a survivor sees when a peer goes away.
  {
    id: "ascend-suspect-remote",
    cause: "network",
    regex: String.raw`SUSPECT REMOTE ERROR`,
    detail: "Ascend suspect remote error (peer or link)",
  },
  {
    id: "ascend-link-error",
    cause: "network",
    regex: String.raw`reason=\[link error\]`,
    detail: "Ascend link error",
  },
  {
    id: "hccl-ei0002",
    cause: "network",
    regex: String.raw`\bEI0002\b`,
    detail: "HCCL EI0002: notify wait timeout (a peer stopped; HCCL_EXEC_TIMEOUT)",
  },
  {
    id: "hccl-ei0006",
    cause: "network",
    regex: String.raw`\bEI0006\b`,
    detail: "HCCL EI0006: socket timeout (HCCL_CONNECT_TIMEOUT)",
  },
  {
    id: "hccl-ej0001",
    cause: "network",
    regex: String.raw`\bEJ0001\b`,
    detail: "HCCL EJ0001: HCCP initialization failed",
  },
  {
    id: "hccl-bad-config",
    cause: "software",
    regex: String.raw`\b(?<code>EI000[34])\b`,
    detail: "HCCL $<code>: bad rank table or argument",
    retryable: false,
  },
  {
    id: "nccl-watchdog-timeout",
    cause: "network",
    regex: String.raw`Watchdog caught collective operation timeout`,
    detail: "NCCL watchdog: collective operation timed out",
  },
  {
    id: "nccl-system-error",
    cause: "network",
    regex: String.raw`NCCL.*unhandled system error`,
    detail: "NCCL unhandled system error",
  },
  {
    id: "nccl-remote-error",
    cause: "network",
    regex: String.raw`NCCL.*(?:remote process exited|ncclRemoteError|remote error)|NET/(?:IB|Socket).*(?:error|fail)`,
    ignoreCase: true,
    detail: "NCCL remote or network transport error",
  },
  {
    id: "connection-reset",
    cause: "network",
    regex: String.raw`Connection reset by peer`,
    detail: "connection reset by peer",
  },
  {
    id: "connection-closed",
    cause: "network",
    regex: String.raw`Connection closed by peer`,
    detail: "connection closed by peer",
  },
  {
    id: "broken-pipe",
    cause: "network",
    regex: String.raw`Broken pipe`,
    detail: "broken pipe to a peer",
  },
  {
    id: "gloo-timeout",
    cause: "network",
    regex: String.raw`gloo.*(?:timed out|timeout)`,
    ignoreCase: true,
    detail: "gloo collective timed out",
  },
  {
    id: "hccl-timeout",
    cause: "network",
    regex: String.raw`HCCL.*(?:timed out|timeout)`,
    ignoreCase: true,
    detail: "HCCL timed out",
  },
  {
    id: "c10d-store",
    cause: "network",
    regex: String.raw`DistNetworkError|DistStoreError|socket timeout`,
    ignoreCase: true,
    detail: "torch.distributed rendezvous or store connection failed",
  },
  // Software errors that no restart fixes.
  {
    id: "python-setup-error",
    cause: "software",
    regex: String.raw`^\s*(?:\[[^\]]*\]:?\s*)?(?<type>ModuleNotFoundError|ImportError|SyntaxError|IndentationError)\b`,
    detail: "Python $<type> (the script cannot start)",
    retryable: false,
  },
  {
    id: "cuda-kernel-fault",
    cause: "software",
    regex: String.raw`CUDA error: (?:an illegal memory access was encountered|device-side assert triggered|misaligned address)`,
    detail: "CUDA kernel fault in application code",
  },
  // Generic rules: they lose to any specific line.
  {
    id: "ascend-acl-call-failed",
    cause: "device",
    regex: String.raw`ERR00100 PTA call acl api failed`,
    detail: "Ascend ACL call failed (ERR00100)",
    fallback: true,
  },
  {
    id: "python-exception",
    cause: "software",
    regex: String.raw`^\s*(?:\[[^\]]*\]:?\s*)?(?<type>(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception))(?::|$)`,
    detail: "Python $<type>",
    fallback: true,
  },
];

/** User patterns run on the linear-time engine (a backtracking one can stall the server on one log line). */
function isValidRegex(source: string): boolean {
  return linearRegexProblem(source) === null;
}

const signalName = z
  .string()
  .regex(/^(SIG)?[A-Z0-9]+$/, "must be a signal name such as SIGKILL | fix: write it in capitals, e.g. SIGKILL");

/** A user-supplied pattern from config (strict: unknown keys are errors). */
export const causePatternSchema = z
  .strictObject({
    id: z
      .string()
      .regex(
        /^[a-z0-9][a-z0-9._-]{0,62}$/,
        "must be lowercase letters, digits, '.', '_' or '-' | fix: rename it, e.g. my-lib-timeout",
      ),
    cause: z.enum(Cause),
    regex: z.string().min(1).refine(isValidRegex, {
      message:
        "is not a valid regular expression for the linear-time engine (RE2: no lookahead, lookbehind or backreferences) | fix: escape special characters such as ( [ . with a backslash",
    }),
    ignoreCase: z.boolean().optional(),
    detail: z.string().min(1),
    hard: z.boolean().optional(),
    retryable: z.boolean().optional(),
    signal: signalName.optional(),
    fallback: z.boolean().optional(),
  })
  .refine((p) => !p.hard || p.cause === "device", {
    message: "hard is only allowed with cause device | fix: remove hard, or set cause: device",
    path: ["hard"],
  });

/** The `causePatterns:` list of a config file. */
export const causePatternListSchema = z.array(causePatternSchema);

// A parsed user pattern must be usable wherever a built-in one is.
const _userPatternIsCausePattern = (p: z.infer<typeof causePatternSchema>): CausePattern => p;

const compiled = new WeakMap<CausePattern, RegExp>();

function compile(pattern: CausePattern): RegExp {
  let re = compiled.get(pattern);
  if (!re) {
    // Never matches when the pattern does not compile (one stored before patterns were checked): never throws.
    re = linearOrNull(pattern.regex, { ignoreCase: pattern.ignoreCase ?? false }) ?? new LinearRegExp(String.raw`\b\B`);
    compiled.set(pattern, re);
  }
  return re;
}

const signalNumbers: Record<number, string> = {
  1: "SIGHUP",
  2: "SIGINT",
  3: "SIGQUIT",
  4: "SIGILL",
  6: "SIGABRT",
  7: "SIGBUS",
  8: "SIGFPE",
  9: "SIGKILL",
  11: "SIGSEGV",
  13: "SIGPIPE",
  15: "SIGTERM",
};

/** Signals a process raises on itself when native code crashes: a bug (or a driver fault), not someone killing it. */
const crashSignals = new Set(["SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT"]);

/** The signal that ended the process: reported directly, or through a shell's 128+n exit code. */
function effectiveSignal(input: FailureInput): string | null {
  if (input.signal) {
    const s = input.signal.trim().toUpperCase();
    if (/^\d+$/.test(s)) return signalNumbers[Number(s)] ?? `SIG${s}`;
    return s.startsWith("SIG") ? s : `SIG${s}`;
  }
  if (input.code !== null && input.code > 128 && input.code < 160) return signalNumbers[input.code - 128] ?? null;
  return null;
}

/** Longest part of a line handed to a regex, so a runaway log line cannot stall classification. */
const maxMatchLength = 8000;
const evidenceLength = 300;

interface LineMatch {
  pattern: CausePattern;
  index: number;
  match: RegExpExecArray;
  line: string;
}

function matchLine(
  line: string,
  index: number,
  patterns: readonly CausePattern[],
  signal: string | null,
): LineMatch | null {
  const text = (line.length > maxMatchLength ? line.slice(0, maxMatchLength) : line).replace(/\r$/, "");
  for (const pattern of patterns) {
    if (pattern.signal !== undefined && normalizeSignalName(pattern.signal) !== signal) continue;
    const match = compile(pattern).exec(text);
    if (match) return { pattern, index, match, line };
  }
  return null;
}

function normalizeSignalName(name: string): string {
  const s = name.toUpperCase();
  return s.startsWith("SIG") ? s : `SIG${s}`;
}

function expandDetail(template: string, match: RegExpExecArray): string {
  return template
    .replace(/\$<(\w+)>/g, (_, name: string) => match.groups?.[name] ?? "")
    .replace(/\$(\d)/g, (_, n: string) => match[Number(n)] ?? "");
}

/** Cuts a long line to about 300 characters around where the pattern matched. */
function trimEvidence(line: string, at = 0): string {
  const text = line.trim();
  if (text.length <= evidenceLength) return text;
  const start = Math.max(0, Math.min(at - 80, text.length - evidenceLength));
  const body = text.slice(start, start + evidenceLength - 2);
  return `${start > 0 ? "…" : ""}${body}${start + body.length < text.length ? "…" : ""}`;
}

/** torchrun and torch>=2 prefix each line of a rank's output with `[rank3]:`, `[default3]:` or `3: `. */
const rankPrefix = /^(?:\[(?:rank|default)\d+\]:\s?|\d+:\s)/;

function stripRankPrefix(line: string): string {
  return line.replace(rankPrefix, "");
}

interface TracebackEnd {
  /** Index in the tail of the exception line that ended a traceback. */
  index: number;
  type: string;
  /** Innermost frame, e.g. "train.py:42 in step". */
  where: string | null;
}

const frameLine = /^\s+File "(?<file>[^"]+)", line (?<line>\d+),? in (?<fn>\S+)/;
const exceptionLine = /^(?<type>(?:[A-Za-z_]\w*\.)*[A-Z]\w*[a-z]\w*)(?::\s?.*)?$/;

/** Exception lines that end a Python traceback (`Traceback (most recent call last):` ... frames ... `Type: message`). */
function tracebackEnds(tail: readonly string[]): TracebackEnd[] {
  const out: TracebackEnd[] = [];
  for (let i = 0; i < tail.length; i++) {
    if (!stripRankPrefix(tail[i] ?? "").startsWith("Traceback (most recent call last):")) continue;
    let where: string | null = null;
    for (let j = i + 1; j < tail.length; j++) {
      const line = stripRankPrefix(tail[j] ?? "").replace(/\r$/, "");
      const frame = frameLine.exec(line);
      if (frame?.groups) {
        where = `${basename(frame.groups.file ?? "")}:${frame.groups.line ?? "?"} in ${frame.groups.fn ?? "?"}`;
        continue;
      }
      if (line.trim() === "" || /^\s/.test(line)) continue;
      const exception = exceptionLine.exec(line);
      if (exception?.groups?.type) out.push({ index: j, type: exception.groups.type, where });
      i = j;
      break;
    }
  }
  return out;
}

function basename(file: string): string {
  return file.split(/[\\/]/).pop() ?? file;
}

const stackHeader = /^(?:Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):/i;

/**
 * The innermost frame of the newest faulthandler dump (the SDK writes one on SIGUSR1 before a hung gang is killed).
 * The thread that took the signal, the training loop, is the one marked "Current thread".
 */
interface StackTop {
  index: number;
  where: string;
  fn: string;
  file: string;
}

function stackTop(tail: readonly string[]): StackTop | null {
  let last: StackTop | null = null;
  let lastCurrent: StackTop | null = null;
  for (let i = 0; i < tail.length; i++) {
    const header = stripRankPrefix(tail[i] ?? "");
    if (!stackHeader.test(header)) continue;
    const frame = frameLine.exec(stripRankPrefix(tail[i + 1] ?? ""));
    if (!frame?.groups) continue;
    const file = basename(frame.groups.file ?? "");
    const fn = frame.groups.fn ?? "?";
    last = { index: i + 1, where: `${fn} (${file}:${frame.groups.line ?? "?"})`, fn, file };
    if (header.startsWith("Current")) lastCurrent = last;
  }
  return lastCurrent ?? last;
}

interface Candidate {
  cause: Cause;
  detail: string;
  index: number;
  at: number;
  line: string;
  hard: boolean;
  retryable: boolean;
  fallback: boolean;
  patternId: string;
}

/**
 * Classifies one failed rank. For each log line the first matching rule wins (user rules before the defaults; a
 * Python traceback's exception line counts as software when no rule matches it). Across lines, specific rules beat
 * generic ones, then device > oom > network > software > hang > killed > unknown, then hard device lines, then the
 * earliest line. A hung rank is a hang unless its log holds device evidence. See docs/failure-causes.md.
 */
export function classifyFailure(input: FailureInput, extraPatterns: readonly CausePattern[] = []): Classification {
  const signal = effectiveSignal(input);
  // The executor saw the whole host go silent: whatever the rank last printed, the host is what failed.
  if (input.signal === hostLostSignal) {
    return {
      cause: "host",
      detail: `${input.tail[0] ?? "host lost"} (link down, power, kernel panic or a dead node daemon)`,
      evidence: input.tail[0] ?? "",
      hardDeviceEvidence: true,
      retryable: true,
      signature: "host lost",
      patternId: null,
    };
  }
  const patterns = [...extraPatterns, ...defaultCausePatterns];
  const candidates: Candidate[] = [];
  const matchedLines = new Set<number>();

  input.tail.forEach((line, index) => {
    const m = matchLine(line, index, patterns, signal);
    if (!m) return;
    matchedLines.add(index);
    if (m.pattern.cause === "unknown") return; // a user rule that silences a line
    candidates.push({
      cause: m.pattern.cause,
      detail: expandDetail(m.pattern.detail, m.match),
      index,
      at: m.match.index,
      line,
      hard: m.pattern.cause === "device" && m.pattern.hard === true,
      retryable: m.pattern.retryable ?? true,
      fallback: m.pattern.fallback === true,
      patternId: m.pattern.id,
    });
  });

  const tracebacks = tracebackEnds(input.tail);
  for (const tb of tracebacks) {
    const where = tb.where ? ` (raised at ${tb.where})` : "";
    const existing = candidates.find((c) => c.index === tb.index);
    if (existing) {
      if (existing.cause === "software" && !existing.detail.includes("raised at")) existing.detail += where;
      continue;
    }
    if (matchedLines.has(tb.index)) continue;
    candidates.push({
      cause: "software",
      detail: `Python ${tb.type}${where}`,
      index: tb.index,
      at: 0,
      line: input.tail[tb.index] ?? "",
      hard: false,
      retryable: true,
      fallback: true,
      patternId: "python-traceback",
    });
  }

  // NVIDIA reports a contained ECC error (Xid 94) to the application as an uncorrectable one; the Xid says that a
  // restart suffices, so the CUDA message alone is not a reason to drain the node.
  if (candidates.some((c) => c.patternId === "nvidia-xid-94")) {
    for (const c of candidates) if (c.patternId === "cuda-uncorrectable-ecc") c.hard = false;
  }

  // A drain-worthy device line must never hide behind a softer one that came first.
  candidates.sort(
    (a, b) =>
      Number(a.fallback) - Number(b.fallback) ||
      causeRank[a.cause] - causeRank[b.cause] ||
      Number(b.hard) - Number(a.hard) ||
      a.index - b.index,
  );
  const best = candidates[0];

  if (input.hung) {
    // A device that stopped answering is why the rank hung: keep the device cause so the node is cordoned.
    if (best?.cause === "device") return fromCandidate(best);
    const top = stackTop(input.tail);
    return {
      cause: "hang",
      detail: top ? `no progress; stack top: ${top.where}` : "no progress within the hang timeout",
      evidence: top ? trimEvidence(input.tail[top.index] ?? "") : "",
      hardDeviceEvidence: false,
      retryable: true,
      signature: top ? `hang: ${top.fn} (${normalizeSignature(top.file)})` : "hang",
      patternId: null,
    };
  }

  if (best) return fromCandidate(best);

  if (signal !== null && crashSignals.has(signal)) {
    return {
      cause: "software",
      detail: `native crash: ${signal} with no error in the log`,
      evidence: "",
      hardDeviceEvidence: false,
      retryable: true,
      signature: `native crash: ${signal}`,
      patternId: null,
    };
  }
  if (signal !== null) {
    return {
      cause: "killed",
      detail: `killed by ${signal} with no other evidence (a person, the scheduler or a chaos test)`,
      evidence: "",
      hardDeviceEvidence: false,
      retryable: true,
      signature: `killed: ${signal}`,
      patternId: null,
    };
  }
  const how = input.code === null ? "vanished without an exit status" : `exited with code ${input.code}`;
  return {
    cause: "unknown",
    detail: `${how}; no recognised error in the last ${input.tail.length} log line(s)`,
    evidence: "",
    hardDeviceEvidence: false,
    retryable: true,
    signature: `exit: ${input.code === null ? "none" : String(input.code)}`,
    patternId: null,
  };
}

function fromCandidate(c: Candidate): Classification {
  const normalized = normalizeSignature(c.line);
  return {
    cause: c.cause,
    detail: c.detail,
    evidence: trimEvidence(c.line, c.at),
    hardDeviceEvidence: c.hard,
    retryable: c.retryable,
    // Software signatures are the exception itself; others carry the rule so that, say, Xid 13 and Xid 79 differ.
    signature: (c.cause === "software" ? normalized : `${c.patternId}: ${normalized}`).slice(0, evidenceLength),
    patternId: c.patternId,
  };
}

/** The exit "signal" of a rank whose whole host went silent (an executor with node agents tells it). */
export const hostLostSignal = "HOSTLOST";

/** Digits in these identifiers name a kind, not an instance: float32 and conv2d stay as they are. */
const keepDigitsAfter = /^(?:float|bfloat|int|uint|complex|fp|bf|conv|python|sm|cp|utf|sha|md|x|e|v)$/i;

/**
 * Normalizes an error line so the same bug yields the same string on every node and attempt: timestamps, addresses,
 * UUIDs, PCI ids, hex, directory parts of paths, and numbers (steps, ranks, PIDs, ports, sizes) become placeholders.
 * Upper-case error codes such as EI0002 or ERR00100 are kept. Leading rank prefixes and log timestamps are dropped.
 */
export function normalizeSignature(line: string): string {
  let s = stripRankPrefix(line.trim());
  s = s
    .replace(/\d{4}-\d{2}-\d{2}[-T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)*(?:Z|[+-]\d{2}:?\d{2})?/g, "<ts>")
    .replace(/\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi, "<uuid>")
    .replace(/\b(?:[0-9a-f]{4,8}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]\b/gi, "<pci>")
    .replace(/\bPCI:[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\b/gi, "PCI:<pci>")
    .replace(/\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b/g, "<ts>")
    .replace(/\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b/g, "<addr>")
    .replace(/\b0x[0-9a-f]+\b/gi, "<hex>")
    .replace(/(?:[A-Za-z]:|~|\.{1,2})?(?:[\\/][^\s'":,;()[\]{}<>\\/]+)+[\\/]?/g, (path) => {
      const parts = path.split(/[\\/]/).filter((p) => p !== "");
      if (parts.length < 2) return path;
      return `<path>/${parts[parts.length - 1] ?? ""}`;
    })
    .replace(/\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b/gi, "<hex>")
    .replace(/\b([A-Za-z]*[a-z][A-Za-z]*)(\d+)\b/g, (whole, word: string) =>
      keepDigitsAfter.test(word) ? whole : `${word}<n>`,
    )
    .replace(/(?<![A-Za-z0-9])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![A-Za-z0-9_])/gi, "<n>")
    .replace(/\s+/g, " ")
    .trim();
  return s.length > evidenceLength ? s.slice(0, evidenceLength) : s;
}
