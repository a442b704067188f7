/**
 * Gateway → control plane traffic reports (issue 14, "Dashboard and report").
 *
 * A gateway that follows a control plane (`switchyard gateway --control-plane URL`) sends the server, every 5 s, a
 * compact report of its traffic: POST <server>/api/services/traffic with the same bearer token as every API call.
 *
 * The report is read from the gateway's own Prometheus counters (src/gateway/metrics.ts), the text a scrape of
 * /metrics would get: in one process the gateway's registry, with `--workers N` the primary's sum over its workers
 * (cluster.ts). Nothing is added to the request path: the reporter costs one registry read every 5 s.
 *
 * The counters are sent **cumulative** (since the gateway process started), with an `instance` id drawn at start: the
 * server keeps the last report of each gateway and stores the differences (src/server/traffic.ts). So a report that
 * is lost costs nothing (the next one carries it), a report delivered twice counts once, and a restarted gateway (a
 * new instance) or a restarted worker (a counter that went down) starts over from zero instead of giving negative
 * rates. A report that cannot be delivered is not an error of the data plane: the gateway serves on and the reporter
 * tries again at the next tick. There is never more than one report in flight and nothing is queued.
 *
 * What the counters can and cannot say (the gap, named):
 * - requests by result (complete / incomplete / client_closed) per service and backend, mapped to the backend's pool;
 *   complete ones split by status: answered (< 400), client error (4xx, including an upstream's 429 handed on) and
 *   failed (5xx: every attempt failed, or no backend was available);
 * - upstream errors by reason per backend, retries per service, failovers (answered by another pool after a failure)
 *   per pool pair, spillovers, and refusals of the gateway itself (auth, rate limit, size: no service label);
 * - TTFT as a histogram per backend (streaming answers only), from which the server takes p50/p99 per interval;
 * - saved by failover, counted per request (switchyard_gateway_saved_total): a backend failed before the first
 *   byte and another answered all of it; of those, the streams are the streams "caught" (the gateway never resumes a
 *   stream after its first byte reached the client, so a catch is always before it). Streams cut mid-answer are the
 *   `incomplete` requests (the client got an in-band error, never a silent truncation).
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { z } from "zod";
import type { WatchLogger } from "./control-plane-source.js";

// ---------------------------------------------------------------------------------------------------------------
// The report (the contract with src/server/traffic.ts)
// ---------------------------------------------------------------------------------------------------------------

export const TRAFFIC_REPORT_VERSION = 1;
/** Bounds of one report: what the server accepts (and what the reporter trims to). */
export const trafficLimits = {
  bytes: 256 * 1024,
  services: 256,
  pools: 1024,
  reasons: 32,
  buckets: 64,
  failoverPairs: 64,
} as const;

const count = z.number().finite().min(0).max(1e15);
const reasonMap = z
  .record(z.string().min(1).max(64), count)
  .refine((o) => Object.keys(o).length <= trafficLimits.reasons, {
    message: `at most ${trafficLimits.reasons} reasons`,
  });
const serviceName = z.string().min(1).max(256);
const poolName = z.string().min(1).max(128);

export const poolTrafficSchema = z.strictObject({
  service: serviceName,
  /** The pool of the backend that answered; "(none)" when no backend did (no backend available, shutdown). */
  pool: poolName,
  answered: count,
  clientError: count,
  failed: count,
  incomplete: count,
  clientClosed: count,
  errors: reasonMap,
  /** Cumulative TTFT bucket counts aligned with the report's `ttftLe`, plus the +Inf bucket last. */
  ttft: z.array(count).max(trafficLimits.buckets + 1),
});

export const serviceTrafficSchema = z.strictObject({
  service: serviceName,
  retries: count,
  /** Failed requests that had tried at least one backend (every attempt failed): they spent retries in vain. */
  exhausted: count,
  /**
   * Requests saved by failover (a backend failed before the first byte, another answered all of it) and, of them, the
   * streams (caught): counted per request by the gateway. Absent from gateways older than this field: the server then
   * estimates saved from retries and exhausted.
   */
  saved: count.optional(),
  caught: count.optional(),
  spillovers: count,
  failovers: z.array(z.strictObject({ from: poolName, to: poolName, n: count })).max(trafficLimits.failoverPairs),
});

export const trafficReportSchema = z
  .strictObject({
    v: z.literal(TRAFFIC_REPORT_VERSION),
    gateway: z
      .string()
      .regex(/^[A-Za-z0-9._:@-]{1,128}$/, "1-128 characters of A-Z a-z 0-9 . _ : @ - (the gateway's --name)"),
    instance: z.string().regex(/^[A-Za-z0-9-]{8,64}$/, "8-64 characters of A-Z a-z 0-9 -"),
    startedAt: z.number().int().min(0),
    at: z.number().int().min(0),
    ttftLe: z.array(z.number().positive().finite()).max(trafficLimits.buckets),
    pools: z.array(poolTrafficSchema).max(trafficLimits.pools),
    services: z.array(serviceTrafficSchema).max(trafficLimits.services),
    rejected: reasonMap,
  })
  .superRefine((r, ctx) => {
    r.pools.forEach((p, i) => {
      if (p.ttft.length !== 0 && p.ttft.length !== r.ttftLe.length + 1) {
        ctx.addIssue({
          code: "custom",
          path: ["pools", i, "ttft"],
          message: `has ${p.ttft.length} buckets; ttftLe has ${r.ttftLe.length} bounds (+Inf last): want ${r.ttftLe.length + 1} or 0`,
        });
      }
    });
    if (r.at < r.startedAt) ctx.addIssue({ code: "custom", path: ["at"], message: "is before startedAt" });
  });

export type TrafficReport = z.infer<typeof trafficReportSchema>;
export type PoolTraffic = z.infer<typeof poolTrafficSchema>;
export type ServiceTraffic = z.infer<typeof serviceTrafficSchema>;

// ---------------------------------------------------------------------------------------------------------------
// Prometheus text → report
// ---------------------------------------------------------------------------------------------------------------

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text exposition format (what prom-client writes): one sample per line, comments skipped. */
export function parsePrometheusText(text: string): PromSample[] {
  const out: PromSample[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const brace = line.indexOf("{");
    const space = line.indexOf(" ");
    let name: string;
    const labels: Record<string, string> = {};
    let rest: string;
    if (brace !== -1 && (space === -1 || brace < space)) {
      name = line.slice(0, brace);
      let i = brace + 1;
      while (i < line.length && line[i] !== "}") {
        const eq = line.indexOf("=", i);
        if (eq === -1 || line[eq + 1] !== '"') break;
        const key = line.slice(i, eq).trim();
        let j = eq + 2;
        let value = "";
        while (j < line.length && line[j] !== '"') {
          if (line[j] === "\\" && j + 1 < line.length) {
            const c = line[j + 1];
            value += c === "n" ? "\n" : c;
            j += 2;
          } else value += line[j++];
        }
        labels[key] = value;
        i = j + 1;
        if (line[i] === ",") i++;
      }
      rest = line.slice(i + 1).trim();
    } else {
      if (space === -1) continue;
      name = line.slice(0, space);
      rest = line.slice(space + 1).trim();
    }
    const valueText = rest.split(/\s+/)[0] ?? "";
    const value = valueText === "+Inf" ? Infinity : valueText === "-Inf" ? -Infinity : Number(valueText);
    if (name === "" || Number.isNaN(value)) continue;
    out.push({ name, labels, value });
  }
  return out;
}

const NONE_POOL = "(none)";
const OTHER = "other";

/** Where a backend belongs, learnt from the backend-state gauge (kept after the backend leaves the set). */
export class BackendDirectory {
  private readonly map = new Map<string, { service: string; pool: string }>();
  constructor(private readonly max = 10_000) {}

  learn(samples: PromSample[]): void {
    for (const s of samples) {
      if (s.name !== "switchyard_gateway_backend_state") continue;
      const { backend, service, pool } = s.labels;
      if (backend === undefined || service === undefined || pool === undefined) continue;
      if (!this.map.has(backend) && this.map.size >= this.max) {
        const first = this.map.keys().next();
        if (first.done !== true) this.map.delete(first.value);
      }
      this.map.set(backend, { service, pool });
    }
  }

  get(backend: string): { service: string; pool: string } | undefined {
    return this.map.get(backend);
  }
}

/** Adds `n` under `key`, keeping at most `max` keys (the rest go to "other"). */
function addReason(o: Record<string, number>, key: string, n: number, max: number): void {
  const k = key in o || Object.keys(o).length < max - 1 ? key.slice(0, 64) || OTHER : OTHER;
  o[k] = (o[k] ?? 0) + n;
}

/** The cumulative report from a scrape of the gateway's metrics (bounded to trafficLimits). */
export function reportFromMetrics(
  text: string,
  id: { gateway: string; instance: string; startedAt: number; at: number },
  directory = new BackendDirectory(),
): TrafficReport {
  const samples = parsePrometheusText(text);
  directory.learn(samples);
  const pools = new Map<string, PoolTraffic>();
  const services = new Map<string, ServiceTraffic>();
  const rejected: Record<string, number> = {};
  const leSet = new Set<number>();
  for (const s of samples) {
    if (s.name === "switchyard_gateway_ttft_seconds_bucket" && s.labels.le !== undefined && s.labels.le !== "+Inf") {
      const le = Number(s.labels.le);
      if (Number.isFinite(le) && le > 0) leSet.add(le);
    }
  }
  const ttftLe = [...leSet].sort((a, b) => a - b).slice(0, trafficLimits.buckets);
  const leIndex = new Map(ttftLe.map((le, i) => [le, i]));

  const service = (name: string): ServiceTraffic | undefined => {
    let svc = services.get(name);
    if (svc === undefined) {
      if (services.size >= trafficLimits.services) return undefined;
      svc = {
        service: name.slice(0, 256),
        retries: 0,
        exhausted: 0,
        saved: 0,
        caught: 0,
        spillovers: 0,
        failovers: [],
      };
      services.set(name, svc);
    }
    return svc;
  };
  const pool = (svc: string, poolName: string): PoolTraffic | undefined => {
    const key = `${svc}\u0000${poolName}`;
    let p = pools.get(key);
    if (p === undefined) {
      if (pools.size >= trafficLimits.pools || service(svc) === undefined) return undefined;
      p = {
        service: svc.slice(0, 256),
        pool: poolName.slice(0, 128) || NONE_POOL,
        answered: 0,
        clientError: 0,
        failed: 0,
        incomplete: 0,
        clientClosed: 0,
        errors: {},
        ttft: [],
      };
      pools.set(key, p);
    }
    return p;
  };
  const poolOf = (backend: string | undefined): string =>
    backend === undefined || backend === "none" ? NONE_POOL : (directory.get(backend)?.pool ?? "(unknown)");

  for (const s of samples) {
    const l = s.labels;
    if (!(s.value > 0) || !Number.isFinite(s.value)) continue;
    switch (s.name) {
      case "switchyard_gateway_requests_total": {
        if (l.service === undefined) break;
        const p = pool(l.service, poolOf(l.backend));
        if (p === undefined) break;
        const status = Number(l.status);
        if (l.result === "incomplete") p.incomplete += s.value;
        else if (l.result === "client_closed") p.clientClosed += s.value;
        else if (status >= 500) {
          p.failed += s.value;
          // Every attempt failed (the last upstream's error was handed on, or 502/504 of the gateway): retries spent.
          if (l.backend !== "none" || status === 502 || status === 504) service(l.service)!.exhausted += s.value;
        } else if (status >= 400) p.clientError += s.value;
        else p.answered += s.value;
        break;
      }
      case "switchyard_gateway_upstream_errors_total": {
        if (l.service === undefined) break;
        const p = pool(l.service, poolOf(l.backend));
        if (p !== undefined) addReason(p.errors, l.reason ?? OTHER, s.value, trafficLimits.reasons);
        break;
      }
      case "switchyard_gateway_retries_total":
        if (l.service !== undefined) {
          const svc = service(l.service);
          if (svc !== undefined) svc.retries += s.value;
        }
        break;
      case "switchyard_gateway_saved_total":
        if (l.service !== undefined) {
          const svc = service(l.service);
          if (svc !== undefined) {
            svc.saved = (svc.saved ?? 0) + s.value;
            if (l.stream === "true") svc.caught = (svc.caught ?? 0) + s.value;
          }
        }
        break;
      case "switchyard_gateway_spillovers_total":
        if (l.service !== undefined) {
          const svc = service(l.service);
          if (svc !== undefined) svc.spillovers += s.value;
        }
        break;
      case "switchyard_gateway_failovers_total": {
        if (l.service === undefined) break;
        const svc = service(l.service);
        if (svc === undefined || svc.failovers.length >= trafficLimits.failoverPairs) break;
        svc.failovers.push({
          from: (l.from_pool ?? "").slice(0, 128) || "(unknown)",
          to: (l.to_pool ?? "").slice(0, 128) || "(unknown)",
          n: s.value,
        });
        break;
      }
      case "switchyard_gateway_rejected_total":
        addReason(rejected, l.reason ?? OTHER, s.value, trafficLimits.reasons);
        break;
      case "switchyard_gateway_ttft_seconds_bucket": {
        const where = l.backend !== undefined ? directory.get(l.backend) : undefined;
        if (where === undefined) break;
        const p = pool(where.service, where.pool);
        if (p === undefined) break;
        if (p.ttft.length === 0) p.ttft = new Array<number>(ttftLe.length + 1).fill(0);
        const i = l.le === "+Inf" ? ttftLe.length : leIndex.get(Number(l.le));
        if (i !== undefined) p.ttft[i]! += s.value;
        break;
      }
    }
  }
  return {
    v: TRAFFIC_REPORT_VERSION,
    gateway: id.gateway,
    instance: id.instance,
    startedAt: id.startedAt,
    at: Math.max(id.at, id.startedAt),
    ttftLe,
    pools: [...pools.values()],
    services: [...services.values()],
    rejected,
  };
}

/** The gateway's name in reports: `--name`, else host:pid (characters outside the allowed set become "-"). */
export function gatewayId(name?: string): string {
  const raw = name ?? `${hostname()}:${process.pid}`;
  return raw.replace(/[^A-Za-z0-9._:@-]/g, "-").slice(0, 128) || "gateway";
}

// ---------------------------------------------------------------------------------------------------------------
// The reporter
// ---------------------------------------------------------------------------------------------------------------

export interface TrafficReporterOptions {
  /** The server's base URL (no trailing slash). */
  url: string;
  /** The home's API token (a bearer token; never logged). */
  token: string;
  /** The gateway's name in reports (gatewayId()). */
  gateway: string;
  /** The gateway's metrics as Prometheus text (its registry, or the primary's sum over its workers). */
  metricsText: () => Promise<string>;
  /** Between reports (default 5000 ms; at least 200). */
  intervalMs?: number;
  /** One delivery's deadline (default 5000 ms). */
  timeoutMs?: number;
  logger?: WatchLogger;
  signal?: AbortSignal;
  fetch?: typeof fetch;
  now?: () => number;
}

export interface TrafficReporter {
  /** Builds and sends one report now; true when the server took it. */
  sendNow(): Promise<boolean>;
  /** Reports sent and taken, and the last failure (tests, logs). */
  stats(): { sent: number; failed: number; lastError: string | null };
  /** Resolves when the reporter has stopped (its signal was aborted) after a last report. */
  done: Promise<void>;
}

/** Sends a traffic report every few seconds until `signal` aborts, then one last one. Never throws. */
export function startTrafficReporter(opts: TrafficReporterOptions): TrafficReporter {
  const doFetch = opts.fetch ?? fetch;
  const now = opts.now ?? Date.now;
  const intervalMs = Math.max(200, opts.intervalMs ?? 5000);
  const timeoutMs = opts.timeoutMs ?? 5000;
  const instance = randomBytes(8).toString("hex");
  const startedAt = now();
  const directory = new BackendDirectory();
  let sent = 0;
  let failed = 0;
  let lastError: string | null = null;
  let outage = false;
  let inFlight: Promise<boolean> | null = null;

  let stopping = false;
  const deliver = async (): Promise<boolean> => {
    let body: string;
    try {
      const text = await opts.metricsText();
      body = JSON.stringify(
        reportFromMetrics(text, { gateway: opts.gateway, instance, startedAt, at: now() }, directory),
      );
    } catch (err) {
      return fail(`the gateway's metrics could not be read: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (body.length > trafficLimits.bytes) {
      return fail(`the report is ${body.length} bytes, over the ${trafficLimits.bytes}-byte limit; not sent`);
    }
    try {
      const res = await doFetch(`${opts.url}/api/services/traffic`, {
        method: "POST",
        headers: { authorization: `Bearer ${opts.token}`, "content-type": "application/json" },
        body,
        // The last report, at stop, may hold the process up 2 s at most.
        signal: AbortSignal.timeout(stopping ? Math.min(timeoutMs, 2000) : timeoutMs),
      });
      const answer = await res.text().catch(() => "");
      if (!res.ok) {
        let why = answer.slice(0, 500);
        try {
          why = (JSON.parse(answer) as { error?: string }).error ?? why;
        } catch {
          // not JSON
        }
        return fail(`the server answered ${res.status}: ${why}`);
      }
    } catch (err) {
      return fail(`the server is unreachable (${err instanceof Error ? err.message : String(err)})`);
    }
    sent++;
    if (outage) {
      outage = false;
      opts.logger?.info({ gateway: opts.gateway }, "traffic reports: delivered again");
    }
    return true;
  };
  const fail = (why: string): boolean => {
    failed++;
    if (!outage || why !== lastError) {
      opts.logger?.warn(
        { gateway: opts.gateway },
        `traffic report not delivered: ${why}; the gateway serves on and tries again every ${intervalMs / 1000} s`,
      );
    }
    outage = true;
    lastError = why;
    return false;
  };
  const sendNow = (): Promise<boolean> => {
    // One report in flight at most: a slow server never gets a pile of them.
    inFlight ??= deliver().finally(() => (inFlight = null));
    return inFlight;
  };

  let timer: NodeJS.Timeout | undefined;
  const done = new Promise<void>((resolve) => {
    const tick = (): void => {
      timer = undefined;
      void sendNow().then(() => {
        if (opts.signal?.aborted !== true) {
          timer = setTimeout(tick, intervalMs);
          timer.unref();
        }
      });
    };
    timer = setTimeout(tick, intervalMs);
    timer.unref();
    const stop = (): void => {
      stopping = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      // The last interval's traffic, best effort (the server may be gone too).
      void (inFlight ?? Promise.resolve(true)).then(() => sendNow()).finally(resolve);
    };
    if (opts.signal?.aborted === true) stop();
    else opts.signal?.addEventListener("abort", stop, { once: true });
  });
  return { sendNow, stats: () => ({ sent, failed, lastError }), done };
}
