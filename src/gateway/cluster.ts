/**
 * Several gateway processes on one port (`switchyard gateway --workers N`), with node:cluster.
 *
 * Node 20 has no `reusePort` listen option (it came in Node 22.12/23.1), so the processes share the port through
 * node:cluster with `schedulingPolicy = SCHED_RR`: the primary accepts each new connection and hands it to the next
 * free worker. That is once per connection, not per request: a keep-alive connection then lives in its worker, and
 * the primary never sees its requests (it only coordinates, through small IPC messages). With SCHED_NONE (the kernel
 * gives each connection to whichever worker accepts first) a burst of keep-alive connections opened at once, as by
 * wrk, a load balancer's pool or an SDK, went nearly all to one worker (62/2, 64/0 and 9/55 of wrk's 64 measured),
 * so a second worker added next to nothing.
 *
 * What the primary owns, so that N workers are not N times looser than one process:
 *
 * - **Rate limits.** The primary holds every key's buckets (LimitAuthority). RPM: a worker admits a request from a
 *   small lease of tokens it got from the primary; when its lease is spent it asks for another (one IPC round trip
 *   for every few requests: 0.04 ms median, 2 ms p99, measured on the loaded 2-core test machine); the lease is a
 *   fraction of what the bucket holds (tokens / 2N, at least 1), and a lease left unused for a second goes back.
 *   The sum of what all workers admit never exceeds the bucket.
 *   Trade-off: the request that finds its worker's lease empty waits for the round trip; a worker holding an unused
 *   lease can make another worker refuse a little early (by at most the lease). TPM: a request is admitted while the
 *   key's balance is positive (the worker's mirror of it), its tokens are taken when it ends; workers send what they
 *   spent every 20 ms and the primary sends back the balance, so the overshoot across workers is bounded by what is
 *   spent within one such round (TPM can overshoot by the requests in flight in one process too).
 * - **Backend health.** Workers report passive-health events (a failure; a success after failures) and the primary
 *   decides ejection with the same rules as one process, then tells every worker, so a dead backend is ejected after
 *   `ejectAfterFailures` failures in total, not per worker. Only the primary runs the active probes (once, not N
 *   times) and sends the results.
 * - **The backend set** of a control plane (`--control-plane`): the primary watches the server and relays.
 * - **Metrics:** GET /metrics on any worker asks the primary, which sums every worker's registry (prom-client's
 *   AggregatorRegistry: counters and histograms summed, state gauges taken as the max).
 * - **Lifecycle:** a worker that dies is restarted (backoff when it keeps dying); the others go on serving. SIGTERM or
 *   Ctrl-C: the primary tells every worker to drain (a second signal: cut now) and exits when they have.
 */
import cluster, { type Worker } from "node:cluster";
import { AggregatorRegistry, type Registry } from "prom-client";
import type { Logger } from "pino";
import type { BackendRegistration, HealthEvent, HealthState, ProbeState } from "./backends.js";
import type { Gateway } from "./gateway.js";
import { Bucket, bucket, type KeyLimits, type LimitRefusal, type Limiter } from "./limits.js";

/** A backend of a control plane's set, as the gateway registers it. */
export type ManagedBackend = BackendRegistration & { id: string; aliases?: string[] };

export type ToWorker =
  | {
      sy: "gw";
      t: "init";
      backends: ManagedBackend[] | null;
      health: Array<[string, HealthState]>;
      probes: Array<[string, ProbeState]>;
    }
  | { sy: "gw"; t: "backends"; list: ManagedBackend[] }
  | { sy: "gw"; t: "health"; id: string; state: HealthState }
  | { sy: "gw"; t: "probe"; id: string; state: ProbeState }
  | { sy: "gw"; t: "lease"; req: number; grant: number; retryAfterS?: number }
  | { sy: "gw"; t: "tpm"; key: string; balance: number; at: number }
  | { sy: "gw"; t: "metrics"; req: number; contentType: string; text: string }
  | { sy: "gw"; t: "drain"; ms: number }
  | { sy: "gw"; t: "cut" };

export type ToPrimary =
  | { sy: "gw"; t: "hello" }
  | { sy: "gw"; t: "ready"; url: string }
  | { sy: "gw"; t: "listen-error"; code: string; message: string }
  | { sy: "gw"; t: "health-event"; id: string; ev: HealthEvent }
  | { sy: "gw"; t: "lease"; req: number; key: string; rpm: number }
  | { sy: "gw"; t: "return"; key: string; rpm: number; n: number }
  | { sy: "gw"; t: "spend"; spends: Array<[key: string, tpm: number, tokens: number]> }
  | { sy: "gw"; t: "metrics"; req: number }
  | { sy: "gw"; t: "drained"; cut: number };

/** Distributive Omit, so that each message kind keeps its own fields. */
type Body<T> = T extends unknown ? Omit<T, "sy"> : never;

export function isGatewayMessage(m: unknown): m is { sy: "gw"; t: string } {
  return typeof m === "object" && m !== null && (m as { sy?: unknown }).sy === "gw";
}

// ---------------------------------------------------------------------------------------------------------------
// Limits: the primary's buckets and the workers' leases
// ---------------------------------------------------------------------------------------------------------------

/** Most RPM tokens one lease may carry. */
const MAX_LEASE = 256;

/** The primary's buckets: RPM leases and TPM balances for every key, across all workers. */
export class LimitAuthority {
  private readonly rpm = new Map<string, Bucket>();
  private readonly tpm = new Map<string, Bucket>();

  constructor(private readonly workers: () => number) {}

  /** A lease of RPM tokens for one worker: a share of what the bucket holds, or how long to wait. */
  lease(key: string, rpm: number, now: number): { grant: number; retryAfterS?: number } {
    const b = bucket(this.rpm, key, rpm, now);
    if (b.tokens < 1) return { grant: 0, retryAfterS: b.waitS(1) };
    const share = Math.floor(b.tokens / (2 * Math.max(1, this.workers())));
    const grant = Math.max(1, Math.min(Math.floor(b.tokens), share, MAX_LEASE));
    b.take(grant);
    return { grant };
  }

  /** Unused lease tokens coming back. */
  giveBack(key: string, rpm: number, n: number, now: number): void {
    const b = bucket(this.rpm, key, rpm, now);
    b.tokens = Math.min(rpm, b.tokens + n);
  }

  /** Tokens spent by a worker; returns the key's balance afterwards. */
  spend(key: string, tpm: number, tokens: number, now: number): number {
    const b = bucket(this.tpm, key, tpm, now);
    b.take(tokens);
    return b.tokens;
  }
}

/** How long a worker waits for a lease before deciding alone (its primary is gone or stuck). */
const LEASE_TIMEOUT_MS = 2000;
const RETURN_IDLE_MS = 1000;
const SPEND_FLUSH_MS = 20;
const ALONE_MS = 10_000;

/**
 * A worker's Limiter: RPM from leases of the primary's buckets, TPM from a mirror of the primary's balance. When the
 * primary does not answer a lease request within 2 s, the worker falls back to 1/N of the key's RPM on its own.
 */
export class WorkerLimiter implements Limiter {
  private readonly allowance = new Map<string, { n: number; rpm: number; at: number }>();
  private readonly pending = new Map<string, Promise<"granted" | "no-answer" | LimitRefusal>>();
  private readonly waiting = new Map<number, (m: { grant: number; retryAfterS?: number } | undefined) => void>();
  private readonly tpmMirror = new Map<string, Bucket>();
  private readonly fallback = new Map<string, Bucket>();
  private spends: Array<[string, number, number]> = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private readonly returnTimer: NodeJS.Timeout;
  private nextReq = 1;
  /** Until then the primary is taken as gone (a lease went unanswered): admissions use the fallback share. */
  private alone = 0;

  constructor(
    private readonly send: (m: Body<ToPrimary>) => void,
    private readonly workers: number,
  ) {
    this.returnTimer = setInterval(() => this.returnIdle(Date.now()), RETURN_IDLE_MS);
    this.returnTimer.unref();
  }

  close(): void {
    clearInterval(this.returnTimer);
    if (this.flushTimer !== undefined) clearTimeout(this.flushTimer);
    this.flush();
  }

  admit(key: string, limits: KeyLimits, now: number): LimitRefusal | undefined | Promise<LimitRefusal | undefined> {
    if (limits.tpm !== undefined) {
      const b = bucket(this.tpmMirror, key, limits.tpm, now);
      if (b.tokens < 1) return { retryAfterS: b.waitS(1), limit: "tpm" };
    }
    if (limits.rpm === undefined) return undefined;
    return this.admitRpm(key, limits.rpm);
  }

  private admitRpm(key: string, rpm: number): LimitRefusal | undefined | Promise<LimitRefusal | undefined> {
    const a = this.allowance.get(key);
    if (a !== undefined && a.n >= 1) {
      a.n--;
      a.at = Date.now();
      return undefined;
    }
    return this.admitRpmSlow(key, rpm);
  }

  /** The worker's lease is spent: ask the primary (one request per key at a time; concurrent callers share it). */
  private async admitRpmSlow(key: string, rpm: number): Promise<LimitRefusal | undefined> {
    for (let round = 0; round < 8; round++) {
      if (Date.now() < this.alone) return this.admitAlone(key, rpm);
      const a = this.allowance.get(key);
      if (a !== undefined && a.n >= 1) {
        a.n--;
        a.at = Date.now();
        return undefined;
      }
      let p = this.pending.get(key);
      if (p === undefined) {
        p = this.fetchLease(key, rpm);
        this.pending.set(key, p);
      }
      const outcome = await p;
      if (outcome === "granted") continue;
      if (outcome === "no-answer") {
        // No answer from the primary: decide alone for a while, with this worker's share of the limit.
        this.alone = Date.now() + ALONE_MS;
        return this.admitAlone(key, rpm);
      }
      return outcome;
    }
    return { retryAfterS: 1, limit: "rpm" };
  }

  private admitAlone(key: string, rpm: number): LimitRefusal | undefined {
    const b = bucket(this.fallback, key, Math.max(1, Math.floor(rpm / this.workers)), Date.now());
    if (b.tokens < 1) return { retryAfterS: b.waitS(1), limit: "rpm" };
    b.take(1);
    return undefined;
  }

  private async fetchLease(key: string, rpm: number): Promise<"granted" | "no-answer" | LimitRefusal> {
    try {
      const answer = await this.askLease(key, rpm);
      if (answer === undefined) return "no-answer";
      if (answer.grant < 1) return { retryAfterS: answer.retryAfterS ?? 1, limit: "rpm" };
      const held = this.allowance.get(key) ?? { n: 0, rpm, at: 0 };
      held.n += answer.grant;
      held.rpm = rpm;
      held.at = Date.now();
      this.allowance.set(key, held);
      return "granted";
    } finally {
      this.pending.delete(key);
    }
  }

  private askLease(key: string, rpm: number): Promise<{ grant: number; retryAfterS?: number } | undefined> {
    const req = this.nextReq++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(req);
        resolve(undefined);
      }, LEASE_TIMEOUT_MS);
      timer.unref();
      this.waiting.set(req, (m) => {
        clearTimeout(timer);
        this.waiting.delete(req);
        resolve(m);
      });
      try {
        this.send({ t: "lease", req, key, rpm });
      } catch {
        this.waiting.get(req)?.(undefined);
      }
    });
  }

  spend(key: string, limits: KeyLimits, tokens: number, now: number): void {
    if (limits.tpm === undefined || tokens <= 0) return;
    bucket(this.tpmMirror, key, limits.tpm, now).take(tokens);
    this.spends.push([key, limits.tpm, tokens]);
    this.flushTimer ??= setTimeout(() => this.flush(), SPEND_FLUSH_MS);
  }

  private flush(): void {
    this.flushTimer = undefined;
    if (this.spends.length === 0) return;
    const spends = this.spends;
    this.spends = [];
    try {
      this.send({ t: "spend", spends });
    } catch {
      // The primary is gone; the worker is draining.
    }
  }

  /** A message from the primary: a lease answer or a TPM balance. */
  onMessage(m: ToWorker): void {
    if (m.t === "lease") {
      this.waiting.get(m.req)?.({ grant: m.grant, ...(m.retryAfterS !== undefined && { retryAfterS: m.retryAfterS }) });
    } else if (m.t === "tpm") {
      const b = this.tpmMirror.get(m.key);
      if (b !== undefined) {
        b.tokens = m.balance;
        b.at = m.at;
      }
    }
  }

  private returnIdle(now: number): void {
    for (const [key, a] of this.allowance) {
      if (now - a.at < RETURN_IDLE_MS) continue;
      this.allowance.delete(key);
      const n = Math.floor(a.n);
      if (n < 1) continue;
      try {
        this.send({ t: "return", key, rpm: a.rpm, n });
      } catch {
        // The primary is gone.
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The primary
// ---------------------------------------------------------------------------------------------------------------

export interface ClusterPrimaryOptions {
  workers: number;
  /** The primary's own gateway (never listening): it runs the probes and decides passive health. */
  gateway: Gateway;
  logger: Logger;
  /** Extra environment for the workers. */
  env?: NodeJS.ProcessEnv;
}

/** The primary of a gateway cluster: forks the workers, restarts the ones that die, coordinates them. */
export class GatewayCluster {
  readonly limits: LimitAuthority;
  private readonly aggregator = new AggregatorRegistry();
  private readonly workers = new Map<number, { worker: Worker; slot: number; ready: boolean }>();
  private backends: ManagedBackend[] | null = null;
  private readonly health = new Map<string, HealthState>();
  private readonly probes = new Map<string, ProbeState>();
  private stopping = false;
  private readonly crashes: number[] = [];
  private readonly drainedCuts = new Map<number, number>();
  private firstReady: ((url: string) => void) | undefined;
  private firstFailure: ((err: Error) => void) | undefined;
  private url: string | undefined;

  constructor(private readonly opts: ClusterPrimaryOptions) {
    this.limits = new LimitAuthority(() => Math.max(1, this.workers.size));
    cluster.schedulingPolicy = cluster.SCHED_RR;
  }

  /** Forks the workers; resolves with the URL once every one listens (rejects when one cannot listen). */
  start(): Promise<string> {
    const all = new Promise<string>((resolve, reject) => {
      this.firstReady = resolve;
      this.firstFailure = reject;
    });
    cluster.on("message", this.onMessage);
    cluster.on("exit", this.onExit);
    for (let slot = 0; slot < this.opts.workers; slot++) this.fork(slot);
    return all;
  }

  /** Every worker's metrics summed, as Prometheus text (what GET /metrics answers; the traffic reports read it). */
  metricsText(): Promise<string> {
    return this.aggregator.clusterMetrics();
  }

  /** Worker pids (tests). */
  pids(): number[] {
    return [...this.workers.values()].map((w) => w.worker.process.pid ?? 0);
  }

  /** A control plane's backend set: the primary's gateway follows it and every worker is told. */
  async setBackends(list: ManagedBackend[]): Promise<void> {
    this.backends = list;
    await this.opts.gateway.setBackends(list);
    this.broadcast({ t: "backends", list });
  }

  /** The primary's gateway saw a probe result: every worker mirrors it. */
  readonly onProbed = (id: string, state: ProbeState): void => {
    this.probes.set(id, state);
    this.broadcast({ t: "probe", id, state });
  };

  private fork(slot: number): void {
    const worker = cluster.fork({ ...this.opts.env, SWITCHYARD_GATEWAY_WORKER: String(slot) });
    this.workers.set(worker.id, { worker, slot, ready: false });
  }

  private send(worker: Worker, m: Body<ToWorker>): void {
    if (!worker.isConnected()) return;
    try {
      worker.send({ sy: "gw", ...m });
    } catch {
      // It is exiting; its exit restarts it.
    }
  }

  private broadcast(m: Body<ToWorker>): void {
    for (const w of this.workers.values()) this.send(w.worker, m);
  }

  private readonly onMessage = (worker: Worker, raw: unknown): void => {
    if (!isGatewayMessage(raw)) return;
    const m = raw as ToPrimary;
    const entry = this.workers.get(worker.id);
    const now = Date.now();
    switch (m.t) {
      case "hello":
        this.send(worker, {
          t: "init",
          backends: this.backends,
          health: [...this.health],
          probes: [...this.probes],
        });
        break;
      case "ready":
        if (entry !== undefined) entry.ready = true;
        this.url ??= m.url;
        if ([...this.workers.values()].every((w) => w.ready)) {
          this.firstReady?.(m.url);
          this.firstReady = undefined;
          this.firstFailure = undefined;
        }
        break;
      case "listen-error": {
        const err = Object.assign(new Error(m.message), { code: m.code });
        if (this.firstFailure !== undefined) {
          this.firstFailure(err);
          this.firstFailure = undefined;
          this.firstReady = undefined;
          void this.stop(0);
        } else {
          this.opts.logger.error({ worker: entry?.slot, code: m.code }, `gateway worker cannot listen: ${m.message}`);
        }
        break;
      }
      case "health-event": {
        const state = this.opts.gateway.applyHealthEvent(m.id, m.ev);
        if (state !== undefined) {
          this.health.set(m.id, state);
          this.broadcast({ t: "health", id: m.id, state });
        }
        break;
      }
      case "lease": {
        const answer = this.limits.lease(m.key, m.rpm, now);
        this.send(worker, { t: "lease", req: m.req, ...answer });
        break;
      }
      case "return":
        this.limits.giveBack(m.key, m.rpm, m.n, now);
        break;
      case "spend": {
        const balances = new Map<string, number>();
        for (const [key, tpm, tokens] of m.spends) balances.set(key, this.limits.spend(key, tpm, tokens, now));
        for (const [key, balance] of balances) this.broadcast({ t: "tpm", key, balance, at: now });
        break;
      }
      case "metrics":
        this.aggregator.clusterMetrics().then(
          (text) => this.send(worker, { t: "metrics", req: m.req, contentType: this.aggregator.contentType, text }),
          (err: unknown) =>
            this.send(worker, {
              t: "metrics",
              req: m.req,
              contentType: "text/plain",
              text: `# metrics of the gateway workers could not be gathered: ${err instanceof Error ? err.message : String(err)}\n`,
            }),
        );
        break;
      case "drained":
        this.drainedCuts.set(worker.id, m.cut);
        break;
    }
  };

  private readonly onExit = (worker: Worker, code: number | null, signal: string | null): void => {
    const entry = this.workers.get(worker.id);
    if (entry === undefined) return;
    this.workers.delete(worker.id);
    if (this.stopping) return;
    if (this.firstFailure !== undefined && !entry.ready) {
      // A worker that dies before it listens at start: the whole gateway fails to start.
      this.firstFailure(
        new Error(`gateway worker ${entry.slot} exited (${signal ?? `code ${code}`}) before it listened`),
      );
      this.firstFailure = undefined;
      this.firstReady = undefined;
      void this.stop(0);
      return;
    }
    const now = Date.now();
    this.crashes.push(now);
    while (this.crashes.length > 0 && now - this.crashes[0]! > 60_000) this.crashes.shift();
    const delay = Math.min(10_000, 100 * 2 ** Math.max(0, this.crashes.length - 1));
    this.opts.logger.warn(
      { worker: entry.slot, pid: worker.process.pid, code, signal, restartInMs: delay },
      `gateway worker ${entry.slot} (pid ${worker.process.pid}) exited (${signal ?? `code ${code}`}); ` +
        `restarting it in ${delay} ms; the other workers go on serving`,
    );
    const t = setTimeout(() => {
      if (!this.stopping) this.fork(entry.slot);
    }, delay);
    t.unref();
  };

  /**
   * Drains every worker: no new connections, requests in flight may finish within `timeoutMs` (or until `cutNow`),
   * then the rest are cut. Resolves, with the number cut, when every worker has exited.
   */
  async stop(timeoutMs: number, cutNow?: AbortSignal): Promise<{ cut: number }> {
    this.stopping = true;
    const alive = [...this.workers.values()].map((w) => w.worker);
    const exited = Promise.all(
      alive.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.isDead()) resolve();
            else w.once("exit", () => resolve());
          }),
      ),
    );
    for (const w of alive) this.send(w, { t: "drain", ms: timeoutMs });
    const onCut = (): void => {
      for (const w of alive) this.send(w, { t: "cut" });
    };
    cutNow?.addEventListener("abort", onCut, { once: true });
    // A worker that does not exit within the deadline plus 5 s is killed.
    const killer = setTimeout(() => {
      for (const w of alive) if (!w.isDead()) w.process.kill("SIGKILL");
    }, timeoutMs + 5000);
    killer.unref();
    await exited;
    clearTimeout(killer);
    cutNow?.removeEventListener("abort", onCut);
    cluster.off("message", this.onMessage);
    cluster.off("exit", this.onExit);
    let cut = 0;
    for (const c of this.drainedCuts.values()) cut += c;
    return { cut };
  }
}

// ---------------------------------------------------------------------------------------------------------------
// A worker
// ---------------------------------------------------------------------------------------------------------------

/** The slot of this process when it is a gateway worker (0..N-1), else undefined. */
export function workerSlot(): number | undefined {
  if (!cluster.isWorker) return undefined;
  const v = process.env.SWITCHYARD_GATEWAY_WORKER;
  return v === undefined ? undefined : Number(v);
}

/** What a worker needs before it builds its gateway: the link to the primary and the hooks it passes the gateway. */
export class WorkerLink {
  readonly limiter: WorkerLimiter;
  private gateway: Gateway | undefined;
  private readonly metricsWaiting = new Map<number, (r: { contentType: string; text: string }) => void>();
  private nextReq = 1;
  private initResolve: ((m: Extract<ToWorker, { t: "init" }>) => void) | undefined;
  private drainHandler: ((ms: number) => void) | undefined;
  private readonly cutController = new AbortController();

  constructor(workers: number) {
    this.limiter = new WorkerLimiter((m) => this.send(m), workers);
    process.on("message", this.onMessage);
  }

  send(m: Body<ToPrimary>): void {
    if (process.send === undefined || !process.connected) throw new Error("the gateway primary is gone");
    process.send({ sy: "gw", ...m });
  }

  /** Says hello and waits for the primary's current state. */
  init(): Promise<Extract<ToWorker, { t: "init" }>> {
    return new Promise((resolve) => {
      this.initResolve = resolve;
      this.send({ t: "hello" });
    });
  }

  /** The gateway this worker serves with; its registry is what the primary sums for /metrics. */
  attach(gateway: Gateway, registry: Registry): void {
    this.gateway = gateway;
    // The AggregatorRegistry constructor installs prom-client's worker-side answer to the primary's metrics request.
    new AggregatorRegistry();
    AggregatorRegistry.setRegistries([registry]);
  }

  readonly onHealthEvent = (id: string, ev: HealthEvent): void => {
    try {
      this.send({ t: "health-event", id, ev });
    } catch {
      // The primary is gone; this worker drains.
    }
  };

  readonly metricsText = (): Promise<{ contentType: string; text: string }> => {
    const req = this.nextReq++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.metricsWaiting.delete(req);
        resolve({ contentType: "text/plain", text: "# the gateway primary did not answer in time\n" });
      }, 6000);
      this.metricsWaiting.set(req, (r) => {
        clearTimeout(timer);
        this.metricsWaiting.delete(req);
        resolve(r);
      });
      try {
        this.send({ t: "metrics", req });
      } catch {
        this.metricsWaiting.get(req)?.({ contentType: "text/plain", text: "# the gateway primary is gone\n" });
      }
    });
  };

  /** Called once with the drain deadline when the primary says stop (or when it is gone). */
  onDrain(handler: (ms: number) => void): void {
    this.drainHandler = handler;
    process.once("disconnect", () => handler(30_000));
  }

  /** Aborted when the primary says cut now (a second stop signal). */
  get cutSignal(): AbortSignal {
    return this.cutController.signal;
  }

  private readonly onMessage = (raw: unknown): void => {
    if (!isGatewayMessage(raw)) return;
    const m = raw as ToWorker;
    switch (m.t) {
      case "init":
        this.initResolve?.(m);
        this.initResolve = undefined;
        break;
      case "backends":
        void this.gateway?.setBackends(m.list);
        break;
      case "health":
        this.gateway?.applyHealthState(m.id, m.state);
        break;
      case "probe":
        this.gateway?.applyProbeState(m.id, m.state);
        break;
      case "lease":
      case "tpm":
        this.limiter.onMessage(m);
        break;
      case "metrics":
        this.metricsWaiting.get(m.req)?.({ contentType: m.contentType, text: m.text });
        break;
      case "drain":
        this.drainHandler?.(m.ms);
        break;
      case "cut":
        this.cutController.abort();
        break;
    }
  };

  close(): void {
    this.limiter.close();
    process.off("message", this.onMessage);
  }
}
