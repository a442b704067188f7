import path from "node:path";
import type { Clock } from "../core/clock.js";
import type { ClusterSpec, PoolSpec } from "../core/spec.js";
import { AttemptState, JobState, assertJobTransition, terminalJobStates } from "../core/states.js";
import type { Executor, RankHandle } from "../executors/port.js";
import type { AttemptRecord, JobRecord, Store } from "../store/port.js";
import type { IncidentFacts } from "./verdict.js";

export interface SupervisorOptions {
  store: Store;
  executor: Executor;
  clock: Clock;
  cluster: ClusterSpec;
  /** SWITCHYARD_HOME: attempt folders go under jobs/. */
  home: string;
  /** How often running jobs are looked at. */
  pollMs?: number;
  /**
   * Pace slow looks at a job (supervisor.ts watchPaced; default true). Tests that drive a fake clock in fixed ticks
   * turn it off: under load a look can take long enough in real time that the next tick would skip the job.
   */
  watchPacing?: boolean;
  log?: (msg: string) => void;
}

/** What the supervisor keeps about a job between ticks (all of it can be lost: the store and files hold the truth). */
export interface JobRuntime {
  /** Earliest time the next attempt may launch (backoff). */
  nextLaunchAt: number;
  busy: boolean;
  waitingNoted: boolean;
  /** The last culprit's node: the next attempt goes elsewhere when it can. */
  avoid: string[];
  /**
   * A hang was found and the ranks were asked for their stacks: the incident is recorded on the first tick after
   * `deadline` (a deadline, not a sleep, so that the wait holds no other job's tick).
   */
  hangDump: HangDump | null;
  /**
   * A big gang is looked at no sooner than this (supervisor.ts watchPaced), on the supervisor's clock and in
   * performance.now() time: the look waits while neither has come. Undefined: at every pass.
   */
  nextWatch?: { clock: number; real: number };
  /** Hosts the last pre-flight left out (said again in the next attempt's event); null when none. */
  preflightNote?: string | null;
}

/** A hang waiting for its stacks: recorded as an incident once `deadline` has passed. */
export interface HangDump {
  attempt: number;
  deadline: number;
  facts: IncidentFacts;
  /** The culprit's log, where its stacks land. */
  logPath: string;
  /** Where gdb writes the culprit's native stacks (`detection.nativeStacks`), or absent. */
  nativePath?: string;
}

/**
 * The ports and the few acts every part of the supervisor shares: saying what happened (events), moving a job's state,
 * stopping an attempt's gang. Each part (queue, launch, watch, incidents, inventory) gets this and nothing else.
 */
export class SupervisorContext {
  constructor(readonly opts: SupervisorOptions) {}

  get store(): Store {
    return this.opts.store;
  }
  get executor(): Executor {
    return this.opts.executor;
  }
  get cluster(): ClusterSpec {
    return this.opts.cluster;
  }
  get home(): string {
    return this.opts.home;
  }
  now(): number {
    return this.opts.clock.now();
  }
  log(message: string): void {
    this.opts.log?.(message);
  }

  pool(name: string): PoolSpec | undefined {
    return this.opts.cluster.pools.find((p) => p.name === name);
  }

  async currentAttempt(jobId: string): Promise<AttemptRecord | undefined> {
    const attempts = await this.store.listAttempts(jobId);
    return attempts[attempts.length - 1];
  }

  async event(jobId: string | null, kind: string, message: string, data: Record<string, unknown> = {}): Promise<void> {
    await this.store.addEvent({ jobId, t: this.now(), kind, message, data });
    this.opts.log?.(`${jobId ?? "-"} ${kind}: ${message}`);
  }

  async stopAttempt(job: JobRecord, attempt: AttemptRecord, state: AttemptState, reason: string): Promise<void> {
    await this.store.updateAttempt(job.id, attempt.n, { state: AttemptState.Stopping });
    const ranks = await this.store.listRanks(job.id, attempt.n);
    const handles: RankHandle[] = ranks;
    await this.executor.stop(handles, job.spec.recovery.graceSeconds * 1000);
    await this.store.updateAttempt(job.id, attempt.n, { state, endedAt: this.now(), reason });
  }

  async setJobState(job: JobRecord, to: JobState, reason: string | null): Promise<void> {
    const current = (await this.store.getJob(job.id))!;
    if (current.state === to) return;
    assertJobTransition(current.state, to);
    await this.store.updateJob(job.id, {
      state: to,
      ...(reason !== null ? { reason } : {}),
      ...(terminalJobStates.has(to) ? { endedAt: this.now() } : {}),
    });
    job.state = to;
    if (terminalJobStates.has(to) && this.executor.release) {
      // The job is over: what it held beyond its attempts (a Slurm allocation) goes back.
      await this.executor.release(path.join(this.home, "jobs", job.id)).catch((err: unknown) => {
        this.log(`${job.id}: releasing its allocation failed: ${(err as Error).message}`);
      });
    }
  }
}
