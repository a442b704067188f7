import { terminalJobStates } from "../core/states.js";
import { defaultStepRetention, type StepRetention } from "./sqlite.js";
import type {
  AttemptRecord,
  CheckpointRecord,
  EventRecord,
  IncidentRecord,
  JobRecord,
  NodeHealthRecord,
  ReplicaRecord,
  ServiceRecord,
  NodeRecord,
  RankCursor,
  RankRecord,
  StepSample,
  Store,
  StrikeRecord,
  TrafficBatch,
  TrafficGatewayRecord,
  TrafficRetention,
  TrafficSampleRecord,
  TrafficTotalRecord,
} from "./port.js";

/** A rank row as stored: the record with every cursor field present, and the count of its stored steps. */
type RankRow = Required<RankRecord> & { stepRows: number };

/**
 * The Store port in memory, for unit tests of the supervisor: nothing survives the process. It answers as the SQLite
 * adapter does (the same conformance suite runs against both, see sqlite.test.ts): records are copies (a caller that
 * changes one changes nothing stored), specs, evidence and event data are stored as JSON, a NaN loss reads back as
 * null, and stored steps are thinned by the same retention rules.
 */
export class MemoryStore implements Store {
  private readonly retention: StepRetention;
  private readonly db: MemoryTables;
  private closed = false;

  constructor(opts: { stepRetention?: Partial<StepRetention> } = {}, tables: MemoryTables = new MemoryTables()) {
    this.retention = { ...defaultStepRetention, ...opts.stepRetention };
    this.db = tables;
  }

  /**
   * A second store over the same contents, as a restarted server opens the same database file: what a test of a
   * control-plane restart needs. This store may be closed first; the new one is open.
   */
  reopen(): MemoryStore {
    return new MemoryStore({ stepRetention: this.retention }, this.db);
  }

  private open(): void {
    if (this.closed) throw new Error("the store is closed");
  }

  async createJob(job: Omit<JobRecord, "endedAt" | "updatedAt" | "restarts" | "reason">): Promise<void> {
    this.open();
    if (this.db.jobs.has(job.id)) throw new Error(`a job with id ${job.id} exists already`);
    this.db.jobs.set(job.id, {
      id: job.id,
      name: job.name,
      spec: json(job.spec),
      state: job.state,
      reason: null,
      restarts: 0,
      createdAt: job.createdAt,
      updatedAt: job.createdAt,
      endedAt: null,
    });
    this.db.jobOrder.set(job.id, this.db.jobOrder.size);
  }

  async updateJob(
    id: string,
    patch: Partial<Pick<JobRecord, "state" | "reason" | "restarts" | "endedAt">>,
  ): Promise<void> {
    this.open();
    const job = this.db.jobs.get(id);
    if (!job) return;
    assign(job, patch, ["state", "reason", "restarts", "endedAt"]);
    job.updatedAt = Date.now();
  }

  async getJob(idOrName: string): Promise<JobRecord | null> {
    this.open();
    const byId = this.db.jobs.get(idOrName);
    if (byId) return copyJob(byId);
    const named = this.sortedJobs().filter((j) => j.name === idOrName);
    return named[0] ? copyJob(named[0]) : null;
  }

  async listJobs(opts: { activeOnly?: boolean } = {}): Promise<JobRecord[]> {
    this.open();
    return this.sortedJobs()
      .filter((j) => !opts.activeOnly || !terminalJobStates.has(j.state))
      .map(copyJob);
  }

  /** Newest first; jobs of the same millisecond, the later created first. */
  private sortedJobs(): JobRecord[] {
    const order = (id: string) => this.db.jobOrder.get(id) ?? 0;
    return [...this.db.jobs.values()].sort((a, b) => b.createdAt - a.createdAt || order(b.id) - order(a.id));
  }

  async createAttempt(a: AttemptRecord): Promise<void> {
    this.open();
    if (!this.db.jobs.has(a.jobId)) throw new Error(`no job ${a.jobId} for attempt ${a.n}`);
    const key = `${a.jobId}\0${a.n}`;
    if (this.db.attempts.has(key)) throw new Error(`attempt ${a.n} of job ${a.jobId} exists already`);
    this.db.attempts.set(key, { ...a, nodes: [...a.nodes] });
  }

  async updateAttempt(
    jobId: string,
    n: number,
    patch: Partial<Pick<AttemptRecord, "state" | "endedAt" | "reason">>,
  ): Promise<void> {
    this.open();
    const a = this.db.attempts.get(`${jobId}\0${n}`);
    if (a) assign(a, patch, ["state", "endedAt", "reason"]);
  }

  async listAttempts(jobId: string): Promise<AttemptRecord[]> {
    this.open();
    return [...this.db.attempts.values()]
      .filter((a) => a.jobId === jobId)
      .sort((a, b) => a.n - b.n)
      .map((a) => ({ ...a, nodes: [...a.nodes] }));
  }

  async upsertRank(r: RankRecord): Promise<void> {
    this.open();
    const key = rankKey(r.jobId, r.attempt, r.rank);
    const row = this.db.ranks.get(key);
    if (row) {
      // As SQLite's ON CONFLICT: the identity and exit fields move; paths and cursors stay as first stored.
      Object.assign(row, {
        node: r.node,
        pid: r.pid,
        startTicks: r.startTicks,
        exitCode: r.exitCode,
        exitSignal: r.exitSignal,
        exitedAt: r.exitedAt,
      });
    } else {
      this.db.ranks.set(key, {
        jobId: r.jobId,
        attempt: r.attempt,
        rank: r.rank,
        node: r.node,
        pid: r.pid,
        startTicks: r.startTicks,
        logPath: r.logPath,
        reportPath: r.reportPath,
        reportOffset: r.reportOffset,
        exitCode: r.exitCode,
        exitSignal: r.exitSignal,
        exitedAt: r.exitedAt,
        rankPid: null,
        logOffset: 0,
        logT: null,
        stampOffset: 0,
        badReports: 0,
        lastStep: null,
        lastT: null,
        stepRows: 0,
      });
    }
    if (r.rankPid !== undefined) this.db.ranks.get(key)!.rankPid = r.rankPid;
  }

  async listRanks(jobId: string, attempt: number): Promise<RankRecord[]> {
    this.open();
    return [...this.db.ranks.values()]
      .filter((r) => r.jobId === jobId && r.attempt === attempt)
      .sort((a, b) => a.rank - b.rank)
      .map(({ stepRows: _rows, ...r }) => ({ ...r }));
  }

  /** Stores a chunk of one rank's samples with the SQLite adapter's retention rules (see SqliteStore.ingestReports). */
  async ingestReportsBatch(
    jobId: string,
    attempt: number,
    chunks: ReadonlyArray<{ rank: number; cursor: RankCursor; samples: StepSample[] }>,
  ): Promise<void> {
    for (const c of chunks) await this.ingestReports(jobId, attempt, c.rank, c.cursor, c.samples);
  }

  async ingestReports(
    jobId: string,
    attempt: number,
    rank: number,
    cursor: number | RankCursor,
    samples: StepSample[],
  ): Promise<void> {
    this.open();
    const patch: RankCursor = typeof cursor === "number" ? { reportOffset: cursor } : cursor;
    const { minSpacingMs, maxRowsPerRank, burst } = this.retention;
    const insert = (s: StepSample) =>
      this.db.steps.set(stepKey(s.jobId, s.attempt, s.rank, s.step), {
        ...s,
        loss: s.loss !== null && Number.isNaN(s.loss) ? null : s.loss,
      });
    let inserted = 0;
    if (samples.length > 0 && samples.length <= burst) {
      for (const s of samples) insert(s);
      inserted = samples.length;
    } else if (samples.length > 0) {
      const [top, second] = this.rankSteps(jobId, attempt, rank).reverse();
      let keptT: number | null = top ? top.t : null;
      // The newest row was stored only for being the newest: the newer samples take its place.
      if (top && second && top.t - second.t < minSpacingMs) {
        this.db.steps.delete(stepKey(jobId, attempt, rank, top.step));
        keptT = second.t;
      }
      samples.forEach((s, i) => {
        const spaced = keptT === null || s.t - keptT >= minSpacingMs;
        const keep = spaced || i === samples.length - 1 || (s.loss !== null && !Number.isFinite(s.loss));
        if (!keep) return;
        insert(s);
        inserted++;
        if (spaced) keptT = s.t;
      });
    }
    const row = this.db.ranks.get(rankKey(jobId, attempt, rank));
    if (!row) return;
    assign(row, patch, ["reportOffset", "logOffset", "logT", "stampOffset", "badReports"]);
    const last = samples.reduce<StepSample | undefined>((a, s) => (a === undefined || s.t >= a.t ? s : a), undefined);
    if (last) {
      const lastStep = Math.max(...samples.map((s) => s.step));
      if (row.lastStep === null || lastStep > row.lastStep) row.lastStep = lastStep;
      if (row.lastT === null || last.t > row.lastT) row.lastT = last.t;
    }
    if (inserted > 0) {
      row.stepRows += inserted;
      if (row.stepRows > maxRowsPerRank) this.thinSteps(row, maxRowsPerRank);
    }
  }

  /** Halves the older rows of a rank's attempt once it holds more than `max`: the first and the newest quarter stay. */
  private thinSteps(row: RankRow, max: number): void {
    const steps = this.rankSteps(row.jobId, row.attempt, row.rank).map((s) => s.step);
    const recent = Math.max(1, Math.floor(max / 4));
    let removed = 0;
    if (steps.length > max) {
      for (let i = 1; i < steps.length - recent; i += 2) {
        this.db.steps.delete(stepKey(row.jobId, row.attempt, row.rank, steps[i]!));
        removed++;
      }
    }
    row.stepRows = steps.length - removed;
  }

  /** One rank's stored steps of one attempt, by step. */
  private rankSteps(jobId: string, attempt: number, rank: number): StepSample[] {
    return [...this.db.steps.values()]
      .filter((s) => s.jobId === jobId && s.attempt === attempt && s.rank === rank)
      .sort((a, b) => a.step - b.step);
  }

  async listSteps(jobId: string, opts: { rank?: number; afterT?: number } = {}): Promise<StepSample[]> {
    this.open();
    const afterT = opts.afterT ?? -1;
    return [...this.db.steps.values()]
      .filter((s) => s.jobId === jobId && (opts.rank === undefined || s.rank === opts.rank) && s.t > afterT)
      .sort((a, b) => a.t - b.t || a.rank - b.rank)
      .map((s) => ({ ...s }));
  }

  async lastStep(jobId: string): Promise<StepSample | null> {
    this.open();
    const newest = [...this.db.steps.values()]
      .filter((s) => s.jobId === jobId)
      .sort((a, b) => b.attempt - a.attempt || b.step - a.step || a.rank - b.rank)[0];
    return newest ? { ...newest } : null;
  }

  async rankProgress(
    jobId: string,
    attempt: number,
  ): Promise<Array<{ rank: number; lastT: number; lastStep: number }>> {
    this.open();
    return [...this.db.ranks.values()]
      .filter((r) => r.jobId === jobId && r.attempt === attempt && r.lastT !== null)
      .sort((a, b) => a.rank - b.rank)
      .map((r) => ({ rank: r.rank, lastT: r.lastT!, lastStep: r.lastStep ?? 0 }));
  }

  async recentSteps(jobId: string, attempt: number, rank: number, limit: number): Promise<StepSample[]> {
    this.open();
    const all = this.rankSteps(jobId, attempt, rank);
    // As SQL's LIMIT: a negative limit is none, 0 is nothing.
    const newest = limit < 0 ? all : limit === 0 ? [] : all.slice(-limit);
    return newest.map((s) => ({ ...s }));
  }

  async addIncident(i: Omit<IncidentRecord, "id">): Promise<number> {
    this.open();
    const id = this.db.nextIncident++;
    this.db.incidents.push({ ...i, id, evidence: json(i.evidence) });
    return id;
  }

  async listIncidents(jobId: string): Promise<IncidentRecord[]> {
    this.open();
    return this.db.incidents.filter((i) => i.jobId === jobId).map((i) => ({ ...i, evidence: json(i.evidence) }));
  }

  async upsertCheckpoint(c: CheckpointRecord): Promise<void> {
    this.open();
    this.db.checkpoints.set(`${c.jobId}\0${c.step}`, { ...c });
  }

  async listCheckpoints(jobId: string): Promise<CheckpointRecord[]> {
    this.open();
    return [...this.db.checkpoints.values()]
      .filter((c) => c.jobId === jobId)
      .sort((a, b) => a.step - b.step)
      .map((c) => ({ ...c }));
  }

  async deleteCheckpoint(jobId: string, step: number): Promise<void> {
    this.open();
    this.db.checkpoints.delete(`${jobId}\0${step}`);
  }

  async syncNodes(nodes: Array<Pick<NodeRecord, "name" | "pool" | "devices">>): Promise<void> {
    this.open();
    const names = new Set(nodes.map((n) => n.name));
    for (const n of nodes) {
      const known = this.db.nodes.get(n.name);
      if (known) Object.assign(known, { pool: n.pool, devices: n.devices });
      else
        this.db.nodes.set(n.name, {
          name: n.name,
          pool: n.pool,
          devices: n.devices,
          cordoned: false,
          strikes: 0,
          reason: null,
        });
    }
    for (const name of [...this.db.nodes.keys()]) if (!names.has(name)) this.db.nodes.delete(name);
  }

  async listNodes(opts: { strikesSince?: number } = {}): Promise<NodeRecord[]> {
    this.open();
    const since = opts.strikesSince ?? 0;
    return [...this.db.nodes.values()]
      .sort((a, b) => compare(a.pool, b.pool) || compare(a.name, b.name))
      .map((n) => ({
        ...n,
        strikes: this.db.strikes.filter((s) => s.node === n.name && !s.cleared && s.t >= since).length,
      }));
  }

  async updateNode(name: string, patch: Partial<Pick<NodeRecord, "cordoned" | "strikes" | "reason">>): Promise<void> {
    this.open();
    if (patch.strikes !== undefined && patch.strikes !== 0) {
      throw new Error("updateNode only clears strikes (strikes: 0); add them with addStrike");
    }
    const node = this.db.nodes.get(name);
    if (node) assign(node, patch, ["cordoned", "strikes", "reason"]);
    if (patch.strikes === 0) for (const s of this.db.strikes) if (s.node === name) s.cleared = true;
  }

  async addStrike(s: Omit<StrikeRecord, "id">): Promise<void> {
    this.open();
    this.db.strikes.push({ ...s, id: this.db.nextStrike++, cleared: false });
  }

  async listStrikes(opts: { node?: string; since?: number }): Promise<StrikeRecord[]> {
    this.open();
    const since = opts.since ?? 0;
    return this.db.strikes
      .filter((s) => !s.cleared && (opts.node === undefined || s.node === opts.node) && s.t >= since)
      .sort((a, b) => a.t - b.t || a.id - b.id)
      .map(({ cleared: _cleared, ...s }) => ({ ...s }));
  }

  async setNodeHealth(h: NodeHealthRecord): Promise<void> {
    this.open();
    this.db.health.set(h.node, json(h));
  }

  async listNodeHealth(opts: { node?: string } = {}): Promise<NodeHealthRecord[]> {
    this.open();
    return [...this.db.health.values()]
      .filter((h) => opts.node === undefined || h.node === opts.node)
      .sort((a, b) => compare(a.node, b.node))
      .map((h) => json(h));
  }

  async putService(r: ServiceRecord): Promise<void> {
    this.open();
    const prior = this.db.services.get(r.name);
    this.db.services.set(r.name, json(prior ? { ...r, createdAt: prior.createdAt } : r));
  }

  async listServices(): Promise<ServiceRecord[]> {
    this.open();
    return [...this.db.services.values()]
      .sort((a, b) => a.createdAt - b.createdAt || compare(a.name, b.name))
      .map((r) => json(r));
  }

  async deleteService(name: string): Promise<void> {
    this.open();
    this.db.services.delete(name);
  }

  async putReplica(r: ReplicaRecord): Promise<void> {
    this.open();
    const prior = this.db.replicas.get(r.jobId);
    this.db.replicas.set(r.jobId, json(prior ? { ...r, createdAt: prior.createdAt } : r));
  }

  async listReplicas(opts: { service?: string } = {}): Promise<ReplicaRecord[]> {
    this.open();
    return [...this.db.replicas.values()]
      .filter((r) => opts.service === undefined || r.service === opts.service)
      .sort((a, b) => a.createdAt - b.createdAt || compare(a.jobId, b.jobId))
      .map((r) => json(r));
  }

  async deleteReplica(jobId: string): Promise<void> {
    this.open();
    this.db.replicas.delete(jobId);
  }

  async recordTraffic(batch: TrafficBatch, retention: TrafficRetention): Promise<void> {
    this.open();
    const db = this.db;
    for (const s of batch.samples) db.trafficSamples.push(json({ ...s, id: db.nextTrafficSample++ }));
    for (const t of batch.totals) {
      const key = `${t.service}\0${t.pool}`;
      const row = db.trafficTotals.get(key) ?? { service: t.service, pool: t.pool, counts: {} };
      for (const [k, v] of Object.entries(t.counts)) row.counts[k] = (row.counts[k] ?? 0) + v;
      db.trafficTotals.set(key, row);
    }
    db.trafficGateways.set(batch.gateway.gateway, json(batch.gateway));
    const newest = Math.max(batch.gateway.t, ...batch.samples.map((s) => s.t));
    const kept = db.trafficSamples.filter((s) => s.t >= newest - retention.keepMs).slice(-retention.maxRows);
    db.trafficSamples.splice(0, db.trafficSamples.length, ...kept);
    const gateways = [...db.trafficGateways.values()].sort((a, b) => b.t - a.t || compare(a.gateway, b.gateway));
    gateways.forEach((g, i) => {
      if (g.t < newest - retention.keepMs || i >= retention.maxGateways) db.trafficGateways.delete(g.gateway);
    });
  }

  async getTrafficGateway(gateway: string): Promise<TrafficGatewayRecord | null> {
    this.open();
    const g = this.db.trafficGateways.get(gateway);
    return g ? json(g) : null;
  }

  async listTrafficGateways(): Promise<Array<Omit<TrafficGatewayRecord, "counters">>> {
    this.open();
    return [...this.db.trafficGateways.values()]
      .sort((a, b) => b.t - a.t || compare(a.gateway, b.gateway))
      .map((g) => ({ gateway: g.gateway, instance: g.instance, t: g.t }));
  }

  async listTrafficSamples(opts: {
    service?: string;
    since: number;
    until?: number;
    limit?: number;
  }): Promise<TrafficSampleRecord[]> {
    this.open();
    return this.db.trafficSamples
      .filter(
        (s) =>
          s.t > opts.since &&
          (opts.until === undefined || s.t <= opts.until) &&
          (opts.service === undefined || s.service === opts.service),
      )
      .sort((a, b) => a.t - b.t || a.id - b.id)
      .slice(0, opts.limit ?? 100_000)
      .map((s) => json(s));
  }

  async listTrafficTotals(): Promise<TrafficTotalRecord[]> {
    this.open();
    return [...this.db.trafficTotals.values()]
      .sort((a, b) => compare(a.service, b.service) || compare(a.pool, b.pool))
      .map((t) => json(t));
  }

  async addEvent(e: Omit<EventRecord, "id">): Promise<number> {
    this.open();
    const id = this.db.nextEvent++;
    this.db.events.push({ ...e, id, data: json(e.data) });
    return id;
  }

  async listEvents(opts: { jobId?: string; afterId?: number; limit?: number }): Promise<EventRecord[]> {
    this.open();
    const afterId = opts.afterId ?? 0;
    return this.db.events
      .filter((e) => (opts.jobId === undefined || e.jobId === opts.jobId) && e.id > afterId)
      .slice(0, opts.limit ?? 1000)
      .map((e) => ({ ...e, data: json(e.data) }));
  }

  async findIdempotencyKey(key: string): Promise<{ jobId: string; requestSha256: string } | null> {
    this.open();
    const k = this.db.keys.get(key);
    return k ? { jobId: k.jobId, requestSha256: k.requestSha256 } : null;
  }

  async recordIdempotencyKey(
    key: string,
    jobId: string,
    requestSha256: string,
    t: number,
    keepMs: number,
  ): Promise<void> {
    this.open();
    for (const [k, v] of this.db.keys) if (v.createdAt < t - keepMs) this.db.keys.delete(k);
    if (this.db.keys.has(key)) throw new Error(`idempotency key ${key} is recorded already`);
    this.db.keys.set(key, { jobId, requestSha256, createdAt: t });
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** What a memory store holds: shared by the stores that `reopen` makes. */
export class MemoryTables {
  readonly jobs = new Map<string, JobRecord>();
  /** Insertion order of jobs, to order jobs created in the same millisecond as SQLite does (newest first). */
  readonly jobOrder = new Map<string, number>();
  readonly attempts = new Map<string, AttemptRecord>();
  readonly ranks = new Map<string, RankRow>();
  readonly steps = new Map<string, StepSample>();
  readonly incidents: IncidentRecord[] = [];
  readonly checkpoints = new Map<string, CheckpointRecord>();
  readonly nodes = new Map<string, NodeRecord>();
  readonly strikes: Array<StrikeRecord & { cleared: boolean }> = [];
  readonly health = new Map<string, NodeHealthRecord>();
  readonly events: EventRecord[] = [];
  readonly keys = new Map<string, { jobId: string; requestSha256: string; createdAt: number }>();
  readonly services = new Map<string, ServiceRecord>();
  readonly replicas = new Map<string, ReplicaRecord>();
  readonly trafficSamples: TrafficSampleRecord[] = [];
  readonly trafficTotals = new Map<string, TrafficTotalRecord>();
  readonly trafficGateways = new Map<string, TrafficGatewayRecord>();
  nextTrafficSample = 1;
  nextIncident = 1;
  nextStrike = 1;
  nextEvent = 1;
}

const rankKey = (jobId: string, attempt: number, rank: number): string => `${jobId}\0${attempt}\0${rank}`;
const stepKey = (jobId: string, attempt: number, rank: number, step: number): string =>
  `${rankKey(jobId, attempt, rank)}\0${step}`;

/** A copy through JSON, as the SQLite adapter stores specs, evidence and event data. */
function json<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

function copyJob(j: JobRecord): JobRecord {
  return { ...j, spec: json(j.spec) };
}

/** Copies the defined fields of `patch` named in `keys` onto `target` (undefined leaves a field as it is). */
function assign<T extends object>(target: T, patch: Partial<T>, keys: ReadonlyArray<keyof T>): void {
  for (const key of keys) {
    const value = patch[key];
    if (value !== undefined) target[key] = value as T[keyof T];
  }
}

/** Byte-wise order, as SQLite's BINARY collation (not the locale's). */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
