import { appendFileSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { Clock } from "../../core/clock.js";
import type { Executor, LaunchedRank, LaunchRequest, RankHandle, RankStatus } from "../../executors/port.js";

/**
 * Test doubles for the supervisor: a clock that moves only when told, and an executor whose "ranks" are rows in a
 * table that a test drives (report, log, exit, vanish, stop): no process runs and nothing sleeps.
 */

/** Virtual time: `now` moves only by `advance`; sleepers wake when their time is passed. */
export class FakeClock implements Clock {
  private waiters: Array<{ at: number; resolve: () => void }> = [];
  constructor(public t = 1_700_000_000_000) {}
  now(): number {
    return this.t;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const waiter = { at: this.t + ms, resolve };
      this.waiters.push(waiter);
      signal?.addEventListener("abort", () => resolve(), { once: true });
    });
  }
  advance(ms: number): void {
    this.t += ms;
    const due = this.waiters.filter((w) => w.at <= this.t);
    this.waiters = this.waiters.filter((w) => w.at > this.t);
    for (const w of due) w.resolve();
  }
}

/** One fake rank: where its files are and how it stands. */
export interface FakeRank {
  jobId: string;
  attempt: number;
  rank: number;
  node: string;
  pid: number;
  logPath: string;
  reportPath: string;
  /** How the rank ended, as `poll` reports it; null while it runs. */
  end: Exclude<RankStatus, { state: "running" }> | null;
  /** The process state letter while it runs (S unless a test or a signal says otherwise). */
  processState: string;
  /** Signals delivered to it, in order. */
  signals: string[];
}

/** Makes a launch fail: the error thrown (with a Node error code, as a spawn error has). */
export function launchError(code: string, message = `spawn ${code}`): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}

/**
 * An Executor over a table of fake ranks. `launch` creates each rank's (empty) log and report files in the attempt
 * folder, as a real executor's ranks would, so the supervisor's ingestion reads real files that the test writes.
 */
export class FakeExecutor implements Executor {
  readonly kind = "fake";
  readonly launches: LaunchRequest[] = [];
  /** Each `stop` call: the ranks it was asked to stop and the grace it got. */
  readonly stops: Array<{ ranks: number[]; graceMs: number }> = [];
  /** Errors the next launches throw, first first (then launches succeed again). */
  readonly launchErrors: Error[] = [];
  private readonly table = new Map<string, FakeRank>();
  private nextPid = 4_000_000;

  /** `remote`: ranks run on hosts the server cannot see (as on Slurm): no pid is handed back. */
  constructor(
    private readonly clock: Clock,
    private readonly remote = false,
  ) {}

  async launch(req: LaunchRequest): Promise<LaunchedRank[]> {
    this.launches.push(req);
    const error = this.launchErrors.shift();
    if (error) throw error;
    const out: LaunchedRank[] = [];
    mkdirSync(req.dir, { recursive: true });
    req.nodes.forEach((node, i) => {
      for (let local = 0; local < req.procsPerNode; local++) {
        const rank = i * req.procsPerNode + local;
        const logPath = path.join(req.dir, `rank-${rank}.log`);
        const reportPath = path.join(req.dir, `rank-${rank}.reports.jsonl`);
        writeFileSync(logPath, "");
        writeFileSync(reportPath, "");
        const pid = this.nextPid++;
        this.table.set(logPath, {
          jobId: req.jobId,
          attempt: req.attempt,
          rank,
          node,
          pid,
          logPath,
          reportPath,
          end: null,
          processState: "S",
          signals: [],
        });
        out.push(
          this.remote
            ? { rank, node, pid: null, startTicks: null, logPath, reportPath }
            : { rank, node, pid, startTicks: pid, logPath, reportPath },
        );
      }
    });
    return out;
  }

  async poll(_attemptDir: string, ranks: readonly RankHandle[]): Promise<RankStatus[]> {
    return ranks.map((h) => {
      const r = this.table.get(h.logPath);
      if (!r) return { rank: h.rank, state: "vanished", at: this.clock.now() };
      return r.end ?? { rank: r.rank, state: "running" };
    });
  }

  async stop(ranks: readonly RankHandle[], graceMs: number): Promise<void> {
    this.stops.push({ ranks: ranks.map((r) => r.rank), graceMs });
    for (const h of ranks) {
      const r = this.table.get(h.logPath);
      if (r && !r.end) r.end = { rank: r.rank, state: "exited", code: null, signal: "SIGTERM", at: this.clock.now() };
    }
  }

  signalRank(handle: RankHandle, signal: NodeJS.Signals): boolean {
    const r = this.table.get(handle.logPath);
    if (!r || r.end) return false;
    r.signals.push(signal);
    if (signal === "SIGKILL") r.end = { rank: r.rank, state: "exited", code: null, signal, at: this.clock.now() };
    if (signal === "SIGSTOP") r.processState = "T";
    if (signal === "SIGCONT") r.processState = "S";
    return true;
  }

  processState(handle: RankHandle): string | null {
    const r = this.table.get(handle.logPath);
    return r && !r.end ? r.processState : null;
  }

  /** The ranks of a job's attempt (the newest launched when `attempt` is left out), by rank. */
  ranks(jobId: string, attempt?: number): FakeRank[] {
    const all = [...this.table.values()].filter((r) => r.jobId === jobId);
    const n = attempt ?? Math.max(0, ...all.map((r) => r.attempt));
    return all.filter((r) => r.attempt === n).sort((a, b) => a.rank - b.rank);
  }

  private rank(jobId: string, rank: number): FakeRank {
    const r = this.ranks(jobId).find((x) => x.rank === rank);
    if (!r) throw new Error(`fake executor: job ${jobId} has no rank ${rank} in its newest attempt`);
    return r;
  }

  /** Appends SDK report lines (objects, written as JSON lines) to a rank's report file. */
  report(jobId: string, rank: number, ...reports: Array<Record<string, unknown>>): void {
    appendFileSync(this.rank(jobId, rank).reportPath, reports.map((r) => `${JSON.stringify(r)}\n`).join(""));
  }

  /** A step report from each given rank (all ranks of the newest attempt when none are given). */
  step(jobId: string, step: number, opts: { loss?: number | string; ranks?: number[] } = {}): void {
    for (const r of opts.ranks ?? this.ranks(jobId).map((x) => x.rank)) {
      this.report(jobId, r, { kind: "step", step, loss: opts.loss ?? 1.5 });
    }
  }

  /** Appends lines to a rank's log. */
  log(jobId: string, rank: number, ...lines: string[]): void {
    appendFileSync(this.rank(jobId, rank).logPath, lines.map((l) => `${l}\n`).join(""));
  }

  /** The rank ends with an exit code or a signal, now. */
  exit(jobId: string, rank: number, end: { code?: number | null; signal?: string | null }): void {
    const r = this.rank(jobId, rank);
    r.end = { rank, state: "exited", code: end.code ?? null, signal: end.signal ?? null, at: this.clock.now() };
  }

  /** The rank is gone without an exit record; `hostLost` says the executor knows its whole host is gone. */
  vanish(jobId: string, rank: number, hostLost?: string): void {
    const r = this.rank(jobId, rank);
    r.end = { rank, state: "vanished", at: this.clock.now(), ...(hostLost !== undefined ? { hostLost } : {}) };
  }

  /** Sets the process state letter of a running rank (T: stopped, D: uninterruptible sleep). */
  setProcessState(jobId: string, rank: number, state: string): void {
    this.rank(jobId, rank).processState = state;
  }
}
