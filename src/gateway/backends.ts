/**
 * Backends and the routing table: per-backend health (passive ejection, half-open recovery, active probes), load
 * (in-flight requests plus the engine's own queue), and the choice of a backend for one attempt.
 */
import { readFileSync } from "node:fs";
import { Pool } from "undici";
import { WirePool } from "./wire.js";
import type { EngineKind, GatewaySettings } from "./config.js";
import { engineAdapter, type EngineAdapter } from "./engines.js";

export const BackendState = {
  healthy: "healthy",
  halfOpen: "half-open",
  ejected: "ejected",
  down: "down",
  draining: "draining",
} as const;
export type BackendState = (typeof BackendState)[keyof typeof BackendState];

/** What part 5 (supervised replicas) or the config passes to register one backend. */
export interface BackendRegistration {
  /** Model name of the service (must exist, or pass `createService`). */
  service: string;
  pool: string;
  url: string;
  engine: EngineKind;
  id?: string;
  weight?: number;
  /** The backend's API key, sent upstream as `Authorization: Bearer`; never logged. */
  apiKey?: string;
  metricsUrl?: string;
  maxInFlight?: number;
  tls?: { caFile?: string; insecureSkipVerify?: boolean };
  /** The model name the backend serves (vLLM's --served-model-name); requests are rewritten to it. Default: the
   * service's model name. */
  servedModel?: string;
  /** Priority of the pool when this registration creates it (lower is preferred). */
  poolPriority?: number;
  /** Queue threshold of the pool when this registration creates it. */
  poolQueueThreshold?: number;
}

function readCa(id: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new Error(
      `backend ${id}: cannot read tls.caFile ${file} (${(err as NodeJS.ErrnoException).code ?? "error"}); fix the path`,
    );
  }
}

/** A passive health event a cluster worker shares with the primary (failures, and a success after failures). */
export type HealthEvent = { kind: "failure"; reason: string; at: number } | { kind: "success" };

/** The passive health of a backend, as the cluster primary decides it and tells every worker. */
export interface HealthState {
  consecutiveFailures: number;
  ejected: boolean;
  ejectedUntil: number;
  cooldownMs: number;
  lastError?: string | undefined;
}

/** What the active probes found (the cluster primary probes; workers mirror it). */
export interface ProbeState {
  activeHealthy: boolean;
  consecutiveProbeFailures: number;
  engineSaturated: boolean;
  waiting: number;
  running: number;
  cacheUsage?: number | undefined;
  lastError?: string | undefined;
}

export class Backend {
  readonly adapter: EngineAdapter;
  readonly origin: string;
  /** Path prefix of the backend URL, "" for a server root. */
  readonly basePath: string;
  /** Health probes and metrics (undici). */
  readonly dispatcher: Pool;
  /** Proxied requests (the hot path). */
  readonly wire: WirePool;
  inFlight = 0;
  consecutiveFailures = 0;
  ejected = false;
  ejectedUntil = 0;
  cooldownMs: number;
  /** A half-open trial request is in flight: nobody else may use the backend until it ends. */
  trialInFlight = false;
  /** Retry-After from a 429: not chosen before this time. */
  coolingUntil = 0;
  activeHealthy = true;
  consecutiveProbeFailures = 0;
  engineSaturated = false;
  waiting = 0;
  running = 0;
  cacheUsage: number | undefined;
  draining = false;
  lastError: string | undefined;
  /** Set in a cluster worker: passive health events go to the primary, which decides for every worker. */
  onHealthEvent: ((ev: HealthEvent) => void) | undefined;

  constructor(
    readonly id: string,
    readonly service: string,
    readonly pool: PoolTier,
    readonly url: string,
    readonly engine: EngineKind,
    readonly weight: number,
    readonly apiKey: string | undefined,
    readonly metricsUrl: string | undefined,
    readonly maxInFlight: number | undefined,
    settings: GatewaySettings,
    tls: { caFile?: string; insecureSkipVerify?: boolean } | undefined,
    /** The `model` the backend is sent (its own served name). */
    readonly servedModel: string,
  ) {
    this.adapter = engineAdapter(engine);
    const parsed = new URL(url);
    this.origin = parsed.origin;
    this.basePath = parsed.pathname.replace(/\/+$/, "");
    this.cooldownMs = settings.ejectCooldownMs;
    const ca = tls?.caFile !== undefined ? readCa(id, tls.caFile) : undefined;
    this.wire = new WirePool(this.origin, {
      connectTimeoutMs: settings.connectTimeoutMs,
      keepAliveMs: 30_000,
      tls: {
        ...(tls?.insecureSkipVerify === true && { rejectUnauthorized: false }),
        ...(ca !== undefined && { ca }),
      },
    });
    this.dispatcher = new Pool(this.origin, {
      connections: null,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      headersTimeout: 0,
      bodyTimeout: 0,
      connect: {
        timeout: settings.connectTimeoutMs,
        ...(tls?.insecureSkipVerify === true && { rejectUnauthorized: false }),
        ...(ca !== undefined && { ca }),
      },
    });
  }

  state(now: number): BackendState {
    if (this.draining) return BackendState.draining;
    if (!this.activeHealthy) return BackendState.down;
    if (this.ejected) return now < this.ejectedUntil ? BackendState.ejected : BackendState.halfOpen;
    return BackendState.healthy;
  }

  /** May this backend take a new request now? (A half-open one takes exactly one trial.) */
  available(now: number): boolean {
    if (this.draining || !this.activeHealthy || now < this.coolingUntil) return false;
    if (this.ejected) return now >= this.ejectedUntil && !this.trialInFlight;
    return true;
  }

  saturated(): boolean {
    if (this.engineSaturated) return true;
    if (this.maxInFlight !== undefined && this.inFlight >= this.maxInFlight) return true;
    return this.waiting >= this.pool.queueThreshold;
  }

  /** Lower is better: outstanding work per unit of weight. */
  score(): number {
    return (this.inFlight + this.waiting) / this.weight;
  }

  recordSuccess(): void {
    if (this.consecutiveFailures === 0 && !this.ejected) {
      this.lastError = undefined;
      return;
    }
    this.onHealthEvent?.({ kind: "success" });
    this.consecutiveFailures = 0;
    this.lastError = undefined;
    if (this.ejected) {
      this.ejected = false;
      this.cooldownMs = this.pool.settings.ejectCooldownMs;
    }
  }

  recordFailure(now: number, reason: string): void {
    this.consecutiveFailures++;
    this.lastError = reason;
    const s = this.pool.settings;
    if (this.ejected) {
      // The half-open trial failed: back out, for longer.
      this.cooldownMs = Math.min(this.cooldownMs * 2, s.maxEjectCooldownMs);
      this.ejectedUntil = now + this.cooldownMs;
    } else if (this.consecutiveFailures >= s.ejectAfterFailures) {
      this.ejected = true;
      this.ejectedUntil = now + this.cooldownMs;
    }
    this.onHealthEvent?.({ kind: "failure", reason, at: now });
  }

  healthState(): HealthState {
    return {
      consecutiveFailures: this.consecutiveFailures,
      ejected: this.ejected,
      ejectedUntil: this.ejectedUntil,
      cooldownMs: this.cooldownMs,
      lastError: this.lastError,
    };
  }

  applyHealthState(s: HealthState): void {
    this.consecutiveFailures = s.consecutiveFailures;
    this.ejected = s.ejected;
    this.ejectedUntil = s.ejectedUntil;
    this.cooldownMs = s.cooldownMs;
    this.lastError = s.lastError;
  }

  probeState(): ProbeState {
    return {
      activeHealthy: this.activeHealthy,
      consecutiveProbeFailures: this.consecutiveProbeFailures,
      engineSaturated: this.engineSaturated,
      waiting: this.waiting,
      running: this.running,
      cacheUsage: this.cacheUsage,
      lastError: this.lastError,
    };
  }

  applyProbeState(s: ProbeState): void {
    this.activeHealthy = s.activeHealthy;
    this.consecutiveProbeFailures = s.consecutiveProbeFailures;
    this.engineSaturated = s.engineSaturated;
    this.waiting = s.waiting;
    this.running = s.running;
    this.cacheUsage = s.cacheUsage;
    if (!s.activeHealthy && s.lastError !== undefined) this.lastError = s.lastError;
  }

  snapshot(now: number): BackendSnapshot {
    return {
      id: this.id,
      service: this.service,
      pool: this.pool.name,
      url: this.url,
      engine: this.engine,
      weight: this.weight,
      state: this.state(now),
      inFlight: this.inFlight,
      waiting: this.waiting,
      running: this.running,
      consecutiveFailures: this.consecutiveFailures,
      ...(this.lastError !== undefined && { lastError: this.lastError }),
    };
  }
}

export interface BackendSnapshot {
  id: string;
  service: string;
  pool: string;
  url: string;
  engine: EngineKind;
  weight: number;
  state: BackendState;
  inFlight: number;
  waiting: number;
  running: number;
  consecutiveFailures: number;
  lastError?: string;
}

export class PoolTier {
  backends: Backend[] = [];
  private rr = 0;
  constructor(
    readonly name: string,
    readonly priority: number,
    readonly queueThreshold: number,
    readonly settings: GatewaySettings,
  ) {}

  /** Rotating start so that equal scores spread over backends. */
  nextStart(): number {
    this.rr = (this.rr + 1) % 1_000_000;
    return this.rr;
  }
}

export class Service {
  /** Sorted by priority, most preferred first. */
  tiers: PoolTier[] = [];
  constructor(readonly model: string) {}

  tier(name: string): PoolTier | undefined {
    return this.tiers.find((t) => t.name === name);
  }

  addTier(tier: PoolTier): void {
    this.tiers.push(tier);
    this.tiers.sort((a, b) => a.priority - b.priority);
  }
}

export interface Pick {
  backend: Backend;
  /** The chosen tier is not the first one that had an available backend: its better tiers were all saturated. */
  spilled: boolean;
}

/**
 * Best healthy tier first; within it, least outstanding work. A tier is skipped when each available backend is
 * saturated; when every tier is saturated the least loaded backend of the best available tier takes the request.
 */
export function pickBackend(service: Service, exclude: ReadonlySet<Backend>, now: number): Pick | undefined {
  let fallback: Backend | undefined;
  let firstAvailableTier: PoolTier | undefined;
  for (const tier of service.tiers) {
    const list = tier.backends;
    const n = list.length;
    if (n === 0) continue;
    const start = tier.nextStart() % n;
    let best: Backend | undefined;
    let bestScore = Infinity;
    let saturatedBest: Backend | undefined;
    let saturatedScore = Infinity;
    for (let i = 0; i < n; i++) {
      const b = list[(start + i) % n]!;
      if (exclude.has(b) || !b.available(now)) continue;
      const score = b.score();
      if (b.saturated()) {
        if (score < saturatedScore) {
          saturatedScore = score;
          saturatedBest = b;
        }
      } else if (score < bestScore) {
        bestScore = score;
        best = b;
      }
    }
    if (best === undefined && saturatedBest === undefined) continue;
    firstAvailableTier ??= tier;
    if (best !== undefined) return { backend: best, spilled: tier !== firstAvailableTier };
    fallback ??= saturatedBest;
  }
  return fallback === undefined ? undefined : { backend: fallback, spilled: false };
}
