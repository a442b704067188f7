/**
 * The gateway core: a plain Node request handler (`gateway.handle`) that authenticates, picks a backend, and relays the
 * answer byte for byte. Retries go to a different backend only while nothing has reached the client; after that a
 * failure becomes an in-band SSE error event (never `[DONE]`) or a broken connection — never a silent truncation.
 */
import { randomUUID } from "node:crypto";
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import { pino, type Logger } from "pino";
import {
  Backend,
  PoolTier,
  Service,
  pickBackend,
  type BackendRegistration,
  type BackendSnapshot,
  type HealthEvent,
  type HealthState,
  type ProbeState,
} from "./backends.js";
import {
  defaultGatewaySettings,
  MissingApiKeyEnvError,
  normalizeBackendUrl,
  type CompiledServices,
  type GatewaySettings,
} from "./config.js";
import type { KeyAuthenticator } from "./keys.js";
import { GatewayMetrics } from "./metrics.js";
import { parsePrometheusText } from "./engines.js";
import { request as undiciRequest } from "undici";
import { rewriteModel } from "./body.js";
import { SseScanner } from "./sse.js";
import type { AccessLog } from "./access-log.js";
import { readBodyLimited, type UpstreamResponse } from "./upstream.js";
import type { WireCall } from "./wire.js";
import { estimateTokens, LocalLimiter, totalTokensIn, type KeyLimits, type Limiter } from "./limits.js";
import { Cors, type CorsSettings } from "./cors.js";

export interface GatewayOptions {
  settings?: Partial<GatewaySettings>;
  /** When given, every /v1 request needs a valid key. */
  auth?: KeyAuthenticator;
  logger?: Logger;
  /**
   * Where the per-request access line goes, when not through `logger` (JSON mode on a real stdout: see
   * access-log.ts). Only used while `logger` is at level info or below.
   */
  accessLog?: AccessLog;
  /** Environment used to resolve `apiKeyEnv` of configured backends. */
  env?: NodeJS.ProcessEnv;
  /** Per-key RPM/TPM limits; default: this process's own buckets (a cluster worker passes its primary's view). */
  limiter?: Limiter;
  /** GET /metrics text, when it comes from elsewhere (a cluster worker asks its primary for all workers' sum). */
  metricsText?: () => Promise<{ contentType: string; text: string }>;
  /** A cluster worker: passive health events of every backend, for the primary to decide on. */
  onHealthEvent?: (backendId: string, ev: HealthEvent) => void;
  /** The cluster primary: each probe's result, for the workers to mirror. */
  onProbed?: (backendId: string, state: ProbeState) => void;
  /** Browser clients: origins allowed to call the API (CORS); none by default. */
  cors?: CorsSettings;
  /** A cluster worker's slot, shown by /healthz with its pid. */
  worker?: number;
}

const PROXIED_PATHS = new Set(["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]);
const RESPONSES_PATH = "/v1/responses";

// Hop-by-hop headers (RFC 9110 7.6.1) and those the gateway owns.
const DROP_REQUEST_HEADERS = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
  "authorization",
  "content-length",
  "expect",
  // The gateway reads every answer (SSE events for the stream's end, usage for TPM): it asks for plain bytes.
  "accept-encoding",
]);
const DROP_RESPONSE_HEADERS = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "content-length",
]);
/** The gateway answers CORS itself: an upstream's own access-control-* headers (vLLM sends `*`) never pass. */
const isCorsHeader = (name: string): boolean => name.charCodeAt(0) === 0x61 && name.startsWith("access-control-");

/** Tokens counted for a request of a key with a TPM limit: from the answer's usage, else estimated from bytes. */
interface TokenMeter {
  requestBytes: number;
  responseBytes: number;
  usage: number | undefined;
}

const RETRYABLE_BODY_LIMIT = 64 * 1024;
const BUFFERED_RESPONSE_LIMIT = 64 * 1024 * 1024;
const SSE_PENDING_LIMIT = 4 * 1024 * 1024;
/** Buffered answers up to this size are written with their head in one piece (see onEnd in relay). */
const ONE_WRITE_ANSWER_LIMIT = 16 * 1024;
/** A refused (too large) body is read and thrown away up to this many bytes / this long, then the socket closes. */
const DISCARD_LIMIT = 256 * 1024 * 1024;
const DISCARD_MS = 30_000;

type FailureKind =
  | "connect"
  | "status_5xx"
  | "status_429"
  | "ttft_timeout"
  | "timeout"
  | "stall"
  | "cut"
  | "truncated"
  | "shutdown"
  | "upstream";

class AttemptTimeout extends Error {
  constructor(readonly kind: "ttft_timeout" | "timeout" | "stall") {
    super(kind);
  }
}
class ClientGone extends Error {}
/** The drain deadline passed (or a second stop signal came): what is still in flight is cut. */
class GatewayShutdown extends Error {}

/** A client request in progress: the upstream call it waits on, if any (aborted when the client goes away). */
interface Exchange {
  call: WireCall | undefined;
}

/** Headers of an answer to the client (res.writeHead). */
type OutgoingHeaders = Record<string, string | string[] | number>;

/** How one attempt ended. */
type AttemptResult =
  | { kind: "answered"; status: number }
  | { kind: "failed-after-commit"; failure: FailureKind; status: number }
  | { kind: "client-gone" }
  /** The gateway shut down before anything reached the client. */
  | { kind: "shutdown" }
  | {
      kind: "retry";
      failure: FailureKind;
      message: string;
      /** An upstream 5xx/429 answer, kept to pass through when no other backend is left. */
      response?: { status: number; headers: OutgoingHeaders; body: Buffer };
    };

function errorBody(message: string, type: string, code: string): string {
  return JSON.stringify({ error: { message, type, code, param: null } });
}

function sendJson(res: ServerResponse, status: number, body: string, extra?: Record<string, string>): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    ...extra,
  });
  res.end(body);
}

function upstreamFailureKind(err: unknown): FailureKind {
  if (err instanceof AttemptTimeout) return err.kind;
  const code = (err as { code?: string } | null)?.code;
  if (
    code === "ECONNREFUSED" ||
    code === "ECONNRESET" ||
    code === "EHOSTUNREACH" ||
    code === "ENETUNREACH" ||
    code === "ENOTFOUND" ||
    code === "EAI_AGAIN" ||
    code === "WIRE_CONNECT_TIMEOUT" ||
    code === "WIRE_CLOSED"
  ) {
    return code === "WIRE_CLOSED" ? "cut" : "connect";
  }
  return "upstream";
}

function parseRetryAfterMs(value: string | string[] | undefined, now: number): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined) return undefined;
  const s = Number(v);
  if (Number.isFinite(s) && s >= 0) return Math.min(s, 3600) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.min(at - now, 3_600_000));
}

export class Gateway {
  readonly settings: GatewaySettings;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  private readonly accessLog: AccessLog | undefined;
  private readonly services = new Map<string, Service>();
  /** Alias or model name -> service. */
  private readonly names = new Map<string, Service>();
  private readonly backendsById = new Map<string, Backend>();
  private readonly auth: KeyAuthenticator | undefined;
  private readonly limiter: Limiter;
  private readonly metricsText: GatewayOptions["metricsText"];
  private readonly onHealthEvent: GatewayOptions["onHealthEvent"];
  private readonly onProbed: GatewayOptions["onProbed"];
  private readonly cors: Cors | undefined;
  private readonly worker: number | undefined;
  private healthTimer: NodeJS.Timeout | undefined;
  private probing = false;
  private closed = false;
  private draining = false;
  /** Client requests not yet answered (their response not closed), each with its upstream call in progress. */
  private readonly openResponses = new Map<ServerResponse, Exchange>();
  private onIdle: (() => void) | undefined;
  private readonly createdAt = Math.floor(Date.now() / 1000);
  /** Backends registered by setBackends (the control plane's set), by id. */
  private readonly managed = new Map<string, BackendRegistration & { id: string; aliases?: string[] }>();

  constructor(config: CompiledServices | undefined, opts: GatewayOptions = {}) {
    this.settings = { ...defaultGatewaySettings, ...config?.settings, ...opts.settings };
    this.auth = opts.auth;
    this.limiter = opts.limiter ?? new LocalLimiter();
    this.metricsText = opts.metricsText;
    this.onHealthEvent = opts.onHealthEvent;
    this.onProbed = opts.onProbed;
    this.worker = opts.worker;
    const cors = opts.cors ?? config?.cors;
    this.cors = cors !== undefined && cors.origins.length > 0 ? new Cors(cors) : undefined;
    this.logger = opts.logger ?? pino({ level: "silent" });
    this.accessLog = opts.accessLog;
    this.metrics = new GatewayMetrics(() => this.backendsById.values());
    const env = opts.env ?? process.env;
    for (const svc of config?.services ?? []) {
      const service = this.addService(svc.model, svc.aliases);
      for (const pool of svc.pools) {
        service.addTier(new PoolTier(pool.name, pool.priority, pool.queueThreshold, this.settings));
        for (const b of pool.backends) {
          const apiKey = b.apiKeyEnv !== undefined ? env[b.apiKeyEnv] : undefined;
          if (b.apiKeyEnv !== undefined && (apiKey === undefined || apiKey === "")) {
            throw new MissingApiKeyEnvError(`backend ${b.id}`, b.apiKeyEnv);
          }
          this.registerBackend({
            service: svc.model,
            pool: pool.name,
            id: b.id,
            url: b.url,
            engine: b.engine,
            weight: b.weight,
            ...(apiKey !== undefined && { apiKey }),
            ...(b.metricsUrl !== undefined && { metricsUrl: b.metricsUrl }),
            ...(b.maxInFlight !== undefined && { maxInFlight: b.maxInFlight }),
            ...(b.tls !== undefined && { tls: b.tls }),
            ...(b.servedModel !== undefined && { servedModel: b.servedModel }),
          });
        }
      }
    }
  }

  /** Adds a model name the gateway answers for (no backends yet). Throws if a name is taken by another service. */
  addService(model: string, aliases: string[] = []): Service {
    const existing = this.services.get(model);
    if (existing !== undefined) return existing;
    for (const name of [model, ...aliases]) {
      if (this.names.has(name)) throw new Error(`model name "${name}" is already served by another service`);
    }
    const service = new Service(model);
    this.services.set(model, service);
    for (const name of [model, ...aliases]) this.names.set(name, service);
    return service;
  }

  /**
   * Adds a backend at runtime (used by supervised replicas as they become ready). Creates the pool when missing.
   * Returns the backend id.
   */
  registerBackend(reg: BackendRegistration): string {
    if (this.closed) throw new Error("gateway is closed");
    const service = this.services.get(reg.service) ?? this.names.get(reg.service);
    if (service === undefined) throw new Error(`unknown service "${reg.service}"; add it with addService() first`);
    let tier = service.tier(reg.pool);
    if (tier === undefined) {
      tier = new PoolTier(
        reg.pool,
        reg.poolPriority ?? service.tiers.length,
        reg.poolQueueThreshold ?? this.settings.defaultQueueThreshold,
        this.settings,
      );
      service.addTier(tier);
    }
    const id = reg.id ?? `${service.model}/${reg.pool}/${randomUUID().slice(0, 8)}`;
    if (this.backendsById.has(id)) throw new Error(`backend id "${id}" is already registered`);
    const backend = new Backend(
      id,
      service.model,
      tier,
      normalizeBackendUrl(reg.url),
      reg.engine,
      reg.weight ?? 1,
      reg.apiKey,
      reg.metricsUrl,
      reg.maxInFlight,
      this.settings,
      reg.tls,
      reg.servedModel ?? service.model,
    );
    const onHealthEvent = this.onHealthEvent;
    if (onHealthEvent !== undefined) backend.onHealthEvent = (ev) => onHealthEvent(id, ev);
    tier.backends.push(backend);
    this.backendsById.set(id, backend);
    if (this.healthTimer !== undefined) void this.probe(backend);
    return id;
  }

  /** Stops routing to a backend; in-flight requests finish, then its connections close. */
  async unregisterBackend(id: string): Promise<boolean> {
    const backend = this.backendsById.get(id);
    if (backend === undefined) return false;
    backend.draining = true;
    this.backendsById.delete(id);
    const tier = backend.pool;
    tier.backends = tier.backends.filter((b) => b !== backend);
    backend.wire.close();
    await backend.dispatcher.close();
    return true;
  }

  /**
   * Makes the backends registered through this method exactly `list` (by id): new ones are registered (their
   * service created when missing), gone ones unregistered (their requests in flight finish), changed ones replaced.
   * Backends of the services file are left alone. Used for the backend set a control plane hands the data plane.
   */
  async setBackends(list: Array<BackendRegistration & { id: string; aliases?: string[] }>): Promise<void> {
    const wanted = new Map(list.map((b) => [b.id, b]));
    const stale: string[] = [];
    for (const [id, reg] of this.managed) {
      const next = wanted.get(id);
      if (next === undefined || JSON.stringify(next) !== JSON.stringify(reg)) stale.push(id);
    }
    // Unregistering takes a backend out of routing at once; its connections close when its requests in flight end,
    // which is not waited for here (a long stream must not hold up the new set).
    const closing: Array<Promise<boolean>> = [];
    for (const id of stale) {
      this.managed.delete(id);
      closing.push(this.unregisterBackend(id));
    }
    for (const [id, reg] of wanted) {
      if (this.managed.has(id)) continue;
      if (this.backendsById.has(id)) continue; // a services-file backend of the same id wins
      if (!this.services.has(reg.service) && !this.names.has(reg.service)) {
        try {
          this.addService(
            reg.service,
            (reg.aliases ?? []).filter((a) => !this.names.has(a)),
          );
        } catch (err) {
          this.logger.warn({ backend: id, err: errMessage(err) }, "backend from the control plane skipped");
          continue;
        }
      }
      const { aliases: _aliases, ...registration } = reg;
      try {
        this.registerBackend(registration);
        this.managed.set(id, reg);
      } catch (err) {
        this.logger.warn({ backend: id, err: errMessage(err) }, "backend from the control plane skipped");
      }
    }
    void Promise.allSettled(closing);
  }

  /** The cluster primary: applies a worker's passive health event; returns the state every worker should mirror. */
  applyHealthEvent(id: string, ev: HealthEvent): HealthState | undefined {
    const b = this.backendsById.get(id);
    if (b === undefined) return undefined;
    if (ev.kind === "success") b.recordSuccess();
    else b.recordFailure(ev.at, ev.reason);
    return b.healthState();
  }

  /** A cluster worker: mirrors the primary's verdict on a backend's passive health. */
  applyHealthState(id: string, state: HealthState): void {
    this.backendsById.get(id)?.applyHealthState(state);
  }

  /** A cluster worker: mirrors the primary's probe results. */
  applyProbeState(id: string, state: ProbeState): void {
    this.backendsById.get(id)?.applyProbeState(state);
  }

  backends(): BackendSnapshot[] {
    const now = Date.now();
    return [...this.backendsById.values()].map((b) => b.snapshot(now));
  }

  backend(id: string): BackendSnapshot | undefined {
    return this.backendsById.get(id)?.snapshot(Date.now());
  }

  /** Total requests in flight to all backends. */
  inFlight(): number {
    let n = 0;
    for (const b of this.backendsById.values()) n += b.inFlight;
    return n;
  }

  /** Starts active health and load probes (one right away, then every healthIntervalMs). */
  startHealthChecks(): void {
    if (this.healthTimer !== undefined || this.closed) return;
    this.healthTimer = setInterval(() => void this.probeAll(), this.settings.healthIntervalMs);
    this.healthTimer.unref();
    void this.probeAll();
  }

  async probeAll(): Promise<void> {
    if (this.probing) return;
    this.probing = true;
    try {
      await Promise.all([...this.backendsById.values()].map((b) => this.probe(b)));
    } finally {
      this.probing = false;
    }
  }

  private async probe(b: Backend): Promise<void> {
    await this.probeOnce(b);
    this.onProbed?.(b.id, b.probeState());
  }

  private async probeOnce(b: Backend): Promise<void> {
    const headers: Record<string, string> = {};
    if (b.apiKey !== undefined) headers.authorization = `Bearer ${b.apiKey}`;
    const timeout = this.settings.healthTimeoutMs;
    try {
      const res = await b.dispatcher.request({
        path: b.basePath + b.adapter.healthPath,
        method: "GET",
        headers,
        headersTimeout: timeout,
        bodyTimeout: timeout,
        signal: AbortSignal.timeout(timeout),
      });
      const text = (await res.body.text()).slice(0, 4096);
      const verdict = b.adapter.judgeHealth(res.statusCode, text);
      if (verdict.ready) {
        b.activeHealthy = true;
        b.consecutiveProbeFailures = 0;
        b.engineSaturated = verdict.saturated === true;
      } else {
        this.probeFailed(b, `health probe: ${verdict.detail ?? `status ${res.statusCode}`}`);
      }
    } catch (err) {
      this.probeFailed(b, `health probe: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    const metricsUrl =
      b.metricsUrl ??
      (b.adapter.defaultMetricsPath !== undefined ? b.origin + b.basePath + b.adapter.defaultMetricsPath : undefined);
    if (metricsUrl === undefined) return;
    try {
      const res =
        b.metricsUrl === undefined
          ? await b.dispatcher.request({
              path: b.basePath + b.adapter.defaultMetricsPath!,
              method: "GET",
              headers,
              signal: AbortSignal.timeout(timeout),
            })
          : await undiciRequest(metricsUrl, { headers, signal: AbortSignal.timeout(timeout) });
      if (res.statusCode !== 200) {
        await res.body.dump();
        return;
      }
      const load = b.adapter.parseLoad(parsePrometheusText(await res.body.text()));
      b.waiting = load.waiting ?? 0;
      b.running = load.running ?? 0;
      b.cacheUsage = load.cacheUsage;
    } catch {
      // Metrics are optional (llama.cpp without --metrics, MindIE without monitor mode): routing uses in-flight only.
    }
  }

  private probeFailed(b: Backend, reason: string): void {
    b.consecutiveProbeFailures++;
    b.lastError = reason;
    if (b.consecutiveProbeFailures >= this.settings.unhealthyAfterProbes) b.activeHealthy = false;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.healthTimer !== undefined) clearInterval(this.healthTimer);
    this.healthTimer = undefined;
    for (const b of this.backendsById.values()) b.wire.destroy();
    await Promise.all([...this.backendsById.values()].map((b) => b.dispatcher.destroy()));
  }

  /** True once drain() began: new requests are refused with 503. */
  get isDraining(): boolean {
    return this.draining;
  }

  /** Client requests in progress (from the request's arrival until its response is closed). */
  openRequests(): number {
    return this.openResponses.size;
  }

  /**
   * Graceful stop: new requests get 503 `gateway_shutting_down` (with `connection: close`), `/healthz` answers 503,
   * and requests in flight go on until they end or `timeoutMs` passes (or `cutNow` fires, e.g. on a second Ctrl-C).
   * Then what is left is cut: a stream gets an in-band error event (`gateway_shutdown`, no `[DONE]`), any other
   * answer is broken off, a request still waiting for its first byte gets 503. Backends are not blamed for the cut.
   * Resolves to the number of requests cut. Stopping the listener (no new connections) is the caller's part: see
   * ListeningGateway.drain.
   */
  async drain(timeoutMs: number, cutNow?: AbortSignal): Promise<{ cut: number }> {
    this.draining = true;
    const idle = (): boolean => this.openResponses.size === 0;
    if (!idle()) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          cutNow?.removeEventListener("abort", done);
          this.onIdle = undefined;
          resolve();
        };
        const timer = setTimeout(done, Math.max(0, timeoutMs));
        timer.unref();
        cutNow?.addEventListener("abort", done, { once: true });
        this.onIdle = done;
        if (cutNow?.aborted === true) done();
      });
    }
    const cut = this.openResponses.size;
    if (cut === 0) return { cut };
    for (const ex of this.openResponses.values()) ex.call?.abort(new GatewayShutdown("gateway shutting down"));
    // Give the cut answers a moment to write their error event; then anything left is destroyed.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        for (const res of this.openResponses.keys()) res.destroy();
        this.onIdle = undefined;
        resolve();
      }, 1000);
      timer.unref();
      this.onIdle = () => {
        clearTimeout(timer);
        this.onIdle = undefined;
        resolve();
      };
      if (idle()) this.onIdle();
    });
    return { cut };
  }

  /** The Node request handler. */
  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    // One "close" listener per request does all the bookkeeping (adding and removing a listener per upstream attempt
    // costs more than the check): the request leaves the open set, and a client that goes away before its answer is
    // complete aborts the upstream call in progress.
    const ex: Exchange = { call: undefined };
    this.openResponses.set(res, ex);
    res.on("close", () => {
      this.openResponses.delete(res);
      if (this.openResponses.size === 0) this.onIdle?.();
      if (ex.call !== undefined && !res.writableFinished) ex.call.abort(new ClientGone());
    });
    if (this.draining) res.setHeader("connection", "close");
    this.route(req, res, ex).catch((err: unknown) => {
      this.logger.error({ err: err instanceof Error ? err.message : String(err) }, "gateway internal error");
      sendJson(res, 500, errorBody("internal gateway error", "switchyard_gateway_error", "internal_error"));
    });
  };

  private async route(req: IncomingMessage, res: ServerResponse, ex: Exchange): Promise<void> {
    const started = performance.now();
    const rawUrl = req.url ?? "/";
    const q = rawUrl.indexOf("?");
    const path = q < 0 ? rawUrl : rawUrl.slice(0, q);
    if (req.method === "GET" && path === "/metrics") {
      const { contentType, text } =
        this.metricsText !== undefined
          ? await this.metricsText()
          : { contentType: this.metrics.registry.contentType, text: await this.metrics.registry.metrics() };
      res.writeHead(200, { "content-type": contentType });
      res.end(text);
      return;
    }
    if (this.cors !== undefined) {
      if (req.method === "OPTIONS") {
        req.resume();
        if (this.cors.preflight(req, res) === "refused") this.metrics.rejected.inc({ reason: "cors" });
        return;
      }
      this.cors.decorate(req, res);
    }
    if (this.draining && path !== "/metrics") {
      req.resume();
      if (req.method === "GET" && (path === "/healthz" || path === "/health")) {
        sendJson(res, 503, JSON.stringify({ status: "draining", inFlight: this.openResponses.size - 1 }));
        return;
      }
      this.reject(
        req,
        res,
        503,
        "shutting_down",
        "the gateway is shutting down; retry on another instance or in a moment",
        "gateway_shutting_down",
        { "retry-after": "1" },
      );
      return;
    }
    if (req.method === "GET" && (path === "/healthz" || path === "/health")) {
      const now = Date.now();
      const backends = [...this.backendsById.values()];
      const routable = backends.filter((b) => b.available(now)).length;
      sendJson(
        res,
        200,
        JSON.stringify({
          status: "ok",
          backends: backends.length,
          routable,
          ...(this.worker !== undefined && { worker: this.worker, pid: process.pid }),
        }),
      );
      return;
    }
    if (!path.startsWith("/v1/")) {
      this.reject(req, res, 404, "not_found", `no route for ${req.method ?? "?"} ${path}`, "not_found");
      return;
    }
    let keyId: string | undefined;
    let limits: KeyLimits | undefined;
    if (this.auth !== undefined) {
      const who = this.auth.identify(req.headers.authorization);
      if (typeof who === "string") {
        req.resume();
        this.reject(
          req,
          res,
          401,
          "unauthorized",
          "missing or invalid API key (Authorization: Bearer <key>)",
          "invalid_api_key",
        );
        return;
      }
      keyId = who.keyId;
      if (who.limits.rpm !== undefined || who.limits.tpm !== undefined) {
        limits = who.limits;
        const admitted = this.limiter.admit(keyId, limits, Date.now());
        const refusal = admitted instanceof Promise ? await admitted : admitted;
        if (refusal !== undefined) {
          req.resume();
          this.reject(
            req,
            res,
            429,
            "rate_limited",
            refusal.limit === "tpm"
              ? `tokens-per-minute limit of this API key (${limits.tpm}) exceeded; retry after ${refusal.retryAfterS} s`
              : `requests-per-minute limit of this API key (${limits.rpm}) exceeded; retry after ${refusal.retryAfterS} s`,
            refusal.limit === "tpm" ? "tokens_per_minute_exceeded" : "rate_limit_exceeded",
            { "retry-after": String(refusal.retryAfterS) },
          );
          return;
        }
      }
    }
    if (req.method === "GET" && path === "/v1/models") {
      const data = [...this.names.keys()].map((id) => ({
        id,
        object: "model",
        created: this.createdAt,
        owned_by: "switchyard",
      }));
      sendJson(res, 200, JSON.stringify({ object: "list", data }));
      return;
    }
    if (req.method !== "POST" || !PROXIED_PATHS.has(path)) {
      req.resume();
      this.reject(req, res, 404, "not_found", `no route for ${req.method ?? "?"} ${path}`, "not_found");
      return;
    }
    const body = await this.readBody(req, res);
    if (body === undefined) return;
    let model: unknown;
    let stream = false;
    try {
      const parsed: unknown = JSON.parse(body.toString("utf8"));
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
      model = (parsed as { model?: unknown }).model;
      stream = (parsed as { stream?: unknown }).stream === true;
    } catch {
      this.reject(req, res, 400, "bad_request", "request body must be a JSON object", "invalid_request_error");
      return;
    }
    if (typeof model !== "string") {
      this.reject(req, res, 400, "bad_request", 'request body needs a "model" string', "invalid_request_error");
      return;
    }
    const service = this.names.get(model);
    if (service === undefined) {
      this.reject(
        req,
        res,
        404,
        "unknown_model",
        `model "${model}" is not served here; see GET /v1/models`,
        "model_not_found",
      );
      return;
    }
    const meter: TokenMeter | undefined =
      limits?.tpm !== undefined ? { requestBytes: body.length, responseBytes: 0, usage: undefined } : undefined;
    try {
      await this.proxy(req, res, ex, { path, rawUrl, body, model, stream, service, started, keyId, meter });
    } finally {
      if (meter !== undefined && keyId !== undefined && limits !== undefined) {
        const tokens = meter.usage ?? estimateTokens(meter.requestBytes + meter.responseBytes);
        this.limiter.spend(keyId, limits, tokens, Date.now());
      }
    }
  }

  private reject(
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    reason: string,
    message: string,
    code: string,
    extra?: Record<string, string>,
  ): void {
    this.metrics.rejected.inc({ reason });
    sendJson(
      res,
      status,
      errorBody(message, status === 429 ? "rate_limit_error" : "invalid_request_error", code),
      extra,
    );
    this.logger.info({ method: req.method, path: (req.url ?? "").split("?")[0], status, reason }, "rejected");
  }

  /**
   * Answers 413 to a body over maxBodyBytes, so that the client reads it: closing a socket while the client is still
   * uploading makes the kernel reset the connection, and the client sees ECONNRESET/EPIPE instead of the answer (and
   * retries the upload). So the answer is written whole (with `connection: close`) but the response is ended only
   * once the rest of the body has been read and discarded, up to DISCARD_LIMIT bytes or DISCARD_MS; past either bound
   * the connection is closed anyway. A client that sent `Expect: 100-continue` never gets here: see
   * handleExpectContinue.
   */
  private refuseTooLarge(req: IncomingMessage, res: ServerResponse): void {
    const limit = this.settings.maxBodyBytes;
    this.metrics.rejected.inc({ reason: "too_large" });
    this.logger.info(
      { method: req.method, path: (req.url ?? "").split("?")[0], status: 413, reason: "too_large" },
      "rejected",
    );
    const body = errorBody(
      `request body exceeds ${limit} bytes (the gateway's maxBodyBytes); send a smaller request`,
      "invalid_request_error",
      "request_too_large",
    );
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.writeHead(413, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      connection: "close",
    });
    res.write(body);
    let discarded = 0;
    let ended = false;
    const finish = (): void => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      req.off("data", onData);
      res.end();
    };
    const onData = (chunk: Buffer): void => {
      discarded += chunk.length;
      if (discarded > DISCARD_LIMIT) finish();
    };
    const timer = setTimeout(finish, DISCARD_MS);
    timer.unref();
    if (req.complete) {
      finish();
      return;
    }
    req.on("data", onData);
    req.once("end", finish);
    req.once("close", finish);
    req.resume();
  }

  /**
   * Node's `checkContinue`: a client that asks before sending its body (curl does for bodies over 1 MiB) gets the 413
   * at once when the declared size is over the limit, and so never uploads it; any other request is told to go on.
   */
  readonly handleExpectContinue = (req: IncomingMessage, res: ServerResponse): void => {
    const declared = Number(req.headers["content-length"]);
    if (Number.isFinite(declared) && declared > this.settings.maxBodyBytes) {
      this.metrics.rejected.inc({ reason: "too_large" });
      sendJson(
        res,
        413,
        errorBody(
          `request body exceeds ${this.settings.maxBodyBytes} bytes (the gateway's maxBodyBytes); send a smaller request`,
          "invalid_request_error",
          "request_too_large",
        ),
        { connection: "close" },
      );
      return;
    }
    res.writeContinue();
    this.handle(req, res);
  };

  /** Reads the request body up to maxBodyBytes; answers 413 and returns undefined beyond it. */
  private readBody(req: IncomingMessage, res: ServerResponse): Promise<Buffer | undefined> {
    const limit = this.settings.maxBodyBytes;
    const declared = Number(req.headers["content-length"]);
    if (Number.isFinite(declared) && declared > limit) {
      this.refuseTooLarge(req, res);
      return Promise.resolve(undefined);
    }
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let done = false;
      req.on("data", (chunk: Buffer) => {
        if (done) return;
        size += chunk.length;
        if (size > limit) {
          done = true;
          chunks.length = 0;
          this.refuseTooLarge(req, res);
          resolve(undefined);
          return;
        }
        chunks.push(chunk);
      });
      req.on("end", () => {
        if (done) return;
        done = true;
        resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
      });
      req.on("error", () => {
        if (done) return;
        done = true;
        resolve(undefined);
      });
      req.on("close", () => {
        if (done) return;
        done = true;
        resolve(undefined);
      });
    });
  }

  private upstreamHeaders(
    src: IncomingHttpHeaders,
    backend: Backend,
    requestId: string,
  ): Record<string, string | string[]> {
    const out: Record<string, string | string[]> = {};
    for (const name in src) {
      if (DROP_REQUEST_HEADERS.has(name)) continue;
      const v = src[name];
      if (v !== undefined) out[name] = v;
    }
    if (backend.apiKey !== undefined) out.authorization = `Bearer ${backend.apiKey}`;
    out["accept-encoding"] = "identity";
    out["x-request-id"] ??= requestId;
    return out;
  }

  private async proxy(
    req: IncomingMessage,
    res: ServerResponse,
    ex: Exchange,
    r: {
      path: string;
      rawUrl: string;
      body: Buffer;
      /** The model name the client asked for (the service's name or an alias). */
      model: string;
      stream: boolean;
      service: Service;
      started: number;
      keyId: string | undefined;
      meter: TokenMeter | undefined;
    },
  ): Promise<void> {
    const requestId = (req.headers["x-request-id"] as string | undefined) ?? randomUUID();
    const tried = new Set<Backend>();
    let firstPool: string | undefined;
    let last: Extract<AttemptResult, { kind: "retry" }> | undefined;
    let attempts = 0;
    let outcome: AttemptResult | undefined;
    let answeredBy: Backend | undefined;
    let lastFailedBackend: Backend | undefined;
    while (attempts < this.settings.maxAttempts) {
      const pick = pickBackend(r.service, tried, Date.now());
      if (pick === undefined) break;
      const backend = pick.backend;
      if (attempts > 0 && last !== undefined)
        this.metrics.retries.inc({ service: r.service.model, reason: last.failure });
      attempts++;
      tried.add(backend);
      firstPool ??= backend.pool.name;
      if (pick.spilled) this.metrics.spillovers.inc({ service: r.service.model, to_pool: backend.pool.name });
      outcome = await this.attempt(req, res, ex, backend, r, requestId);
      answeredBy = backend;
      if (outcome.kind === "failed-after-commit" && outcome.failure !== "shutdown") {
        this.metrics.errors.inc({ service: r.service.model, backend: backend.id, reason: outcome.failure });
      }
      if (outcome.kind !== "retry") break;
      last = outcome;
      lastFailedBackend = backend;
      this.metrics.errors.inc({ service: r.service.model, backend: backend.id, reason: outcome.failure });
    }
    const durationMs = performance.now() - r.started;
    let status: number;
    /** complete: the client got a whole answer (any status); incomplete: cut mid-answer; client_closed: it left. */
    let result: "complete" | "incomplete" | "client_closed" = "complete";
    if (outcome === undefined || outcome.kind === "retry") {
      answeredBy = undefined;
      if (last?.response !== undefined) {
        // No other backend left: hand the client the upstream's own error answer (it carries Retry-After for 429),
        // counted against the backend that gave it.
        status = last.response.status;
        answeredBy = lastFailedBackend;
        if (!res.headersSent && !res.destroyed) {
          res.writeHead(status, { ...last.response.headers, "content-length": last.response.body.length });
          res.end(last.response.body);
        }
      } else if (last !== undefined) {
        const timeout = last.failure === "ttft_timeout" || last.failure === "timeout" || last.failure === "stall";
        status = timeout ? 504 : 502;
        sendJson(
          res,
          status,
          errorBody(
            `no backend answered model "${r.service.model}" after ${attempts} attempt(s); last error: ${last.message}`,
            "switchyard_gateway_error",
            timeout ? "upstream_timeout" : "upstream_unavailable",
          ),
        );
      } else {
        status = 503;
        sendJson(
          res,
          status,
          errorBody(
            `no healthy backend for model "${r.service.model}" (all ejected, down or cooling off); retry later`,
            "switchyard_gateway_error",
            "no_backend_available",
          ),
          { "retry-after": "1" },
        );
      }
    } else if (outcome.kind === "client-gone") {
      status = 499;
      result = "client_closed";
    } else if (outcome.kind === "shutdown") {
      status = 503;
      answeredBy = undefined;
      sendJson(
        res,
        status,
        errorBody(
          "the gateway shut down before the answer started; retry on another instance or in a moment",
          "switchyard_gateway_error",
          "gateway_shutting_down",
        ),
        { "retry-after": "1" },
      );
    } else {
      status = outcome.status;
      if (outcome.kind === "failed-after-commit") result = "incomplete";
      if (answeredBy !== undefined && answeredBy.pool.name !== firstPool && firstPool !== undefined) {
        this.metrics.failovers.inc({ service: r.service.model, from_pool: firstPool, to_pool: answeredBy.pool.name });
      }
      // A backend failed before the first byte, another answered all of it: the client never saw the failure.
      if (attempts > 1 && result === "complete" && status < 500) {
        this.metrics.saved.inc({ service: r.service.model, stream: r.stream ? "true" : "false" });
      }
    }
    const backendLabel = answeredBy?.id ?? "none";
    this.metrics.requests.inc({ service: r.service.model, backend: backendLabel, status: String(status), result });
    if (answeredBy !== undefined && result === "complete")
      this.metrics.latency.observe({ backend: backendLabel }, durationMs / 1000);
    const rec = {
      reqId: requestId,
      method: req.method,
      path: r.path,
      model: r.service.model,
      stream: r.stream,
      status,
      result,
      backend: backendLabel,
      attempts,
      ...(outcome?.kind === "failed-after-commit" && { failure: outcome.failure }),
      ...(last !== undefined && { lastFailure: last.failure }),
      ...(r.keyId !== undefined && { key: r.keyId }),
      ms: Math.round(durationMs * 100) / 100,
    };
    if (this.accessLog !== undefined) {
      if (this.logger.isLevelEnabled("info")) this.accessLog.request(rec);
    } else {
      this.logger.info(rec, "request");
    }
  }

  /** One upstream attempt. In-flight accounting is balanced by the finally below on every path. */
  private async attempt(
    req: IncomingMessage,
    res: ServerResponse,
    ex: Exchange,
    backend: Backend,
    r: {
      path: string;
      rawUrl: string;
      body: Buffer;
      model: string;
      stream: boolean;
      service: Service;
      started: number;
      meter: TokenMeter | undefined;
    },
    requestId: string,
  ): Promise<AttemptResult> {
    const trial = backend.ejected;
    if (trial) backend.trialInFlight = true;
    backend.inFlight++;
    let timer: NodeJS.Timeout | undefined;
    let stalled = false;
    try {
      if (res.destroyed) return { kind: "client-gone" };
      const firstByteMs = r.stream ? this.settings.ttftTimeoutMs : this.settings.nonStreamTimeoutMs;
      const thisCall = backend.wire.request(
        "POST",
        backend.basePath + r.rawUrl,
        this.upstreamHeaders(req.headers, backend, requestId),
        // The backend gets the name it serves, whatever alias the client used; the rest of the body is untouched.
        r.model === backend.servedModel
          ? r.body
          : Buffer.from(rewriteModel(r.body.toString("utf8"), backend.servedModel)),
      );
      ex.call = thisCall;
      timer = setTimeout(() => thisCall.abort(new AttemptTimeout(r.stream ? "ttft_timeout" : "timeout")), firstByteMs);
      let upstream: UpstreamResponse;
      try {
        upstream = await thisCall.response;
      } catch (err) {
        const cause = thisCall.abortReason ?? err;
        if (cause instanceof ClientGone) return { kind: "client-gone" };
        if (cause instanceof GatewayShutdown) return { kind: "shutdown" };
        const failure = upstreamFailureKind(cause);
        backend.recordFailure(Date.now(), failure);
        return { kind: "retry", failure, message: `${backend.id}: ${failure} (${errMessage(cause)})` };
      }
      const status = upstream.statusCode;
      if (status >= 500 || status === 429) {
        const failure: FailureKind = status === 429 ? "status_429" : "status_5xx";
        const now = Date.now();
        if (status === 429) {
          const wait = parseRetryAfterMs(upstream.headers["retry-after"], now) ?? 1000;
          backend.coolingUntil = now + wait;
        } else {
          backend.recordFailure(now, `status ${status}`);
        }
        let body: Buffer;
        try {
          body = await readBodyLimited(upstream.body, RETRYABLE_BODY_LIMIT);
        } catch {
          body = Buffer.from(errorBody(`upstream answered ${status}`, "upstream_error", "upstream_error"));
        }
        return {
          kind: "retry",
          failure,
          message: `${backend.id}: upstream answered ${status}`,
          response: { status, headers: this.clientHeaders(upstream.headers, backend, false), body },
        };
      }
      const contentType = String(upstream.headers["content-type"] ?? "");
      const sse = contentType.includes("text/event-stream");
      const result = await this.relay(
        res,
        backend,
        upstream,
        sse,
        r.path === RESPONSES_PATH,
        r.meter,
        thisCall,
        r.started,
        () => timer,
        (t) => {
          timer = t;
        },
        () => {
          stalled = true;
        },
      );
      if (result.kind === "answered") {
        backend.recordSuccess();
      } else if ((result.kind === "retry" || result.kind === "failed-after-commit") && result.failure !== "shutdown") {
        backend.recordFailure(Date.now(), stalled ? "stall" : result.failure);
      }
      return result;
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      ex.call = undefined;
      backend.inFlight--;
      if (trial) backend.trialInFlight = false;
    }
  }

  /** The upstream's answer headers as the client gets them; `contentLength` is set when the gateway knows it. */
  private clientHeaders(
    src: Record<string, string | string[] | undefined>,
    backend: Backend,
    streaming: boolean,
    contentLength?: number,
  ): OutgoingHeaders {
    const out: OutgoingHeaders = {};
    for (const name in src) {
      if (DROP_RESPONSE_HEADERS.has(name) || isCorsHeader(name)) continue;
      const v = src[name];
      if (v !== undefined) out[name] = v;
    }
    out["x-switchyard-backend"] = backend.id;
    if (contentLength !== undefined) out["content-length"] = contentLength;
    if (streaming) {
      out["x-accel-buffering"] = "no";
      out["cache-control"] ??= "no-cache";
    }
    return out;
  }

  /**
   * Relays a 2xx/4xx upstream answer. SSE: forwarded event by event as they arrive (a partial event is held until its
   * blank line, so an error event can always be appended cleanly); the client's headers are sent with the first whole
   * event, so failures before it can still be retried. Other answers: buffered (bounded) so a failure mid-body becomes
   * a retry or a 502/504 instead of a truncated 200.
   */
  private relay(
    res: ServerResponse,
    backend: Backend,
    upstream: UpstreamResponse,
    sse: boolean,
    responsesApi: boolean,
    meter: TokenMeter | undefined,
    call: WireCall,
    started: number,
    getTimer: () => NodeJS.Timeout | undefined,
    setTimer: (t: NodeJS.Timeout) => void,
    markStalled: () => void,
  ): Promise<AttemptResult> {
    const status = upstream.statusCode;
    const body = upstream.body;
    const stallMs = this.settings.stallTimeoutMs;
    return new Promise<AttemptResult>((resolve) => {
      let committed = false;
      /** SSE: the bytes of an event not yet ended by its blank line (held back so an error event starts cleanly). */
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      const scanner = sse ? new SseScanner(responsesApi) : undefined;
      let buffered: Buffer[] = [];
      let bufferedBytes = 0;
      let passthrough = false;
      let gotFirstChunk = false;
      let settled = false;
      let stallTimer: NodeJS.Timeout | undefined;
      const finish = (result: AttemptResult): void => {
        if (settled) return;
        settled = true;
        if (stallTimer !== undefined) clearTimeout(stallTimer);
        resolve(result);
      };
      const commit = (headers: OutgoingHeaders): void => {
        committed = true;
        res.writeHead(status, headers);
        if (sse) this.metrics.ttft.observe({ backend: backend.id }, (performance.now() - started) / 1000);
      };
      const write = (chunk: Buffer): void => {
        if (meter !== undefined) {
          meter.responseBytes += chunk.length;
          meter.usage = totalTokensIn(chunk) ?? meter.usage;
        }
        if (!res.write(chunk)) {
          body.pause();
          if (stallTimer !== undefined) clearTimeout(stallTimer);
          res.once("drain", () => {
            stallTimer?.refresh();
            body.resume();
          });
        }
      };
      const startStallTimer = (): void => {
        stallTimer = setTimeout(() => {
          markStalled();
          call.abort(new AttemptTimeout("stall"));
        }, stallMs);
      };
      const onData = (chunk: Buffer): void => {
        if (settled) return;
        if (!gotFirstChunk) {
          gotFirstChunk = true;
          if (sse) {
            const t = getTimer();
            if (t !== undefined) clearTimeout(t);
          }
          startStallTimer();
        } else {
          stallTimer?.refresh();
        }
        if (scanner !== undefined) {
          const cut = scanner.push(chunk);
          if (cut < 0) {
            pendingBytes += chunk.length;
            if (pendingBytes > SSE_PENDING_LIMIT) {
              call.abort(new Error("SSE event larger than the gateway's limit"));
              return;
            }
            pending.push(Buffer.from(chunk));
            return;
          }
          if (!committed) commit(this.clientHeaders(upstream.headers, backend, true));
          // The common case, a chunk of whole events, goes out as it came (no copy).
          const whole = cut === chunk.length ? chunk : chunk.subarray(0, cut);
          if (pendingBytes === 0) {
            write(whole);
          } else {
            pending.push(whole);
            write(Buffer.concat(pending, pendingBytes + cut));
          }
          pending = cut === chunk.length ? [] : [Buffer.from(chunk.subarray(cut))];
          pendingBytes = chunk.length - cut;
        } else if (passthrough) {
          write(chunk);
        } else {
          buffered.push(chunk);
          bufferedBytes += chunk.length;
          if (bufferedBytes > BUFFERED_RESPONSE_LIMIT) {
            // Too large to hold: send as it comes; a failure from here on breaks the connection (never a clean end).
            const headers = this.clientHeaders(upstream.headers, backend, false);
            const len = upstream.headers["content-length"];
            if (len !== undefined) headers["content-length"] = len;
            commit(headers);
            passthrough = true;
            for (const b of buffered) write(b);
            buffered = [];
          }
        }
      };
      const onEnd = (): void => {
        if (settled) return;
        if (scanner !== undefined) {
          const rest = Buffer.concat(pending, pendingBytes);
          if (scanner.ended && committed) {
            // The last event was [DONE]; anything after it (a comment) goes out too.
            res.end(rest);
            finish({ kind: "answered", status });
          } else if (status >= 400 && !committed) {
            // An error answer labelled as SSE: pass it through as is.
            res.writeHead(status, this.clientHeaders(upstream.headers, backend, false, rest.length));
            res.end(rest);
            finish({ kind: "answered", status });
          } else if (!committed) {
            finish({ kind: "retry", failure: "cut", message: `${backend.id}: stream ended before any event` });
          } else {
            this.streamError(
              res,
              responsesApi
                ? "upstream stream ended without response.completed (or [DONE]); the answer is incomplete"
                : "upstream stream ended without [DONE]; the answer is incomplete",
              "stream_truncated",
            );
            finish({ kind: "failed-after-commit", failure: "truncated", status });
          }
          return;
        }
        if (passthrough) {
          res.end();
        } else {
          const all = buffered.length === 1 ? buffered[0]! : Buffer.concat(buffered, bufferedBytes);
          if (meter !== undefined) {
            meter.responseBytes += all.length;
            meter.usage = totalTokensIn(all) ?? meter.usage;
          }
          res.writeHead(status, this.clientHeaders(upstream.headers, backend, false, all.length));
          // A small answer goes out as one latin1 string: Node then sends the head and the body as one chunk (one
          // write), where a Buffer is corked behind the head and sent as a writev of two. Latin1 maps each byte to one
          // character and back, so the bytes are the same.
          if (all.length <= ONE_WRITE_ANSWER_LIMIT) res.end(all.toString("latin1"), "latin1");
          else res.end(all);
        }
        finish({ kind: "answered", status });
      };
      const onError = (err: Error): void => {
        if (settled) return;
        const cause = call.abortReason ?? err;
        if (cause instanceof ClientGone) {
          finish({ kind: "client-gone" });
          return;
        }
        if (cause instanceof GatewayShutdown) {
          if (!committed) {
            finish({ kind: "shutdown" });
          } else {
            if (sse) {
              this.streamError(
                res,
                "the gateway is shutting down and its drain deadline passed; the answer is incomplete",
                "gateway_shutdown",
              );
            } else {
              res.destroy();
            }
            finish({ kind: "failed-after-commit", failure: "shutdown", status });
          }
          return;
        }
        const failure = upstreamFailureKind(cause);
        const failureKind: FailureKind = failure === "upstream" || failure === "connect" ? "cut" : failure;
        if (!committed) {
          finish({
            kind: "retry",
            failure: failureKind,
            message: `${backend.id}: ${failureKind} (${errMessage(cause)})`,
          });
        } else if (sse) {
          this.streamError(
            res,
            failureKind === "stall"
              ? `upstream stalled for more than ${stallMs} ms; the answer is incomplete`
              : `upstream connection failed mid-answer (${failureKind}); the answer is incomplete`,
            failureKind === "stall" ? "stream_stalled" : "stream_interrupted",
          );
          finish({ kind: "failed-after-commit", failure: failureKind, status });
        } else {
          res.destroy();
          finish({ kind: "failed-after-commit", failure: failureKind, status });
        }
      };
      body.consume({ data: onData, end: onEnd, error: onError });
    });
  }

  /** After the first byte: an in-band error event, no [DONE], then the stream is closed. */
  private streamError(res: ServerResponse, message: string, code: string): void {
    if (res.destroyed) return;
    res.end(`data: ${errorBody(message, "switchyard_gateway_error", code)}\n\n`);
  }
}

function errMessage(err: unknown): string {
  if (err instanceof Error) return (err as { code?: string }).code ?? err.message;
  return String(err);
}
