import type { AttemptState, JobState } from "../core/states.js";
import type { CompiledJobSpec } from "../core/spec.js";
import type { HealthFinding, NodeHealthStatus } from "../core/health.js";

/**
 * The Store port: everything the supervisor remembers. Adapters (SQLite now, PostgreSQL later) implement it and pass
 * one conformance suite. No connection or transaction type leaks out.
 */

export interface JobRecord {
  id: string;
  name: string;
  spec: CompiledJobSpec;
  state: JobState;
  reason: string | null;
  restarts: number;
  createdAt: number;
  updatedAt: number;
  endedAt: number | null;
}

export interface AttemptRecord {
  jobId: string;
  n: number;
  state: AttemptState;
  pool: string;
  nodes: string[];
  masterPort: number;
  dir: string;
  resumeFrom: string | null;
  resumeStep: number | null;
  startedAt: number;
  endedAt: number | null;
  reason: string | null;
}

export interface RankRecord {
  jobId: string;
  attempt: number;
  rank: number;
  node: string;
  pid: number | null;
  /** Process start time from /proc (clock ticks since boot): identifies the process together with the pid. */
  startTicks: number | null;
  logPath: string;
  reportPath: string;
  reportOffset: number;
  exitCode: number | null;
  exitSignal: string | null;
  exitedAt: number | null;
  /**
   * The training process's own pid (the wrapper's child), once the wrapper has recorded it; `pid` is the wrapper's.
   * Optional on input: an upsert that leaves it out keeps what is stored.
   */
  rankPid?: number | null;
  /** Regex progress: bytes of the rank's log read so far, and the estimated write time of the last byte read. */
  logOffset?: number;
  logT?: number | null;
  /** Bytes read of the wrapper's log write-time stamps (`<log>.stamps`). */
  stampOffset?: number;
  /** Report (and log) lines skipped because they did not parse or were too long. */
  badReports?: number;
  /** The newest step this rank reported in this attempt, and when (kept exact while stored steps are thinned). */
  lastStep?: number | null;
  lastT?: number | null;
}

/** Where ingestion of a rank's files stands; saved atomically with the samples read up to it. */
export interface RankCursor {
  reportOffset?: number;
  logOffset?: number;
  logT?: number | null;
  stampOffset?: number;
  badReports?: number;
}

export interface IncidentRecord {
  id: number;
  jobId: string;
  attempt: number;
  cause: string;
  culpritRank: number | null;
  culpritNode: string | null;
  detectedAt: number;
  summary: string;
  evidence: Record<string, unknown>;
}

export interface NodeRecord {
  name: string;
  pool: string;
  devices: number;
  cordoned: boolean;
  /** Strikes that count now: not cleared and (when listed with a window) not older than the window. */
  strikes: number;
  reason: string | null;
}

/** A node's last health probe (core/health.ts graded it): one row per node, replaced by each probe. */
export interface NodeHealthRecord {
  node: string;
  probedAt: number;
  status: NodeHealthStatus;
  /** What ran it: preflight, periodic, incident, manual. */
  trigger: string;
  findings: HealthFinding[];
  /** The tools' raw outputs, cut to a few KB. */
  excerpt: string;
}

/** One strike against a node: which incident of which job made it, and why. */
export interface StrikeRecord {
  id: number;
  node: string;
  t: number;
  jobId: string | null;
  incidentId: number | null;
  cause: string;
}

export interface EventRecord {
  id: number;
  jobId: string | null;
  t: number;
  kind: string;
  message: string;
  data: Record<string, unknown>;
}

export interface StepSample {
  jobId: string;
  attempt: number;
  rank: number;
  step: number;
  t: number;
  loss: number | null;
  tokens: number | null;
  computeS: number | null;
}

export interface CheckpointRecord {
  jobId: string;
  step: number;
  path: string;
  verified: boolean;
  reason: string | null;
  seenAt: number;
}

/** A deployed service (`switchyard deploy`): its compiled definition, as the services controller keeps it. */
export interface ServiceRecord {
  name: string;
  /** The compiled service (src/supervisor/services.ts: StoredService), stored as JSON. */
  spec: Record<string, unknown>;
  createdAt: number;
  updatedAt: number;
}

/**
 * One replica of a service: a job of the supervisor (`jobId`, workload kind "replica") plus what only serving needs:
 * whether its engine said ready (in which attempt, at which URL), the checkpoint it serves, and its drain.
 */
export interface ReplicaRecord {
  jobId: string;
  service: string;
  /** Its place in the service, `<pool>-<index>`: a rolling update's new replica takes the old one's slot. */
  slot: string;
  /** The pool whose replicas block it was made from. */
  pool: string;
  /** starting (launched, not ready yet), ready (in the backend set), draining (no new requests), stopped. */
  state: "starting" | "ready" | "draining" | "stopped";
  /** The attempt whose engine answered its readiness probe (null: none yet, or it ended). */
  readyAttempt: number | null;
  url: string | null;
  /** The checkpoint it serves (services with model.fromJob), and its step. */
  checkpoint: string | null;
  checkpointStep: number | null;
  drainingSince: number | null;
  createdAt: number;
  updatedAt: number;
}

/**
 * Gateway traffic (issue 14, src/server/traffic.ts): one sample per gateway, service and report interval. `data` is
 * the interval's counts as traffic.ts lays them out (JSON); `service` "" holds what has no service (refusals).
 */
export interface TrafficSampleRecord {
  id: number;
  gateway: string;
  service: string;
  fromT: number;
  t: number;
  data: Record<string, unknown>;
}

/** A gateway's last report: its instance and cumulative counters (the base of the next report's differences). */
export interface TrafficGatewayRecord {
  gateway: string;
  instance: string;
  t: number;
  counters: Record<string, number>;
}

/** Running totals of a service and pool since traffic was first reported (the serving ledger's request counts). */
export interface TrafficTotalRecord {
  service: string;
  pool: string;
  counts: Record<string, number>;
}

export interface TrafficRetention {
  /** Samples older than this are pruned. */
  keepMs: number;
  /** At most this many samples are kept (the oldest go first). */
  maxRows: number;
  /** At most this many gateways are remembered (the longest silent go first). */
  maxGateways: number;
}

/** One gateway report as stored: the gateway's counters, the interval's samples, the additions to the totals. */
export interface TrafficBatch {
  gateway: TrafficGatewayRecord;
  samples: Array<Omit<TrafficSampleRecord, "id">>;
  totals: TrafficTotalRecord[];
}

export interface Store {
  createJob(job: Omit<JobRecord, "endedAt" | "updatedAt" | "restarts" | "reason">): Promise<void>;
  updateJob(id: string, patch: Partial<Pick<JobRecord, "state" | "reason" | "restarts" | "endedAt">>): Promise<void>;
  getJob(idOrName: string): Promise<JobRecord | null>;
  listJobs(opts?: { activeOnly?: boolean }): Promise<JobRecord[]>;

  createAttempt(attempt: AttemptRecord): Promise<void>;
  updateAttempt(
    jobId: string,
    n: number,
    patch: Partial<Pick<AttemptRecord, "state" | "endedAt" | "reason">>,
  ): Promise<void>;
  listAttempts(jobId: string): Promise<AttemptRecord[]>;

  upsertRank(rank: RankRecord): Promise<void>;
  listRanks(jobId: string, attempt: number): Promise<RankRecord[]>;

  /**
   * Appends step samples and moves the rank's cursor (a number: the report offset), atomically: a crash never
   * half-ingests a chunk. Stored steps are thinned (bounded rows per rank and attempt, see SqliteStore) while the
   * rank's newest step and time stay exact.
   */
  ingestReports(
    jobId: string,
    attempt: number,
    rank: number,
    cursor: number | RankCursor,
    samples: StepSample[],
  ): Promise<void>;
  /** `ingestReports` for many ranks of one attempt at once, atomically (one commit per supervision pass). */
  ingestReportsBatch(
    jobId: string,
    attempt: number,
    chunks: ReadonlyArray<{ rank: number; cursor: RankCursor; samples: StepSample[] }>,
  ): Promise<void>;
  listSteps(jobId: string, opts?: { rank?: number; afterT?: number }): Promise<StepSample[]>;
  lastStep(jobId: string): Promise<StepSample | null>;
  /** Newest report time and step of each rank in an attempt. */
  rankProgress(jobId: string, attempt: number): Promise<Array<{ rank: number; lastT: number; lastStep: number }>>;
  /** The newest `limit` samples of one rank in an attempt, oldest first. */
  recentSteps(jobId: string, attempt: number, rank: number, limit: number): Promise<StepSample[]>;

  addIncident(incident: Omit<IncidentRecord, "id">): Promise<number>;
  listIncidents(jobId: string): Promise<IncidentRecord[]>;

  upsertCheckpoint(checkpoint: CheckpointRecord): Promise<void>;
  listCheckpoints(jobId: string): Promise<CheckpointRecord[]>;
  deleteCheckpoint(jobId: string, step: number): Promise<void>;

  /**
   * Makes the node table match the cluster config: new nodes are added, existing ones keep their cordon state and
   * strikes, nodes the config no longer declares are removed.
   */
  syncNodes(nodes: Array<Pick<NodeRecord, "name" | "pool" | "devices">>): Promise<void>;
  /** Nodes; `strikes` counts the uncleared strikes at or after `strikesSince` (default: all uncleared ones). */
  listNodes(opts?: { strikesSince?: number }): Promise<NodeRecord[]>;
  /** `strikes: 0` clears the node's strikes (uncordon); other strike counts come only from addStrike. */
  updateNode(name: string, patch: Partial<Pick<NodeRecord, "cordoned" | "strikes" | "reason">>): Promise<void>;
  addStrike(strike: Omit<StrikeRecord, "id">): Promise<void>;
  /** Uncleared strikes at or after `since`, oldest first. */
  listStrikes(opts: { node?: string; since?: number }): Promise<StrikeRecord[]>;

  /** Records a node's latest probe (replacing the one before). */
  setNodeHealth(health: NodeHealthRecord): Promise<void>;
  /** The latest probe of every node probed (or of one). */
  listNodeHealth(opts?: { node?: string }): Promise<NodeHealthRecord[]>;

  addEvent(event: Omit<EventRecord, "id">): Promise<number>;
  listEvents(opts: { jobId?: string; afterId?: number; limit?: number }): Promise<EventRecord[]>;

  /** The job a submission's Idempotency-Key created, and the SHA-256 of that request's body. */
  findIdempotencyKey(key: string): Promise<{ jobId: string; requestSha256: string } | null>;
  /** Remembers a submission's key; keys older than `keepMs` are forgotten. */
  recordIdempotencyKey(key: string, jobId: string, requestSha256: string, t: number, keepMs: number): Promise<void>;

  /** Services and their replicas (`switchyard deploy`). */
  putService(service: ServiceRecord): Promise<void>;
  listServices(): Promise<ServiceRecord[]>;
  deleteService(name: string): Promise<void>;
  putReplica(replica: ReplicaRecord): Promise<void>;
  /** Replicas of one service (or all), oldest first. */
  listReplicas(opts?: { service?: string }): Promise<ReplicaRecord[]>;
  deleteReplica(jobId: string): Promise<void>;

  /**
   * One traffic report, atomically: its samples appended, its counts added to the totals, the gateway's counters
   * replaced; then samples and gateways beyond `retention` are pruned.
   */
  recordTraffic(batch: TrafficBatch, retention: TrafficRetention): Promise<void>;
  getTrafficGateway(gateway: string): Promise<TrafficGatewayRecord | null>;
  /** Gateways that reported (newest report first), without their counters. */
  listTrafficGateways(): Promise<Array<Omit<TrafficGatewayRecord, "counters">>>;
  /** Samples whose interval ends after `since` (and at or before `until`), of one service or all, oldest first. */
  listTrafficSamples(opts: {
    service?: string;
    since: number;
    until?: number;
    limit?: number;
  }): Promise<TrafficSampleRecord[]>;
  listTrafficTotals(): Promise<TrafficTotalRecord[]>;

  close(): Promise<void>;
}
