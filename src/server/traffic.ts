/**
 * Gateway traffic in the control plane (issue 14, "Dashboard and report").
 *
 *   POST /api/services/traffic   a gateway's traffic report (src/gateway/report.ts: cumulative counters since the
 *                                gateway started, its name and instance); 204, or 400 `{error, issues}` naming
 *                                each bad field and the fix, as every API body (request-body.ts)
 *   GET  /api/services/traffic   ?service=&since=&until=&step=: the series per service (requests/s, TTFT p50/p99,
 *                                errors by reason, failovers, saved, streams cut and caught), totals over the
 *                                window, per pool, and the gateways that report
 *
 * The server keeps each gateway's last counters (store: traffic_gateways) and stores the differences as one sample per
 * gateway, service and interval. A new instance of a gateway (a restart) starts from zero; a counter that went down
 * within one instance (a `--workers` worker restarted, its counts left the sum) counts 0 for that interval: never a
 * negative rate. A report repeated (its answer was lost) adds nothing. Samples are kept 3 days and at most 200,000
 * rows; running totals per service and pool are kept for the serving ledger.
 *
 * What the numbers mean (docs/services.md, "Gateway traffic"):
 * - answered: a complete answer with a status below 400; failed: the client got a 5xx (every attempt failed, or no
 *   backend was available) or an incomplete answer (cut mid-answer: the gateway ends it with an in-band error);
 *   client error: a 4xx handed on from a backend; client closed: the client left first.
 * - saved by failover: requests a backend failed before the first byte and another backend answered all of, counted
 *   per request by the gateway (switchyard_gateway_saved_total); streams caught: the streams among them (the gateway
 *   never resumes a stream after its first byte). A gateway from before that counter is estimated: retries minus the
 *   requests that failed after trying a backend. `failovers` (to another pool) are the gateway's exact count.
 * - streams cut = incomplete answers.
 */
import type { Hono } from "hono";
import type { DescribeIssue } from "../core/spec-errors.js";
import { TRAFFIC_REPORT_VERSION, trafficLimits, trafficReportSchema, type TrafficReport } from "../gateway/report.js";
import type { Store, TrafficRetention, TrafficSampleRecord } from "../store/port.js";
import { requestBody, requestError } from "./request-body.js";

export const defaultTrafficRetention: TrafficRetention = {
  keepMs: 3 * 24 * 3600_000,
  maxRows: 200_000,
  maxGateways: 1000,
};

/** One pool's counts in a sample (fractions once spread over time windows). */
export interface PoolCounts {
  answered: number;
  clientError: number;
  failed: number;
  incomplete: number;
  clientClosed: number;
  errors: Record<string, number>;
  /** TTFT: cumulative counts by bucket upper bound in seconds ("+Inf" last). */
  ttft: Record<string, number>;
}

/** A sample's data: one gateway, one service, one interval. */
export interface SampleData {
  pools: Record<string, PoolCounts>;
  retries: number;
  exhausted: number;
  spillovers: number;
  saved: number;
  /** Streams saved by failover (absent in samples stored before the gateway counted it: read as `saved`). */
  caught?: number;
  failovers: Array<{ from: string; to: string; n: number }>;
}

const poolFields = ["answered", "clientError", "failed", "incomplete", "clientClosed"] as const;

/** Flattens a report's cumulative counters to one number per key (the base of differences). */
export function flattenReport(r: TrafficReport): Map<string, number> {
  const out = new Map<string, number>();
  const put = (key: unknown[], v: number): void => {
    const k = JSON.stringify(key);
    out.set(k, (out.get(k) ?? 0) + v);
  };
  for (const p of r.pools) {
    for (const f of poolFields) put(["p", p.service, p.pool, f], p[f]);
    for (const [reason, n] of Object.entries(p.errors)) put(["p", p.service, p.pool, "e", reason], n);
    p.ttft.forEach((n, i) => put(["p", p.service, p.pool, "t", i < r.ttftLe.length ? String(r.ttftLe[i]) : "+Inf"], n));
  }
  for (const s of r.services) {
    put(["s", s.service, "retries"], s.retries);
    put(["s", s.service, "exhausted"], s.exhausted);
    put(["s", s.service, "spillovers"], s.spillovers);
    if (s.saved !== undefined) put(["s", s.service, "saved"], s.saved);
    if (s.caught !== undefined) put(["s", s.service, "caught"], s.caught);
    for (const f of s.failovers) put(["s", s.service, "f", f.from, f.to], f.n);
  }
  for (const [reason, n] of Object.entries(r.rejected)) put(["r", reason], n);
  return out;
}

/**
 * Differences of cumulative counters: against the previous report of the same instance, else from zero. A counter
 * that went down within one instance counts 0 (its base moves to the new value).
 */
export function counterDeltas(
  current: Map<string, number>,
  previous: Record<string, number> | undefined,
): Map<string, number> {
  const out = new Map<string, number>();
  for (const [k, v] of current) {
    const prev = previous?.[k];
    const d = prev === undefined ? v : v >= prev ? v - prev : 0;
    if (d > 0) out.set(k, d);
  }
  return out;
}

function emptyPool(): PoolCounts {
  return { answered: 0, clientError: 0, failed: 0, incomplete: 0, clientClosed: 0, errors: {}, ttft: {} };
}

function emptySample(): SampleData {
  return { pools: {}, retries: 0, exhausted: 0, spillovers: 0, saved: 0, caught: 0, failovers: [] };
}

/** The differences laid out per service (service "" holds the gateway's own refusals: `{rejected}`). */
export function samplesFromDeltas(
  deltas: Map<string, number>,
  /** The report counted saved requests itself (a gateway with switchyard_gateway_saved_total); else estimate. */
  counted = false,
): {
  services: Map<string, SampleData>;
  rejected: Record<string, number>;
} {
  const services = new Map<string, SampleData>();
  const rejected: Record<string, number> = {};
  const svc = (name: string): SampleData => {
    let s = services.get(name);
    if (!s) services.set(name, (s = emptySample()));
    return s;
  };
  for (const [k, n] of deltas) {
    const key = JSON.parse(k) as string[];
    if (key[0] === "p") {
      const [, service, pool, field, sub] = key as [string, string, string, string, string | undefined];
      const p = (svc(service).pools[pool] ??= emptyPool());
      if (field === "e" && sub !== undefined) p.errors[sub] = (p.errors[sub] ?? 0) + n;
      else if (field === "t" && sub !== undefined) p.ttft[sub] = (p.ttft[sub] ?? 0) + n;
      else if ((poolFields as readonly string[]).includes(field)) p[field as (typeof poolFields)[number]] += n;
    } else if (key[0] === "s") {
      const [, service, field, from, to] = key as [string, string, string, string | undefined, string | undefined];
      const s = svc(service);
      if (field === "f" && from !== undefined && to !== undefined) s.failovers.push({ from, to, n });
      else if (field === "retries" || field === "exhausted" || field === "spillovers") s[field] += n;
      else if (counted && field === "saved") s.saved += n;
      else if (counted && field === "caught") s.caught = (s.caught ?? 0) + n;
    } else if (key[0] === "r" && key[1] !== undefined) rejected[key[1]] = (rejected[key[1]] ?? 0) + n;
  }
  if (!counted) {
    for (const s of services.values()) {
      s.saved = Math.max(0, s.retries - s.exhausted);
      s.caught = s.saved; // no split by stream without the gateway's count
    }
  }
  return { services, rejected };
}

/** A quantile of cumulative bucket counts keyed by upper bound (seconds; "+Inf"), interpolated as Prometheus does. */
export function quantileMs(ttft: Record<string, number>, q: number): number | null {
  const buckets = Object.entries(ttft)
    .map(([le, n]) => ({ le: le === "+Inf" ? Infinity : Number(le), n }))
    .filter((b) => !Number.isNaN(b.le))
    .sort((a, b) => a.le - b.le);
  const total = buckets[buckets.length - 1]?.n ?? 0;
  if (!(total > 0)) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevN = 0;
  for (const b of buckets) {
    if (b.n >= rank && b.n > prevN) {
      if (b.le === Infinity) return prevLe * 1000;
      return (prevLe + ((b.le - prevLe) * (rank - prevN)) / (b.n - prevN)) * 1000;
    }
    prevLe = b.le === Infinity ? prevLe : b.le;
    prevN = b.n;
  }
  return prevLe * 1000;
}

// ---------------------------------------------------------------------------------------------------------------
// Ingest
// ---------------------------------------------------------------------------------------------------------------

export class TrafficBook {
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly store: Store,
    private readonly retention: TrafficRetention = defaultTrafficRetention,
    private readonly now: () => number = Date.now,
  ) {}

  /** Stores one report's differences; one report at a time (they read and replace the gateway's counters). */
  ingest(report: TrafficReport): Promise<{ samples: number }> {
    const run = this.chain.then(() => this.ingestNow(report));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async ingestNow(report: TrafficReport): Promise<{ samples: number }> {
    const now = this.now();
    const prior = await this.store.getTrafficGateway(report.gateway);
    const same = prior !== null && prior.instance === report.instance;
    const current = flattenReport(report);
    const deltas = counterDeltas(current, same ? prior.counters : undefined);
    // A new instance's counts are spread over its life so far (bounded by retention and the gateway's last report).
    const fromT = same
      ? prior.t
      : Math.max(now - Math.max(1, report.at - report.startedAt), prior?.t ?? 0, now - this.retention.keepMs);
    const { services, rejected } = samplesFromDeltas(
      deltas,
      report.services.some((s) => s.saved !== undefined),
    );
    const samples: Array<Omit<TrafficSampleRecord, "id">> = [];
    const totals: Array<{ service: string; pool: string; counts: Record<string, number> }> = [];
    const t = Math.max(now, fromT + 1);
    for (const [service, data] of services) {
      samples.push({ gateway: report.gateway, service, fromT, t, data: { ...data } });
      for (const [pool, p] of Object.entries(data.pools)) {
        totals.push({
          service,
          pool,
          counts: {
            answered: p.answered,
            failed: p.failed + p.incomplete,
            incomplete: p.incomplete,
            clientError: p.clientError,
            clientClosed: p.clientClosed,
          },
        });
      }
      const failovers = data.failovers.reduce((n, f) => n + f.n, 0);
      if (data.retries > 0 || failovers > 0)
        totals.push({ service, pool: "", counts: { saved: data.saved, retries: data.retries, failovers } });
    }
    if (Object.keys(rejected).length > 0) {
      samples.push({ gateway: report.gateway, service: "", fromT, t, data: { rejected } });
    }
    await this.store.recordTraffic(
      {
        gateway: { gateway: report.gateway, instance: report.instance, t, counters: Object.fromEntries(current) },
        samples,
        totals,
      },
      this.retention,
    );
    return { samples: samples.length };
  }

  // -------------------------------------------------------------------------------------------------------------
  // Queries
  // -------------------------------------------------------------------------------------------------------------

  /** The series per service over [since, until], in windows of `stepS` seconds. */
  async series(q: { service?: string; since: number; until: number; stepS: number }): Promise<TrafficSeries> {
    const stepMs = q.stepS * 1000;
    const start = Math.floor(q.since / stepMs) * stepMs;
    const windows = Math.max(1, Math.ceil((q.until - start) / stepMs));
    // One service's samples, and the gateways' own refusals (service ""), which belong to no service.
    const rows =
      q.service === undefined
        ? await this.store.listTrafficSamples({ since: q.since })
        : [
            ...(await this.store.listTrafficSamples({ since: q.since, service: q.service })),
            ...(await this.store.listTrafficSamples({ since: q.since, service: "" })),
          ];
    const byService = new Map<string, { windows: Tally[]; total: Tally; pools: Map<string, Tally> }>();
    const rejected: Record<string, number> = {};
    for (const row of rows) {
      if (row.service === "") {
        const r = (row.data as { rejected?: Record<string, number> }).rejected ?? {};
        const frac = overlap(row, q.since, q.until);
        for (const [k, v] of Object.entries(r)) rejected[k] = (rejected[k] ?? 0) + v * frac;
        continue;
      }
      const data = row.data as unknown as SampleData;
      let s = byService.get(row.service);
      if (!s) {
        s = { windows: Array.from({ length: windows }, () => new Tally()), total: new Tally(), pools: new Map() };
        byService.set(row.service, s);
      }
      const whole = overlap(row, q.since, q.until);
      if (whole <= 0) continue;
      s.total.add(data, whole);
      for (const [pool, p] of Object.entries(data.pools)) {
        let t = s.pools.get(pool);
        if (!t) s.pools.set(pool, (t = new Tally()));
        t.addPool(p, whole);
      }
      // Spread over the windows the interval overlaps, in proportion.
      const first = Math.max(0, Math.floor((Math.max(row.fromT, start) - start) / stepMs));
      const last = Math.min(windows - 1, Math.floor((Math.min(row.t, q.until) - 1 - start) / stepMs));
      for (let w = first; w <= last; w++) {
        const frac = overlap(row, start + w * stepMs, start + (w + 1) * stepMs);
        if (frac > 0) s.windows[w]!.add(data, frac);
      }
    }
    const gateways = (await this.store.listTrafficGateways()).map((g) => ({
      gateway: g.gateway,
      lastReportAt: g.t,
    }));
    return {
      since: q.since,
      until: q.until,
      stepS: q.stepS,
      gateways,
      rejected: roundAll(rejected),
      services: [...byService.entries()]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([service, s]) => ({
          service,
          points: s.windows.map((t, w) => ({ t: start + w * stepMs, ...t.view(stepMs / 1000) })),
          totals: s.total.view(Math.max(0.001, (q.until - q.since) / 1000)),
          pools: [...s.pools.entries()]
            .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
            .map(([pool, t]) => ({ pool, ...t.view(Math.max(0.001, (q.until - q.since) / 1000)) })),
        })),
    };
  }

  /** The serving ledger's request counts: per service and pool, and what failover saved per service. */
  async ledger(): Promise<RequestsLedger> {
    const requests: RequestsLedger["requests"] = [];
    const saved: RequestsLedger["saved"] = [];
    for (const t of await this.store.listTrafficTotals()) {
      const c = (k: string): number => Math.round(t.counts[k] ?? 0);
      if (t.pool === "") {
        saved.push({ service: t.service, saved: c("saved"), retries: c("retries"), failovers: c("failovers") });
      } else {
        requests.push({
          service: t.service,
          pool: t.pool,
          answered: c("answered"),
          failed: c("failed"),
          incomplete: c("incomplete"),
          clientError: c("clientError"),
          clientClosed: c("clientClosed"),
        });
      }
    }
    return { requests, saved };
  }
}

export interface RequestsLedger {
  requests: Array<{
    service: string;
    pool: string;
    answered: number;
    failed: number;
    incomplete: number;
    clientError: number;
    clientClosed: number;
  }>;
  saved: Array<{ service: string; saved: number; retries: number; failovers: number }>;
}

export interface TrafficView {
  requests: number;
  reqPerS: number;
  answered: number;
  failed: number;
  clientError: number;
  clientClosed: number;
  /** Streams (and answers) cut mid-answer: the client got an in-band error. */
  cut: number;
  /** Streams saved by failover: broke before the first byte and answered elsewhere (never resumed after it). */
  caught: number;
  saved: number;
  retries: number;
  failovers: number;
  spillovers: number;
  errors: Record<string, number>;
  ttftP50Ms: number | null;
  ttftP99Ms: number | null;
}

export interface TrafficSeries {
  since: number;
  until: number;
  stepS: number;
  gateways: Array<{ gateway: string; lastReportAt: number }>;
  rejected: Record<string, number>;
  services: Array<{
    service: string;
    points: Array<{ t: number } & TrafficView>;
    totals: TrafficView;
    pools: Array<{ pool: string } & TrafficView>;
  }>;
}

/** The share of a sample's interval inside [a, b]. */
function overlap(row: { fromT: number; t: number }, a: number, b: number): number {
  const len = Math.max(1, row.t - row.fromT);
  return Math.max(0, Math.min(row.t, b) - Math.max(row.fromT, a)) / len;
}

const round3 = (n: number): number => Math.round(n * 1000) / 1000;
function roundAll(o: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, round3(v)]));
}

/** Sums of samples (fractions of them). */
class Tally {
  readonly pool = emptyPool();
  retries = 0;
  saved = 0;
  caught = 0;
  failovers = 0;
  spillovers = 0;

  add(d: SampleData, frac: number): void {
    for (const p of Object.values(d.pools)) this.addPool(p, frac);
    this.retries += d.retries * frac;
    this.saved += d.saved * frac;
    this.caught += (d.caught ?? d.saved) * frac;
    this.spillovers += d.spillovers * frac;
    for (const f of d.failovers) this.failovers += f.n * frac;
  }

  addPool(p: PoolCounts, frac: number): void {
    for (const f of poolFields) this.pool[f] += p[f] * frac;
    for (const [k, v] of Object.entries(p.errors)) this.pool.errors[k] = (this.pool.errors[k] ?? 0) + v * frac;
    for (const [k, v] of Object.entries(p.ttft)) this.pool.ttft[k] = (this.pool.ttft[k] ?? 0) + v * frac;
  }

  view(seconds: number): TrafficView {
    const p = this.pool;
    const requests = p.answered + p.clientError + p.failed + p.incomplete + p.clientClosed;
    const p50 = quantileMs(p.ttft, 0.5);
    const p99 = quantileMs(p.ttft, 0.99);
    return {
      requests: round3(requests),
      reqPerS: round3(requests / seconds),
      answered: round3(p.answered),
      failed: round3(p.failed + p.incomplete),
      clientError: round3(p.clientError),
      clientClosed: round3(p.clientClosed),
      cut: round3(p.incomplete),
      caught: round3(this.caught),
      saved: round3(this.saved),
      retries: round3(this.retries),
      failovers: round3(this.failovers),
      spillovers: round3(this.spillovers),
      errors: roundAll(p.errors),
      ttftP50Ms: p50 === null ? null : round3(p50),
      ttftP99Ms: p99 === null ? null : round3(p99),
    };
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------------------------------

const durationPattern = /^(\d{1,7})(ms|s|m|h|d)$/;
const unitMs: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 };

/** `since`/`until`: epoch milliseconds, or a duration back from now (`90s`, `15m`, `2h`). */
export function parseTime(text: string, now: number): number | null {
  if (/^\d{1,16}$/.test(text)) return Number(text);
  const m = durationPattern.exec(text);
  return m ? now - Number(m[1]) * unitMs[m[2]!]! : null;
}

/** A valid (empty) report, shown in the fix of a body that is not one at all. */
const exampleReport =
  `{"v": ${TRAFFIC_REPORT_VERSION}, "gateway": "edge-a", "instance": "0f3c9a2e", "startedAt": 0, "at": 0, ` +
  `"ttftLe": [], "pools": [], "services": [], "rejected": {}} (the report a gateway of this server's version sends)`;

/** A gateway of another version, or a report's own consistency checks: the fix is the gateway, not a value. */
const gatewayFix = `run a gateway of this server's version (it takes report version ${TRAFFIC_REPORT_VERSION}; the fields are in src/gateway/report.ts)`;
const describeTrafficIssue: DescribeIssue = (issue) => {
  if (issue.path.length === 1 && issue.path[0] === "v") {
    return {
      message: `report version ${JSON.stringify(issue.input) ?? "missing"}, this server takes ${TRAFFIC_REPORT_VERSION}`,
      fix: gatewayFix,
    };
  }
  if (issue.code === "custom") return { message: issue.message, fix: gatewayFix };
  return undefined;
};

/** Registers the traffic routes: before the services routes (`/api/services/:name` would take "traffic"). */
export function registerTrafficRoutes(app: Hono, book: TrafficBook, now: () => number = Date.now): void {
  app.post("/api/services/traffic", async (c) => {
    const what = "POST /api/services/traffic";
    const text = await c.req.text();
    if (text.length > trafficLimits.bytes) {
      return c.json(
        {
          error: `${what}: the report is ${text.length} bytes, over the limit of ${trafficLimits.bytes} (fix: fewer services or backends per gateway)`,
        },
        413,
      );
    }
    // The body was read once; requestBody reads it again from Hono's cache.
    const report = await requestBody(c, trafficReportSchema, exampleReport, describeTrafficIssue);
    await book.ingest(report);
    return c.body(null, 204);
  });

  app.get("/api/services/traffic", async (c) => {
    const what = "GET /api/services/traffic";
    const t = now();
    const issues: Array<{ path: string; message: string; fix: string }> = [];
    const timeFix = "epoch milliseconds, or a duration back from now like 90s, 15m, 2h";
    const time = (name: "since" | "until", fallback: number): number => {
      const text = c.req.query(name);
      if (text === undefined) return fallback;
      const v = parseTime(text, t);
      if (v === null) issues.push({ path: name, message: `got ${JSON.stringify(text.slice(0, 64))}`, fix: timeFix });
      return v ?? fallback;
    };
    const since = time("since", t - 15 * 60_000);
    const until = time("until", t);
    if (issues.length === 0 && until <= since) {
      issues.push({
        path: "until",
        message: `is not after since (${until} <= ${since})`,
        fix: "give an until later than since, or leave until out (now)",
      });
    }
    const from = Math.max(since, until - defaultTrafficRetention.keepMs);
    const stepText = c.req.query("step");
    let stepS = Math.max(5, Math.ceil((until - from) / 1000 / 180));
    if (stepText !== undefined) {
      const n = Number(stepText);
      if (!/^\d{1,5}$/.test(stepText) || n < 1 || n > 86_400) {
        issues.push({
          path: "step",
          message: `got ${JSON.stringify(stepText.slice(0, 64))}`,
          fix: "whole seconds from 1 to 86400, or leave step out (about 180 points over the window)",
        });
      } else stepS = Math.max(n, Math.ceil((until - from) / 1000 / 2000));
    }
    const service = c.req.query("service");
    if (service !== undefined && (service.length === 0 || service.length > 256)) {
      issues.push({
        path: "service",
        message: service.length === 0 ? "is empty" : `has ${service.length} characters, more than 256`,
        fix: "give a service name (see `switchyard services`), or leave service out for all",
      });
    }
    if (issues.length > 0) throw requestError(what, issues);
    return c.json(await book.series({ since: from, until, stepS, ...(service !== undefined && { service }) }));
  });
}
