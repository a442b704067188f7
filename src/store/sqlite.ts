import { chmodSync, closeSync, openSync } from "node:fs";
import Database from "better-sqlite3";
import type { AttemptState, JobState } from "../core/states.js";
import { terminalJobStates } from "../core/states.js";
import type {
  AttemptRecord,
  CheckpointRecord,
  EventRecord,
  IncidentRecord,
  JobRecord,
  NodeHealthRecord,
  NodeRecord,
  RankCursor,
  RankRecord,
  ReplicaRecord,
  ServiceRecord,
  StepSample,
  Store,
  StrikeRecord,
  TrafficBatch,
  TrafficGatewayRecord,
  TrafficRetention,
  TrafficSampleRecord,
  TrafficTotalRecord,
} from "./port.js";

/** Ordered schema migrations; `user_version` records how many ran. Append only. */
const migrations: readonly string[] = [
  `
  CREATE TABLE jobs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, spec TEXT NOT NULL, state TEXT NOT NULL, reason TEXT,
    restarts INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, ended_at INTEGER
  );
  CREATE INDEX jobs_name ON jobs(name, created_at);
  CREATE TABLE attempts (
    job_id TEXT NOT NULL REFERENCES jobs(id), n INTEGER NOT NULL, state TEXT NOT NULL, pool TEXT NOT NULL,
    nodes TEXT NOT NULL, master_port INTEGER NOT NULL, dir TEXT NOT NULL, resume_from TEXT, resume_step INTEGER,
    started_at INTEGER NOT NULL, ended_at INTEGER, reason TEXT, PRIMARY KEY (job_id, n)
  );
  CREATE TABLE ranks (
    job_id TEXT NOT NULL, attempt INTEGER NOT NULL, rank INTEGER NOT NULL, node TEXT NOT NULL, pid INTEGER,
    start_ticks INTEGER, log_path TEXT NOT NULL, report_path TEXT NOT NULL, report_offset INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER, exit_signal TEXT, exited_at INTEGER, PRIMARY KEY (job_id, attempt, rank)
  );
  CREATE TABLE incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, attempt INTEGER NOT NULL, cause TEXT NOT NULL,
    culprit_rank INTEGER, culprit_node TEXT, detected_at INTEGER NOT NULL, summary TEXT NOT NULL, evidence TEXT NOT NULL
  );
  CREATE INDEX incidents_job ON incidents(job_id);
  CREATE TABLE checkpoints (
    job_id TEXT NOT NULL, step INTEGER NOT NULL, path TEXT NOT NULL, verified INTEGER NOT NULL, reason TEXT,
    seen_at INTEGER NOT NULL, PRIMARY KEY (job_id, step)
  );
  CREATE TABLE nodes (
    name TEXT PRIMARY KEY, pool TEXT NOT NULL, devices INTEGER NOT NULL, cordoned INTEGER NOT NULL DEFAULT 0,
    strikes INTEGER NOT NULL DEFAULT 0, reason TEXT
  );
  CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT, t INTEGER NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL,
    data TEXT NOT NULL
  );
  CREATE INDEX events_job ON events(job_id, id);
  CREATE TABLE steps (
    job_id TEXT NOT NULL, attempt INTEGER NOT NULL, rank INTEGER NOT NULL, step INTEGER NOT NULL, t REAL NOT NULL,
    loss REAL, tokens INTEGER, compute_s REAL, PRIMARY KEY (job_id, attempt, rank, step)
  );
  `,
  // Idempotency-Key of a job submission (POST /api/jobs): a repeat with the same key answers the first job.
  `
  CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY, job_id TEXT NOT NULL, request_sha256 TEXT NOT NULL, created_at INTEGER NOT NULL
  );
  CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
  `,
  // Persisted regex-progress cursors, skipped-line counts, the rank process's pid, each rank's newest step (exact
  // while stored steps are thinned), indexes for a job's newest step and the job list, and strikes as a history that
  // names their incidents.
  `
  ALTER TABLE ranks ADD COLUMN log_offset INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE ranks ADD COLUMN log_t REAL;
  ALTER TABLE ranks ADD COLUMN stamp_offset INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE ranks ADD COLUMN bad_reports INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE ranks ADD COLUMN rank_pid INTEGER;
  ALTER TABLE ranks ADD COLUMN last_step INTEGER;
  ALTER TABLE ranks ADD COLUMN last_t REAL;
  ALTER TABLE ranks ADD COLUMN step_rows INTEGER NOT NULL DEFAULT 0;
  UPDATE ranks SET
    last_step = (SELECT MAX(step) FROM steps s WHERE s.job_id = ranks.job_id AND s.attempt = ranks.attempt
                   AND s.rank = ranks.rank),
    last_t = (SELECT MAX(t) FROM steps s WHERE s.job_id = ranks.job_id AND s.attempt = ranks.attempt
                AND s.rank = ranks.rank),
    step_rows = (SELECT COUNT(*) FROM steps s WHERE s.job_id = ranks.job_id AND s.attempt = ranks.attempt
                   AND s.rank = ranks.rank);
  CREATE INDEX steps_newest ON steps(job_id, attempt DESC, step DESC, rank);
  CREATE INDEX jobs_created ON jobs(created_at);
  CREATE INDEX jobs_state ON jobs(state, created_at);
  CREATE TABLE strikes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL, t INTEGER NOT NULL, job_id TEXT, incident_id INTEGER,
    cause TEXT NOT NULL, cleared INTEGER NOT NULL DEFAULT 0
  );
  CREATE INDEX strikes_node ON strikes(node, cleared, t);
  WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < 1000)
  INSERT INTO strikes (node, t, cause)
    SELECT n.name, CAST(strftime('%s', 'now') AS INTEGER) * 1000, 'recorded before strike history'
    FROM nodes n JOIN seq ON seq.i <= n.strikes;
  `,
  // Node health: each node's latest probe (docs/health.md).
  `
  CREATE TABLE node_health (
    node TEXT PRIMARY KEY, probed_at INTEGER NOT NULL, status TEXT NOT NULL, trigger TEXT NOT NULL,
    findings TEXT NOT NULL, excerpt TEXT NOT NULL
  );
  `,
  // Services and their replicas (switchyard deploy, issue 14): the compiled service and each replica's serving state.
  `
  CREATE TABLE services (
    name TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL
  );
  CREATE TABLE replicas (
    job_id TEXT PRIMARY KEY, service TEXT NOT NULL, record TEXT NOT NULL, created_at INTEGER NOT NULL
  );
  CREATE INDEX replicas_service ON replicas(service, created_at);
  `,
  // Gateway traffic (issue 14, src/server/traffic.ts): samples per gateway, service and report interval (bounded by
  // the retention the server passes), running totals per service and pool, each gateway's last counters.
  `
  CREATE TABLE traffic_samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT, gateway TEXT NOT NULL, service TEXT NOT NULL, from_t INTEGER NOT NULL,
    t INTEGER NOT NULL, data TEXT NOT NULL
  );
  CREATE INDEX traffic_samples_t ON traffic_samples(t);
  CREATE INDEX traffic_samples_service ON traffic_samples(service, t);
  CREATE TABLE traffic_totals (
    service TEXT NOT NULL, pool TEXT NOT NULL, counts TEXT NOT NULL, PRIMARY KEY (service, pool)
  );
  CREATE TABLE traffic_gateways (
    gateway TEXT PRIMARY KEY, instance TEXT NOT NULL, t INTEGER NOT NULL, counters TEXT NOT NULL
  );
  `,
];

/** How many step rows are kept per rank and attempt, and how far apart in time (see ingestReports). */
export interface StepRetention {
  /** In a flood, samples closer than this to the previous stored one are not stored (the newest always is). */
  minSpacingMs: number;
  /** Above this many rows per rank and attempt, every other older row is dropped (the first and recent ones stay). */
  maxRowsPerRank: number;
  /** A chunk of at most this many samples is stored whole; a bigger one (a flood) is thinned by `minSpacingMs`. */
  burst: number;
}

export const defaultStepRetention: StepRetention = { minSpacingMs: 1000, maxRowsPerRank: 2000, burst: 64 };

type Row = Record<string, unknown>;

const num = (v: unknown): number => Number(v);
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const strOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));

/** SQLite adapter: one file, WAL journal, synchronous=FULL so a kill at any instant leaves a consistent database. */
export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly retention: StepRetention;
  /** Prepared statements by SQL text: the hot paths (report ingestion) prepare each statement once. */
  private readonly statements = new Map<string, Database.Statement>();

  private stmt(sql: string): Database.Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  constructor(file: string, opts: { stepRetention?: Partial<StepRetention> } = {}) {
    this.retention = { ...defaultStepRetention, ...opts.stepRetention };
    if (file !== ":memory:" && file !== "") privateFiles(file);
    this.db = new Database(file);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = FULL");
    this.db.pragma("busy_timeout = 5000");
    this.db.pragma("foreign_keys = ON");
    this.migrate();
  }

  private migrate(): void {
    const current = this.db.pragma("user_version", { simple: true }) as number;
    for (let v = current; v < migrations.length; v++) {
      this.db.transaction(() => {
        this.db.exec(migrations[v]!);
        this.db.pragma(`user_version = ${v + 1}`);
      })();
    }
  }

  async createJob(job: Omit<JobRecord, "endedAt" | "updatedAt" | "restarts" | "reason">): Promise<void> {
    this.db
      .prepare(
        "INSERT INTO jobs (id, name, spec, state, created_at, updated_at) VALUES (@id, @name, @spec, @state, @t, @t)",
      )
      .run({ id: job.id, name: job.name, spec: JSON.stringify(job.spec), state: job.state, t: job.createdAt });
  }

  async updateJob(
    id: string,
    patch: Partial<Pick<JobRecord, "state" | "reason" | "restarts" | "endedAt">>,
  ): Promise<void> {
    const { sets, params } = assignments(patch, {
      state: "state",
      reason: "reason",
      restarts: "restarts",
      endedAt: "ended_at",
    });
    sets.push("updated_at = @now");
    this.db.prepare(`UPDATE jobs SET ${sets.join(", ")} WHERE id = @id`).run({ ...params, id, now: Date.now() });
  }

  async getJob(idOrName: string): Promise<JobRecord | null> {
    const row = this.db
      .prepare("SELECT * FROM jobs WHERE id = ? OR name = ? ORDER BY (id = ?) DESC, created_at DESC LIMIT 1")
      .get(idOrName, idOrName, idOrName) as Row | undefined;
    return row ? toJob(row) : null;
  }

  async listJobs(opts: { activeOnly?: boolean } = {}): Promise<JobRecord[]> {
    // Active jobs are filtered in SQL: the supervisor lists them every tick, however many jobs have ended.
    const terminal = [...terminalJobStates];
    const rows = (
      opts.activeOnly
        ? this.db
            .prepare(
              `SELECT * FROM jobs WHERE state NOT IN (${terminal.map(() => "?").join(", ")}) ORDER BY created_at DESC`,
            )
            .all(...terminal)
        : this.db.prepare("SELECT * FROM jobs ORDER BY created_at DESC").all()
    ) as Row[];
    return rows.map(toJob);
  }

  async createAttempt(a: AttemptRecord): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO attempts (job_id, n, state, pool, nodes, master_port, dir, resume_from, resume_step, started_at,
         ended_at, reason) VALUES (@jobId, @n, @state, @pool, @nodes, @masterPort, @dir, @resumeFrom, @resumeStep,
         @startedAt, @endedAt, @reason)`,
      )
      .run({ ...a, nodes: JSON.stringify(a.nodes) });
  }

  async updateAttempt(
    jobId: string,
    n: number,
    patch: Partial<Pick<AttemptRecord, "state" | "endedAt" | "reason">>,
  ): Promise<void> {
    const { sets, params } = assignments(patch, { state: "state", endedAt: "ended_at", reason: "reason" });
    if (sets.length === 0) return;
    this.db
      .prepare(`UPDATE attempts SET ${sets.join(", ")} WHERE job_id = @jobId AND n = @n`)
      .run({ ...params, jobId, n });
  }

  async listAttempts(jobId: string): Promise<AttemptRecord[]> {
    const rows = this.db.prepare("SELECT * FROM attempts WHERE job_id = ? ORDER BY n").all(jobId) as Row[];
    return rows.map((r) => ({
      jobId: String(r.job_id),
      n: num(r.n),
      state: String(r.state) as AttemptState,
      pool: String(r.pool),
      nodes: JSON.parse(String(r.nodes)) as string[],
      masterPort: num(r.master_port),
      dir: String(r.dir),
      resumeFrom: strOrNull(r.resume_from),
      resumeStep: numOrNull(r.resume_step),
      startedAt: num(r.started_at),
      endedAt: numOrNull(r.ended_at),
      reason: strOrNull(r.reason),
    }));
  }

  async upsertRank(r: RankRecord): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO ranks (job_id, attempt, rank, node, pid, start_ticks, log_path, report_path, report_offset,
           exit_code, exit_signal, exited_at)
         VALUES (@jobId, @attempt, @rank, @node, @pid, @startTicks, @logPath, @reportPath, @reportOffset, @exitCode,
           @exitSignal, @exitedAt)
         ON CONFLICT (job_id, attempt, rank) DO UPDATE SET node = excluded.node, pid = excluded.pid,
           start_ticks = excluded.start_ticks, exit_code = excluded.exit_code, exit_signal = excluded.exit_signal,
           exited_at = excluded.exited_at`,
      )
      .run({
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
      });
    if (r.rankPid !== undefined) {
      this.db
        .prepare("UPDATE ranks SET rank_pid = ? WHERE job_id = ? AND attempt = ? AND rank = ?")
        .run(r.rankPid, r.jobId, r.attempt, r.rank);
    }
  }

  async listRanks(jobId: string, attempt: number): Promise<RankRecord[]> {
    const rows = this.db
      .prepare("SELECT * FROM ranks WHERE job_id = ? AND attempt = ? ORDER BY rank")
      .all(jobId, attempt) as Row[];
    return rows.map((r) => ({
      jobId: String(r.job_id),
      attempt: num(r.attempt),
      rank: num(r.rank),
      node: String(r.node),
      pid: numOrNull(r.pid),
      startTicks: numOrNull(r.start_ticks),
      logPath: String(r.log_path),
      reportPath: String(r.report_path),
      reportOffset: num(r.report_offset),
      exitCode: numOrNull(r.exit_code),
      exitSignal: strOrNull(r.exit_signal),
      exitedAt: numOrNull(r.exited_at),
      rankPid: numOrNull(r.rank_pid),
      logOffset: num(r.log_offset),
      logT: numOrNull(r.log_t),
      stampOffset: num(r.stamp_offset),
      badReports: num(r.bad_reports),
      lastStep: numOrNull(r.last_step),
      lastT: numOrNull(r.last_t),
    }));
  }

  /**
   * Stores a chunk of one rank's samples with bounded rows. A chunk of up to `burst` samples (one pass's worth at any
   * ordinary pace) is stored whole; in a bigger one a sample closer than `minSpacingMs` to the previous stored one is
   * skipped, except the chunk's last (the rank's newest step, replaced by the next flood chunk's if it was kept only
   * for being newest) and a non-finite loss. Above `maxRowsPerRank` rows the older ones are halved. The rank's newest step
   * and time are kept exactly in the ranks table, so hang detection and progress never see the thinning.
   */
  async ingestReports(
    jobId: string,
    attempt: number,
    rank: number,
    cursor: number | RankCursor,
    samples: StepSample[],
  ): Promise<void> {
    this.db.transaction(() => this.ingestOne(jobId, attempt, rank, cursor, samples))();
  }

  /** One pass over many ranks of an attempt in one transaction: one commit (one WAL sync) instead of one per rank. */
  async ingestReportsBatch(
    jobId: string,
    attempt: number,
    chunks: ReadonlyArray<{ rank: number; cursor: RankCursor; samples: StepSample[] }>,
  ): Promise<void> {
    if (chunks.length === 0) return;
    this.db.transaction(() => {
      for (const c of chunks) this.ingestOne(jobId, attempt, c.rank, c.cursor, c.samples);
    })();
  }

  private ingestOne(
    jobId: string,
    attempt: number,
    rank: number,
    cursor: number | RankCursor,
    samples: StepSample[],
  ): void {
    const patch: RankCursor = typeof cursor === "number" ? { reportOffset: cursor } : cursor;
    const insert = this.stmt(
      `INSERT OR REPLACE INTO steps (job_id, attempt, rank, step, t, loss, tokens, compute_s)
       VALUES (@jobId, @attempt, @rank, @step, @t, @loss, @tokens, @computeS)`,
    );
    const newest = this.stmt(
      "SELECT step, t, loss FROM steps WHERE job_id = ? AND attempt = ? AND rank = ? ORDER BY step DESC LIMIT 2",
    );
    const remove = this.stmt("DELETE FROM steps WHERE job_id = ? AND attempt = ? AND rank = ? AND step = ?");
    const { sets, params } = assignments(patch as Record<string, unknown>, {
      reportOffset: "report_offset",
      logOffset: "log_offset",
      logT: "log_t",
      stampOffset: "stamp_offset",
      badReports: "bad_reports",
    });
    const last = samples.reduce<StepSample | undefined>((a, s) => (a === undefined || s.t >= a.t ? s : a), undefined);
    if (last) {
      sets.push(
        "last_step = CASE WHEN last_step IS NULL OR @lastStep > last_step THEN @lastStep ELSE last_step END",
        "last_t = CASE WHEN last_t IS NULL OR @lastT > last_t THEN @lastT ELSE last_t END",
      );
      params.lastStep = Math.max(...samples.map((s) => s.step));
      params.lastT = last.t;
    }
    const move =
      sets.length > 0
        ? this.stmt(`UPDATE ranks SET ${sets.join(", ")} WHERE job_id = @jobId AND attempt = @attempt AND rank = @rank`)
        : null;
    const { minSpacingMs, maxRowsPerRank, burst } = this.retention;
    {
      let inserted = 0;
      if (samples.length > 0 && samples.length <= burst) {
        for (const s of samples) insert.run(s);
        inserted = samples.length;
      } else if (samples.length > 0) {
        const [top, second] = newest.all(jobId, attempt, rank) as Row[];
        let keptT: number | null = top ? num(top.t) : null;
        // The newest row was stored only for being the newest: the newer samples take its place.
        if (top && second && num(top.t) - num(second.t) < minSpacingMs) {
          remove.run(jobId, attempt, rank, num(top.step));
          keptT = num(second.t);
        }
        samples.forEach((s, i) => {
          const spaced = keptT === null || s.t - keptT >= minSpacingMs;
          const keep = spaced || i === samples.length - 1 || (s.loss !== null && !Number.isFinite(s.loss));
          if (!keep) return;
          insert.run(s);
          inserted++;
          if (spaced) keptT = s.t;
        });
      }
      move?.run({ ...params, jobId, attempt, rank });
      if (inserted > 0) this.thinSteps(jobId, attempt, rank, inserted, maxRowsPerRank);
    }
  }

  /** Halves the older rows of a rank's attempt once it holds more than `max`: the first and the newest quarter stay. */
  private thinSteps(jobId: string, attempt: number, rank: number, inserted: number, max: number): void {
    const key = [jobId, attempt, rank] as const;
    const counted = this.stmt(
      "UPDATE ranks SET step_rows = step_rows + ? WHERE job_id = ? AND attempt = ? AND rank = ? RETURNING step_rows",
    ).get(inserted, ...key) as Row | undefined;
    if (!counted || num(counted.step_rows) <= max) return;
    const steps = (
      this.db
        .prepare("SELECT step FROM steps WHERE job_id = ? AND attempt = ? AND rank = ? ORDER BY step")
        .all(...key) as Row[]
    ).map((r) => num(r.step));
    const recent = Math.max(1, Math.floor(max / 4));
    const remove = this.db.prepare("DELETE FROM steps WHERE job_id = ? AND attempt = ? AND rank = ? AND step = ?");
    let removed = 0;
    if (steps.length > max) {
      for (let i = 1; i < steps.length - recent; i += 2) {
        remove.run(...key, steps[i]!);
        removed++;
      }
    }
    this.db
      .prepare("UPDATE ranks SET step_rows = ? WHERE job_id = ? AND attempt = ? AND rank = ?")
      .run(steps.length - removed, ...key);
  }

  async listSteps(jobId: string, opts: { rank?: number; afterT?: number } = {}): Promise<StepSample[]> {
    // One rank's steps go through the primary key (job, attempt, rank, step) once per attempt: `rank = @rank` alone,
    // behind the attempt column, would scan every rank's rows of the job (4,096 ranks: hundreds of thousands).
    const rows = (
      opts.rank !== undefined
        ? this.stmt(
            `SELECT * FROM steps WHERE job_id = @jobId
               AND attempt IN (SELECT n FROM attempts WHERE job_id = @jobId) AND rank = @rank AND t > @afterT
             ORDER BY t, rank`,
          ).all({ jobId, rank: opts.rank, afterT: opts.afterT ?? -1 })
        : this.stmt("SELECT * FROM steps WHERE job_id = @jobId AND t > @afterT ORDER BY t, rank").all({
            jobId,
            afterT: opts.afterT ?? -1,
          })
    ) as Row[];
    return rows.map(toStep);
  }

  async lastStep(jobId: string): Promise<StepSample | null> {
    const row = this.db
      .prepare("SELECT * FROM steps WHERE job_id = ? ORDER BY attempt DESC, step DESC, rank LIMIT 1")
      .get(jobId) as Row | undefined;
    return row ? toStep(row) : null;
  }

  async rankProgress(
    jobId: string,
    attempt: number,
  ): Promise<Array<{ rank: number; lastT: number; lastStep: number }>> {
    const rows = this.db
      .prepare(
        `SELECT rank, last_t, last_step FROM ranks WHERE job_id = ? AND attempt = ? AND last_t IS NOT NULL
         ORDER BY rank`,
      )
      .all(jobId, attempt) as Row[];
    return rows.map((r) => ({ rank: num(r.rank), lastT: num(r.last_t), lastStep: num(r.last_step) }));
  }

  async recentSteps(jobId: string, attempt: number, rank: number, limit: number): Promise<StepSample[]> {
    const rows = this.db
      .prepare("SELECT * FROM steps WHERE job_id = ? AND attempt = ? AND rank = ? ORDER BY step DESC LIMIT ?")
      .all(jobId, attempt, rank, limit) as Row[];
    return rows.map(toStep).reverse();
  }

  async addIncident(i: Omit<IncidentRecord, "id">): Promise<number> {
    const info = this.db
      .prepare(
        `INSERT INTO incidents (job_id, attempt, cause, culprit_rank, culprit_node, detected_at, summary, evidence)
         VALUES (@jobId, @attempt, @cause, @culpritRank, @culpritNode, @detectedAt, @summary, @evidence)`,
      )
      .run({ ...i, evidence: JSON.stringify(i.evidence) });
    return Number(info.lastInsertRowid);
  }

  async listIncidents(jobId: string): Promise<IncidentRecord[]> {
    const rows = this.db.prepare("SELECT * FROM incidents WHERE job_id = ? ORDER BY id").all(jobId) as Row[];
    return rows.map((r) => ({
      id: num(r.id),
      jobId: String(r.job_id),
      attempt: num(r.attempt),
      cause: String(r.cause),
      culpritRank: numOrNull(r.culprit_rank),
      culpritNode: strOrNull(r.culprit_node),
      detectedAt: num(r.detected_at),
      summary: String(r.summary),
      evidence: JSON.parse(String(r.evidence)) as Record<string, unknown>,
    }));
  }

  async upsertCheckpoint(c: CheckpointRecord): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO checkpoints (job_id, step, path, verified, reason, seen_at)
         VALUES (@jobId, @step, @path, @verified, @reason, @seenAt)
         ON CONFLICT (job_id, step) DO UPDATE SET path = excluded.path, verified = excluded.verified,
           reason = excluded.reason, seen_at = excluded.seen_at`,
      )
      .run({ ...c, verified: c.verified ? 1 : 0 });
  }

  async listCheckpoints(jobId: string): Promise<CheckpointRecord[]> {
    const rows = this.db.prepare("SELECT * FROM checkpoints WHERE job_id = ? ORDER BY step").all(jobId) as Row[];
    return rows.map((r) => ({
      jobId: String(r.job_id),
      step: num(r.step),
      path: String(r.path),
      verified: num(r.verified) === 1,
      reason: strOrNull(r.reason),
      seenAt: num(r.seen_at),
    }));
  }

  async deleteCheckpoint(jobId: string, step: number): Promise<void> {
    this.db.prepare("DELETE FROM checkpoints WHERE job_id = ? AND step = ?").run(jobId, step);
  }

  async syncNodes(nodes: Array<Pick<NodeRecord, "name" | "pool" | "devices">>): Promise<void> {
    const upsert = this.db.prepare(
      `INSERT INTO nodes (name, pool, devices) VALUES (@name, @pool, @devices)
       ON CONFLICT (name) DO UPDATE SET pool = excluded.pool, devices = excluded.devices`,
    );
    const names = new Set(nodes.map((n) => n.name));
    const stale = (this.db.prepare("SELECT name FROM nodes").all() as Row[])
      .map((r) => String(r.name))
      .filter((n) => !names.has(n));
    const remove = this.db.prepare("DELETE FROM nodes WHERE name = ?");
    this.db.transaction(() => {
      for (const n of nodes) upsert.run(n);
      for (const name of stale) remove.run(name);
    })();
  }

  async listNodes(opts: { strikesSince?: number } = {}): Promise<NodeRecord[]> {
    const rows = this.db
      .prepare(
        `SELECT n.*, (SELECT COUNT(*) FROM strikes s WHERE s.node = n.name AND s.cleared = 0 AND s.t >= @since)
           AS live_strikes
         FROM nodes n ORDER BY pool, name`,
      )
      .all({ since: opts.strikesSince ?? 0 }) as Row[];
    return rows.map((r) => ({
      name: String(r.name),
      pool: String(r.pool),
      devices: num(r.devices),
      cordoned: num(r.cordoned) === 1,
      strikes: num(r.live_strikes),
      reason: strOrNull(r.reason),
    }));
  }

  async updateNode(name: string, patch: Partial<Pick<NodeRecord, "cordoned" | "strikes" | "reason">>): Promise<void> {
    if (patch.strikes !== undefined && patch.strikes !== 0) {
      throw new Error("updateNode only clears strikes (strikes: 0); add them with addStrike");
    }
    const { sets, params } = assignments(
      { ...patch, cordoned: patch.cordoned === undefined ? undefined : patch.cordoned ? 1 : 0 },
      { cordoned: "cordoned", strikes: "strikes", reason: "reason" },
    );
    this.db.transaction(() => {
      if (sets.length > 0)
        this.db.prepare(`UPDATE nodes SET ${sets.join(", ")} WHERE name = @name`).run({ ...params, name });
      if (patch.strikes === 0) this.db.prepare("UPDATE strikes SET cleared = 1 WHERE node = ?").run(name);
    })();
  }

  async addStrike(s: Omit<StrikeRecord, "id">): Promise<void> {
    this.db.transaction(() => {
      this.db
        .prepare(
          "INSERT INTO strikes (node, t, job_id, incident_id, cause) VALUES (@node, @t, @jobId, @incidentId, @cause)",
        )
        .run(s);
      this.db.prepare("UPDATE nodes SET strikes = strikes + 1 WHERE name = ?").run(s.node);
    })();
  }

  async listStrikes(opts: { node?: string; since?: number }): Promise<StrikeRecord[]> {
    const rows = this.db
      .prepare(
        `SELECT * FROM strikes WHERE cleared = 0 AND (@node IS NULL OR node = @node) AND t >= @since ORDER BY t, id`,
      )
      .all({ node: opts.node ?? null, since: opts.since ?? 0 }) as Row[];
    return rows.map((r) => ({
      id: num(r.id),
      node: String(r.node),
      t: num(r.t),
      jobId: strOrNull(r.job_id),
      incidentId: numOrNull(r.incident_id),
      cause: String(r.cause),
    }));
  }

  async setNodeHealth(h: NodeHealthRecord): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO node_health (node, probed_at, status, trigger, findings, excerpt)
         VALUES (@node, @probedAt, @status, @trigger, @findings, @excerpt)
         ON CONFLICT (node) DO UPDATE SET probed_at = excluded.probed_at, status = excluded.status,
           trigger = excluded.trigger, findings = excluded.findings, excerpt = excluded.excerpt`,
      )
      .run({ ...h, findings: JSON.stringify(h.findings) });
  }

  async listNodeHealth(opts: { node?: string } = {}): Promise<NodeHealthRecord[]> {
    const rows = this.db
      .prepare("SELECT * FROM node_health WHERE @node IS NULL OR node = @node ORDER BY node")
      .all({ node: opts.node ?? null }) as Row[];
    return rows.map((r) => ({
      node: String(r.node),
      probedAt: num(r.probed_at),
      status: String(r.status) as NodeHealthRecord["status"],
      trigger: String(r.trigger),
      findings: JSON.parse(String(r.findings)) as NodeHealthRecord["findings"],
      excerpt: String(r.excerpt),
    }));
  }

  async putService(r: ServiceRecord): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO services (name, spec, created_at, updated_at) VALUES (@name, @spec, @createdAt, @updatedAt)
         ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at`,
      )
      .run({ ...r, spec: JSON.stringify(r.spec) });
  }

  async listServices(): Promise<ServiceRecord[]> {
    const rows = this.db.prepare("SELECT * FROM services ORDER BY created_at, name").all() as Row[];
    return rows.map((r) => ({
      name: String(r.name),
      spec: JSON.parse(String(r.spec)) as Record<string, unknown>,
      createdAt: num(r.created_at),
      updatedAt: num(r.updated_at),
    }));
  }

  async deleteService(name: string): Promise<void> {
    this.db.prepare("DELETE FROM services WHERE name = ?").run(name);
  }

  async putReplica(r: ReplicaRecord): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO replicas (job_id, service, record, created_at) VALUES (@jobId, @service, @record, @createdAt)
         ON CONFLICT (job_id) DO UPDATE SET record = excluded.record`,
      )
      .run({ jobId: r.jobId, service: r.service, record: JSON.stringify(r), createdAt: r.createdAt });
  }

  async listReplicas(opts: { service?: string } = {}): Promise<ReplicaRecord[]> {
    const rows = this.db
      .prepare("SELECT record FROM replicas WHERE @service IS NULL OR service = @service ORDER BY created_at, job_id")
      .all({ service: opts.service ?? null }) as Row[];
    return rows.map((r) => JSON.parse(String(r.record)) as ReplicaRecord);
  }

  async deleteReplica(jobId: string): Promise<void> {
    this.db.prepare("DELETE FROM replicas WHERE job_id = ?").run(jobId);
  }

  async recordTraffic(batch: TrafficBatch, retention: TrafficRetention): Promise<void> {
    this.db.transaction(() => {
      const insert = this.stmt(
        "INSERT INTO traffic_samples (gateway, service, from_t, t, data) VALUES (@gateway, @service, @fromT, @t, @data)",
      );
      for (const s of batch.samples) insert.run({ ...s, data: JSON.stringify(s.data) });
      const get = this.stmt("SELECT counts FROM traffic_totals WHERE service = ? AND pool = ?");
      const put = this.stmt(
        `INSERT INTO traffic_totals (service, pool, counts) VALUES (@service, @pool, @counts)
         ON CONFLICT (service, pool) DO UPDATE SET counts = excluded.counts`,
      );
      for (const t of batch.totals) {
        const row = get.get(t.service, t.pool) as Row | undefined;
        const counts = row ? (JSON.parse(String(row.counts)) as Record<string, number>) : {};
        for (const [k, v] of Object.entries(t.counts)) counts[k] = (counts[k] ?? 0) + v;
        put.run({ service: t.service, pool: t.pool, counts: JSON.stringify(counts) });
      }
      const g = batch.gateway;
      this.stmt(
        `INSERT INTO traffic_gateways (gateway, instance, t, counters) VALUES (@gateway, @instance, @t, @counters)
         ON CONFLICT (gateway) DO UPDATE SET instance = excluded.instance, t = excluded.t, counters = excluded.counters`,
      ).run({ ...g, counters: JSON.stringify(g.counters) });
      const newest = Math.max(g.t, ...batch.samples.map((s) => s.t));
      this.stmt("DELETE FROM traffic_samples WHERE t < ?").run(newest - retention.keepMs);
      this.stmt(
        "DELETE FROM traffic_samples WHERE id <= (SELECT id FROM traffic_samples ORDER BY id DESC LIMIT 1 OFFSET ?)",
      ).run(retention.maxRows);
      this.stmt(
        `DELETE FROM traffic_gateways WHERE t < @old OR gateway IN
           (SELECT gateway FROM traffic_gateways ORDER BY t DESC, gateway LIMIT -1 OFFSET @keep)`,
      ).run({ old: newest - retention.keepMs, keep: retention.maxGateways });
    })();
  }

  async getTrafficGateway(gateway: string): Promise<TrafficGatewayRecord | null> {
    const row = this.stmt("SELECT * FROM traffic_gateways WHERE gateway = ?").get(gateway) as Row | undefined;
    if (!row) return null;
    return {
      gateway: String(row.gateway),
      instance: String(row.instance),
      t: num(row.t),
      counters: JSON.parse(String(row.counters)) as Record<string, number>,
    };
  }

  async listTrafficGateways(): Promise<Array<Omit<TrafficGatewayRecord, "counters">>> {
    const rows = this.stmt("SELECT gateway, instance, t FROM traffic_gateways ORDER BY t DESC, gateway").all() as Row[];
    return rows.map((r) => ({ gateway: String(r.gateway), instance: String(r.instance), t: num(r.t) }));
  }

  async listTrafficSamples(opts: {
    service?: string;
    since: number;
    until?: number;
    limit?: number;
  }): Promise<TrafficSampleRecord[]> {
    const rows = this.stmt(
      `SELECT * FROM traffic_samples WHERE t > @since AND (@until IS NULL OR t <= @until)
         AND (@service IS NULL OR service = @service) ORDER BY t, id LIMIT @limit`,
    ).all({
      since: opts.since,
      until: opts.until ?? null,
      service: opts.service ?? null,
      limit: opts.limit ?? 100_000,
    }) as Row[];
    return rows.map((r) => ({
      id: num(r.id),
      gateway: String(r.gateway),
      service: String(r.service),
      fromT: num(r.from_t),
      t: num(r.t),
      data: JSON.parse(String(r.data)) as Record<string, unknown>,
    }));
  }

  async listTrafficTotals(): Promise<TrafficTotalRecord[]> {
    const rows = this.stmt("SELECT * FROM traffic_totals ORDER BY service, pool").all() as Row[];
    return rows.map((r) => ({
      service: String(r.service),
      pool: String(r.pool),
      counts: JSON.parse(String(r.counts)) as Record<string, number>,
    }));
  }

  async addEvent(e: Omit<EventRecord, "id">): Promise<number> {
    const info = this.db
      .prepare("INSERT INTO events (job_id, t, kind, message, data) VALUES (@jobId, @t, @kind, @message, @data)")
      .run({ ...e, data: JSON.stringify(e.data) });
    return Number(info.lastInsertRowid);
  }

  async listEvents(opts: { jobId?: string; afterId?: number; limit?: number }): Promise<EventRecord[]> {
    const rows = this.db
      .prepare(
        `SELECT * FROM events WHERE (@jobId IS NULL OR job_id = @jobId) AND id > @afterId ORDER BY id LIMIT @limit`,
      )
      .all({ jobId: opts.jobId ?? null, afterId: opts.afterId ?? 0, limit: opts.limit ?? 1000 }) as Row[];
    return rows.map((r) => ({
      id: num(r.id),
      jobId: strOrNull(r.job_id),
      t: num(r.t),
      kind: String(r.kind),
      message: String(r.message),
      data: JSON.parse(String(r.data)) as Record<string, unknown>,
    }));
  }

  async findIdempotencyKey(key: string): Promise<{ jobId: string; requestSha256: string } | null> {
    const row = this.db.prepare("SELECT job_id, request_sha256 FROM idempotency_keys WHERE key = ?").get(key) as
      Row | undefined;
    return row ? { jobId: String(row.job_id), requestSha256: String(row.request_sha256) } : null;
  }

  async recordIdempotencyKey(
    key: string,
    jobId: string,
    requestSha256: string,
    t: number,
    keepMs: number,
  ): Promise<void> {
    this.db.transaction(() => {
      this.db.prepare("DELETE FROM idempotency_keys WHERE created_at < ?").run(t - keepMs);
      this.db
        .prepare("INSERT INTO idempotency_keys (key, job_id, request_sha256, created_at) VALUES (?, ?, ?, ?)")
        .run(key, jobId, requestSha256, t);
    })();
  }

  async close(): Promise<void> {
    this.db.close();
  }
}

/**
 * The database and its -wal/-shm files are readable by their owner only (every job's `env` is in them): the file is
 * created 0600 before SQLite opens it (SQLite gives -wal and -shm the database file's mode), and an older world-
 * readable database is fixed.
 */
function privateFiles(file: string): void {
  closeSync(openSync(file, "a", 0o600));
  for (const f of [file, `${file}-wal`, `${file}-shm`, `${file}-journal`]) {
    try {
      chmodSync(f, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
}

/** `SET col = @key` clauses for the defined fields of a patch; column names come from code, never from input. */
function assignments(patch: Record<string, unknown>, columns: Record<string, string>): { sets: string[]; params: Row } {
  const sets: string[] = [];
  const params: Row = {};
  for (const [key, column] of Object.entries(columns)) {
    if (patch[key] === undefined) continue;
    sets.push(`${column} = @${key}`);
    params[key] = patch[key];
  }
  return { sets, params };
}

function toJob(r: Row): JobRecord {
  return {
    id: String(r.id),
    name: String(r.name),
    spec: JSON.parse(String(r.spec)) as JobRecord["spec"],
    state: String(r.state) as JobState,
    reason: strOrNull(r.reason),
    restarts: num(r.restarts),
    createdAt: num(r.created_at),
    updatedAt: num(r.updated_at),
    endedAt: numOrNull(r.ended_at),
  };
}

function toStep(r: Row): StepSample {
  return {
    jobId: String(r.job_id),
    attempt: num(r.attempt),
    rank: num(r.rank),
    step: num(r.step),
    t: num(r.t),
    loss: numOrNull(r.loss),
    tokens: numOrNull(r.tokens),
    computeS: numOrNull(r.compute_s),
  };
}
