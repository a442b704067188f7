import { setTimeout as sleep } from "node:timers/promises";
import type { Command } from "commander";
import type { ReplicaView, ServiceSummary, StoredService } from "../../supervisor/services.js";
import { CliError, connect, ExitCode, type ApiClient } from "../client.js";
import { globals } from "../context.js";

/**
 * `switchyard services logs NAME [--replica R] [--tail N] [-f]`: a service's replica logs without looking up job ids
 * (as `sky serve logs` and `kubectl logs deploy/x` do). Every live replica's log, each line prefixed with its slot, or
 * one replica's with `--replica` (its slot, e.g. local-ascend-0, its index in the pool, or its job id). With no live
 * replica, the newest replica of each slot (why a replica failed is in its log). `--follow` follows across restarts
 * and rolls (a successor's log joins when it starts) until the service is undeployed.
 */
const enc = encodeURIComponent;
const maxTailLines = 10_000;
/** Bytes read back from a log's end for --tail (a line longer than the average gets fewer lines, never an error). */
const tailBytesPerLine = 512;

interface Described {
  service: ServiceSummary;
  spec: StoredService;
  replicas: ReplicaView[];
}

interface LogChunk {
  text: string;
  offset: number;
  attempt: number;
}

/**
 * The replicas whose logs to show: `selector` (a slot, a job id, or a number N: the slot `<pool>-N` when one pool has
 * it) picks one; none: every live replica, or with none live the newest of each slot. Throws a usage error naming the
 * slots when the selector matches none or several.
 */
export function pickReplicas(service: string, replicas: readonly ReplicaView[], selector?: string): ReplicaView[] {
  const newestBySlot = new Map<string, ReplicaView>();
  for (const r of [...replicas].sort((a, b) => a.createdAt - b.createdAt)) newestBySlot.set(r.slot, r);
  const slots = [...newestBySlot.keys()].sort();
  const fix =
    slots.length > 0 ? `one of ${slots.join(", ")}` : `no replica yet: switchyard services describe ${service}`;
  if (selector === undefined) {
    const live = replicas.filter((r) => r.state !== "stopped");
    if (live.length > 0)
      return [...live].sort((a, b) => (a.slot === b.slot ? a.createdAt - b.createdAt : a.slot < b.slot ? -1 : 1));
    return slots.map((s) => newestBySlot.get(s)!);
  }
  const byJob = replicas.find((r) => r.jobId === selector);
  if (byJob) return [byJob];
  // In a slot, the live replicas (both while a roll is under way), else its newest.
  const inSlot = (slot: string): ReplicaView[] => {
    const live = replicas.filter((r) => r.slot === slot && r.state !== "stopped");
    return live.length > 0 ? live.sort((a, b) => a.createdAt - b.createdAt) : [newestBySlot.get(slot)!];
  };
  if (newestBySlot.has(selector)) return inSlot(selector);
  if (/^\d{1,4}$/.test(selector)) {
    const matching = slots.filter((s) => s.endsWith(`-${Number(selector)}`));
    if (matching.length === 1) return inSlot(matching[0]!);
    if (matching.length > 1) {
      throw new CliError(
        `--replica ${selector} is ambiguous in service ${service}: ${matching.join(", ")}`,
        ExitCode.Usage,
        `name the slot, e.g. --replica ${matching[0]}`,
      );
    }
  }
  throw new CliError(
    `service ${service} has no replica ${JSON.stringify(selector)}`,
    ExitCode.Usage,
    `--replica ${fix}`,
  );
}

/** Splits text into whole lines, keeping an unfinished last line for the next chunk. */
class LineBuffer {
  private partial = "";
  push(text: string): string[] {
    const lines = (this.partial + text).split("\n");
    this.partial = lines.pop() ?? "";
    return lines;
  }
  flush(): string[] {
    const rest = this.partial;
    this.partial = "";
    return rest === "" ? [] : [rest];
  }
}

interface Followed {
  replica: ReplicaView;
  attempt: number | null;
  offset: number;
  lines: LineBuffer;
  done: boolean;
}

export async function serviceLogs(
  client: ApiClient,
  name: string,
  opts: { replica?: string; tail?: number; follow?: boolean; json: boolean },
  print: (line: string) => void = (line) => console.log(line),
): Promise<void> {
  let described = await client.get<Described>(`/api/services/${enc(name)}`);
  const service = described.service.name;
  const picked = pickReplicas(service, described.replicas, opts.replica);
  // One replica: its lines as they are; several: each prefixed with its slot (and job, while a roll doubles a slot).
  const prefixed = opts.replica === undefined || picked.length > 1;
  const label = (r: ReplicaView, all: readonly ReplicaView[]): string =>
    all.filter((x) => x.slot === r.slot).length > 1 ? `${r.slot} ${r.jobId}` : r.slot;
  const followed: Followed[] = picked.map((replica) => ({
    replica,
    attempt: null,
    offset: 0,
    lines: new LineBuffer(),
    // A replica that had stopped already (none was live) is read once, never followed.
    done: replica.state === "stopped",
  }));
  const emit = (f: Followed, attempt: number, line: string, all: readonly ReplicaView[]): void => {
    if (opts.json) {
      print(JSON.stringify({ service, replica: f.replica.slot, job: f.replica.jobId, attempt, line }));
    } else print(prefixed ? `[${label(f.replica, all)}] ${line}` : line);
  };
  const note = (text: string): void => {
    if (!opts.json) print(`--- ${text} ---`);
  };

  /** Reads what is new in one replica's log (its latest attempt; a new attempt starts over at its beginning). */
  const readNew = async (f: Followed, all: readonly ReplicaView[], first: boolean): Promise<void> => {
    try {
      if (first && opts.tail !== undefined) {
        // Where the log ends now (an offset past its end answers with its size), then its last lines from there.
        const end = await client.get<LogChunk>(
          `/api/jobs/${enc(f.replica.jobId)}/logs?offset=${Number.MAX_SAFE_INTEGER}`,
        );
        f.attempt = end.attempt;
        f.offset = Math.max(0, end.offset - opts.tail * tailBytesPerLine);
        const cut = f.offset > 0;
        const lines: string[] = [];
        for (let rounds = 0; rounds < 64; rounds++) {
          const chunk = await client.get<LogChunk>(
            `/api/jobs/${enc(f.replica.jobId)}/logs?attempt=${f.attempt}&offset=${f.offset}`,
          );
          lines.push(...f.lines.push(chunk.text));
          f.offset = chunk.offset;
          if (chunk.text === "" || f.offset >= end.offset) break;
        }
        if (cut) lines.shift(); // the first line read from the middle of the log is cut
        for (const line of lines.slice(-opts.tail)) emit(f, f.attempt, line, all);
        return;
      }
      for (let rounds = 0; rounds < 64; rounds++) {
        const q = new URLSearchParams({ offset: String(f.offset) });
        if (f.attempt !== null) q.set("attempt", String(f.attempt));
        const chunk = await client.get<LogChunk>(`/api/jobs/${enc(f.replica.jobId)}/logs?${q}`);
        if (f.attempt === null) f.attempt = chunk.attempt;
        for (const line of f.lines.push(chunk.text)) emit(f, chunk.attempt, line, all);
        f.offset = chunk.offset;
        if (chunk.text === "") return;
      }
    } catch (err) {
      // No rank yet (the replica waits for a node) or its job is gone: nothing to read now.
      if (err instanceof CliError && err.exitCode === ExitCode.Usage) return;
      throw err;
    }
  };

  for (const f of followed) await readNew(f, described.replicas, true);
  if (!opts.follow) {
    for (const f of followed) for (const line of f.lines.flush()) emit(f, f.attempt ?? 0, line, described.replicas);
    return;
  }
  for (;;) {
    await sleep(500);
    try {
      described = await client.get<Described>(`/api/services/${enc(name)}`);
    } catch (err) {
      if (err instanceof CliError && err.exitCode === ExitCode.Usage) {
        for (const f of followed) for (const line of f.lines.flush()) emit(f, f.attempt ?? 0, line, []);
        note(`service ${service} is gone (undeployed)`);
        return;
      }
      throw err;
    }
    const all = described.replicas;
    // A successor (a roll, a scale-up) joins; with --replica, only in the slot asked for.
    const slots = new Set(picked.map((r) => r.slot));
    for (const r of all) {
      if (r.state === "stopped" || followed.some((f) => f.replica.jobId === r.jobId)) continue;
      if (opts.replica !== undefined && !slots.has(r.slot) && r.jobId !== opts.replica) continue;
      followed.push({ replica: r, attempt: null, offset: 0, lines: new LineBuffer(), done: false });
      note(`replica ${r.slot} (job ${r.jobId}) joined`);
    }
    for (const f of followed) {
      if (f.done) continue;
      const now = all.find((r) => r.jobId === f.replica.jobId);
      await readNew(f, all, false);
      if (now === undefined || now.state === "stopped") {
        for (const line of f.lines.flush()) emit(f, f.attempt ?? 0, line, all);
        f.done = true;
        note(`replica ${f.replica.slot} (job ${f.replica.jobId}) stopped`);
        continue;
      }
      // A restart: the next attempt's log from its beginning.
      if (now.attempt !== null && f.attempt !== null && now.attempt !== f.attempt) {
        for (const line of f.lines.flush()) emit(f, f.attempt, line, all);
        f.attempt = now.attempt;
        f.offset = 0;
        note(`replica ${f.replica.slot}: attempt ${now.attempt}`);
        await readNew(f, all, false);
      }
    }
  }
}

export function registerServiceLogs(services: Command): void {
  services
    .command("logs")
    .description(
      "a service's replica logs: every live replica's, each line prefixed with its slot, or one with --replica",
    )
    .argument("<name>", "service (model) name or alias")
    .option(
      "-r, --replica <replica>",
      "one replica: its slot (local-ascend-0), its index in the pool (0) or its job id",
    )
    .option("--tail <lines>", "only the last lines of each log")
    .option(
      "-f, --follow",
      "keep printing as the logs grow, across restarts and rolls, until the service is undeployed",
    )
    .action(async (name: string, opts: { replica?: string; tail?: string; follow?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      let tail: number | undefined;
      if (opts.tail !== undefined) {
        if (!/^\d{1,5}$/.test(opts.tail) || Number(opts.tail) < 1 || Number(opts.tail) > maxTailLines) {
          throw new CliError(
            `--tail takes a number of lines from 1 to ${maxTailLines}, got "${opts.tail}"`,
            ExitCode.Usage,
            "e.g. --tail 50",
          );
        }
        tail = Number(opts.tail);
      }
      const client = await connect(g.home, { start: false });
      await serviceLogs(client, name, {
        ...(opts.replica !== undefined && { replica: opts.replica }),
        ...(tail !== undefined && { tail }),
        follow: opts.follow === true,
        json: g.json,
      });
    });
}
