import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Hono } from "hono";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { makeClient } from "../cli/client.js";
import { TRAFFIC_REPORT_VERSION, type TrafficReport } from "../gateway/report.js";
import { SqliteStore } from "../store/sqlite.js";
import { readToken } from "./config.js";
import { startServer, type RunningServer } from "./main.js";
import { counterDeltas, quantileMs, registerTrafficRoutes, TrafficBook, type TrafficSeries } from "./traffic.js";

const le = [0.01, 0.05, 0.1, 0.5, 1];

/** A report with cumulative counts: `ttft` as per-bucket (not cumulative) counts, made cumulative here. */
function report(
  over: Partial<TrafficReport> & {
    answered?: number;
    failed?: number;
    incomplete?: number;
    retries?: number;
    exhausted?: number;
    failovers?: number;
    ttft?: number[];
    errors?: Record<string, number>;
  } = {},
): TrafficReport {
  const per = over.ttft ?? [0, 0, 0, 0, 0, 0];
  const cumulative = per.map((_, i) => per.slice(0, i + 1).reduce((a, b) => a + b, 0));
  return {
    v: TRAFFIC_REPORT_VERSION,
    gateway: over.gateway ?? "gw1",
    instance: over.instance ?? "instance-aaaa",
    startedAt: over.startedAt ?? 0,
    at: over.at ?? 10_000,
    ttftLe: le,
    pools: over.pools ?? [
      {
        service: "chat",
        pool: "ascend",
        answered: over.answered ?? 0,
        clientError: 0,
        failed: over.failed ?? 0,
        incomplete: over.incomplete ?? 0,
        clientClosed: 0,
        errors: over.errors ?? {},
        ttft: cumulative,
      },
    ],
    services: over.services ?? [
      {
        service: "chat",
        retries: over.retries ?? 0,
        exhausted: over.exhausted ?? 0,
        spillovers: 0,
        failovers: over.failovers ? [{ from: "ascend", to: "nvidia", n: over.failovers }] : [],
      },
    ],
    rejected: over.rejected ?? {},
  };
}

describe("counter differences", () => {
  it("are taken against the same instance's last report, never negative", () => {
    const cur = new Map([
      ["a", 10],
      ["b", 3],
      ["c", 5],
    ]);
    expect([...counterDeltas(cur, { a: 4, b: 7 })]).toEqual([
      ["a", 6],
      ["c", 5],
    ]);
    expect([...counterDeltas(cur, undefined)]).toEqual([...cur]);
  });
});

describe("quantileMs", () => {
  it("interpolates within the bucket, as Prometheus's histogram_quantile does", () => {
    // 100 in (0, 0.1], 100 in (0.1, 0.2]: p50 = 100 ms, p99 = 0.1 + 0.1 * 98/100 s.
    const ttft = { "0.1": 100, "0.2": 200, "+Inf": 200 };
    expect(quantileMs(ttft, 0.5)).toBeCloseTo(100, 6);
    expect(quantileMs(ttft, 0.99)).toBeCloseTo(198, 6);
    expect(quantileMs({ "0.1": 0, "+Inf": 0 }, 0.5)).toBeNull();
    // Above the last finite bound: the bound (no guess beyond it).
    expect(quantileMs({ "0.1": 0, "+Inf": 4 }, 0.99)).toBe(100);
  });
});

describe("TrafficBook over SQLite", () => {
  let store: SqliteStore;
  let now = 0;
  let book: TrafficBook;
  let app: Hono;

  beforeEach(() => {
    store = new SqliteStore(":memory:");
    now = 1_000_000;
    book = new TrafficBook(store, { keepMs: 3600_000, maxRows: 1000, maxGateways: 10 }, () => now);
    app = new Hono();
    registerTrafficRoutes(app, book, () => now);
  });

  const postReport = (body: unknown): Promise<Response> =>
    Promise.resolve(
      app.request("/api/services/traffic", {
        method: "POST",
        body: typeof body === "string" ? body : JSON.stringify(body),
        headers: { "content-type": "application/json" },
      }),
    );
  const series = async (query: string): Promise<TrafficSeries> =>
    (await (await app.request(`/api/services/traffic?${query}`)).json()) as TrafficSeries;

  it("takes saved and caught as the gateway counted them when its report carries them (no estimate)", async () => {
    const counted = (at: number, retries: number, saved: number, caught: number): TrafficReport => {
      const r = report({ startedAt: 0, at, answered: 10, retries });
      return { ...r, services: r.services.map((x) => ({ ...x, saved, caught })) };
    };
    now = 1_000_000;
    expect((await postReport(counted(10_000, 0, 0, 0))).status).toBe(204);
    // 4 retries spent on 1 request saved (a stream): the estimate would say 4 saved.
    now = 1_010_000;
    expect((await postReport(counted(20_000, 4, 1, 1))).status).toBe(204);
    const s = await series(`service=chat&since=${now - 10_000}&until=${now}&step=10`);
    expect(s.services.find((x) => x.service === "chat")!.totals).toMatchObject({ saved: 1, caught: 1, retries: 4 });
  });

  it("stores the differences of two reports: req/s, failed, saved, failovers, cut, TTFT p50/p99", async () => {
    // First report: the gateway started 10 s ago; 20 answered since.
    now = 1_000_000;
    expect((await postReport(report({ startedAt: 0, at: 10_000, answered: 20 }))).status).toBe(204);
    // 10 s later: +50 answered (TTFT: 40 within 10 ms, 10 within 50-100 ms), 2 cut, 3 retries of which 1 request
    // failed after trying (exhausted), 2 failovers to nvidia.
    now = 1_010_000;
    const second = report({
      at: 20_000,
      answered: 70,
      incomplete: 2,
      failed: 1,
      retries: 3,
      exhausted: 1,
      failovers: 2,
      errors: { cut: 2, connect: 3 },
      ttft: [40, 0, 10, 0, 0, 0],
    });
    expect((await postReport(second)).status).toBe(204);
    const s = await series(`service=chat&since=${now - 10_000}&until=${now}&step=10`);
    const chat = s.services.find((x) => x.service === "chat")!;
    expect(chat.totals).toMatchObject({
      requests: 53,
      reqPerS: 5.3,
      answered: 50,
      failed: 3,
      cut: 2,
      saved: 2,
      caught: 2,
      retries: 3,
      failovers: 2,
      errors: { cut: 2, connect: 3 },
    });
    // p50 inside the first bucket (rank 25 of 40 within (0, 10 ms]); p99 in (50, 100 ms].
    expect(chat.totals.ttftP50Ms).toBeCloseTo(6.25, 3);
    expect(chat.totals.ttftP99Ms).toBeCloseTo(50 + (50 * (49.5 - 40)) / 10, 3);
    expect(s.gateways).toEqual([{ gateway: "gw1", lastReportAt: 1_010_000 }]);
    // The same report delivered again (its answer was lost) adds nothing.
    now = 1_011_000;
    expect((await postReport(second)).status).toBe(204);
    const again = await series(`service=chat&since=${990_000}&until=${now}`);
    expect(again.services[0]!.totals.answered).toBe(70);
    // The ledger: running totals per service and pool, saved per service.
    expect(await book.ledger()).toEqual({
      requests: [
        { service: "chat", pool: "ascend", answered: 70, failed: 3, incomplete: 2, clientError: 0, clientClosed: 0 },
      ],
      saved: [{ service: "chat", saved: 2, retries: 3, failovers: 2 }],
    });
  });

  it("spreads an interval over the windows it overlaps, so req/s does not jitter with report timing", async () => {
    now = 1_000_000;
    await postReport(report({ startedAt: 0, at: 1, answered: 0 }));
    now = 1_020_000; // 20 s, 200 requests: 10 req/s in each 10-s window
    await postReport(report({ at: 20_001, answered: 200 }));
    const s = await series(`service=chat&since=1000000&until=1020000&step=10`);
    expect(s.services[0]!.points.map((p) => p.reqPerS)).toEqual([10, 10]);
  });

  it("a restarted gateway (new instance) counts from zero; a counter that went down counts 0, never negative", async () => {
    now = 1_000_000;
    await postReport(report({ startedAt: 0, at: 5_000, answered: 100 }));
    // A worker of the same instance restarted: the summed counter went down from 100 to 30.
    now = 1_005_000;
    await postReport(report({ at: 10_000, answered: 30 }));
    // It goes on from its new value.
    now = 1_010_000;
    await postReport(report({ at: 15_000, answered: 35 }));
    // The whole gateway restarted: new instance, counters from zero (4 since it started 2 s ago).
    now = 1_015_000;
    await postReport(report({ instance: "instance-bbbb", startedAt: 100_000, at: 102_000, answered: 4 }));
    const s = await series("service=chat&since=0&until=1015000&step=3600");
    expect(s.services[0]!.totals.answered).toBe(100 + 0 + 5 + 4);
    const rows = await store.listTrafficSamples({ since: 0 });
    expect(
      rows.every((r) => (r.data as { pools: Record<string, { answered: number }> }).pools.ascend!.answered >= 0),
    ).toBe(true);
    // The new instance's counts are placed in the 2 s it had lived.
    expect(rows[rows.length - 1]).toMatchObject({ fromT: 1_013_000, t: 1_015_000 });
  });

  it("a restarted server goes on from each gateway's last counters (kept in the store): nothing counted twice", async () => {
    const file = path.join(mkdtempSync(path.join(os.tmpdir(), "sy-traffic-db-")), "t.db");
    const first = new SqliteStore(file);
    now = 1_000_000;
    await new TrafficBook(first, undefined, () => now).ingest(report({ startedAt: 0, at: 5_000, answered: 40 }));
    await first.close();
    const second = new SqliteStore(file);
    const again = new TrafficBook(second, undefined, () => now);
    now = 1_030_000; // the server was away 30 s; the gateway counted on
    await again.ingest(report({ at: 35_000, answered: 55 }));
    const s = await again.series({ service: "chat", since: 0, until: now, stepS: 3600 });
    expect(s.services[0]!.totals.answered).toBe(55);
    expect((await second.listTrafficSamples({ since: 0 })).map((r) => [r.fromT, r.t])).toEqual([
      [995_000, 1_000_000],
      [1_000_000, 1_030_000],
    ]);
    await second.close();
  });

  it("keeps two gateways apart and sums them", async () => {
    now = 1_000_000;
    await postReport(report({ gateway: "edge-a", startedAt: 0, at: 1, answered: 0 }));
    await postReport(report({ gateway: "edge-b", instance: "instance-bbbb", startedAt: 0, at: 1, answered: 0 }));
    now = 1_010_000;
    await postReport(report({ gateway: "edge-a", at: 10_001, answered: 7 }));
    await postReport(report({ gateway: "edge-b", instance: "instance-bbbb", at: 10_001, answered: 5 }));
    now = 1_012_000;
    await postReport(report({ gateway: "edge-a", at: 12_001, answered: 7, rejected: { auth: 3 } }));
    const s = await series("service=chat&since=1000000&until=1012000");
    expect(s.services[0]!.totals.answered).toBe(12);
    // The gateways' own refusals belong to no service: with or without ?service=.
    expect(s.rejected).toEqual({ auth: 3 });
    expect((await series("since=1000000&until=1012000")).rejected).toEqual({ auth: 3 });
    expect(s.gateways.map((g) => g.gateway).sort()).toEqual(["edge-a", "edge-b"]);
  });

  it("prunes samples past the retention (age and rows)", async () => {
    now = 1_000_000;
    await postReport(report({ startedAt: 0, at: 1, answered: 1 }));
    for (let i = 1; i <= 5; i++) {
      now = 1_000_000 + i * 1000_000; // 1000 s apart; keepMs is 1 h
      await postReport(report({ at: 1 + i * 1000_000, answered: 1 + i }));
    }
    const rows = await store.listTrafficSamples({ since: 0 });
    expect(rows.every((r) => r.t >= now - 3600_000)).toBe(true);
    expect(rows.length).toBe(4);
    // The ledger's totals are kept whole.
    expect((await book.ledger()).requests[0]!.answered).toBe(6);
  });
});

describe("through the real server", () => {
  let server: RunningServer;
  const home = mkdtempSync(path.join(os.tmpdir(), "sy-traffic-"));

  afterAll(async () => {
    await server?.close();
  });

  it("needs the token, stores a report, and the ledger carries requests answered, failed and saved", async () => {
    server = await startServer({ home, host: "127.0.0.1", port: 0, version: "test" });
    const url = server.info.url;
    const body = JSON.stringify(report({ startedAt: Date.now() - 5000, at: Date.now(), answered: 9, retries: 1 }));
    const anonymous = await fetch(`${url}/api/services/traffic`, { method: "POST", body });
    expect(anonymous.status).toBe(401);
    const token = readToken(home)!;
    const ok = await fetch(`${url}/api/services/traffic`, {
      method: "POST",
      body,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    });
    expect(ok.status).toBe(204);
    const client = makeClient(url, token);
    const ledger = await client.get<{ pools: unknown[]; requests: unknown[]; saved: unknown[] }>(
      "/api/services/ledger",
    );
    expect(ledger.requests).toEqual([expect.objectContaining({ service: "chat", pool: "ascend", answered: 9 })]);
    expect(ledger.saved).toEqual([{ service: "chat", saved: 1, retries: 1, failovers: 0 }]);
    const traffic = await client.get<TrafficSeries>("/api/services/traffic?service=chat&since=1m");
    expect(traffic.services[0]!.totals.answered).toBe(9);
    // A service named like the route is still reachable by its own route.
    expect((await fetch(`${url}/api/services/nope`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(
      404,
    );
  });
});

/** Bad input answered like every API body (request-body.ts): 400 `{error, issues}`, the route, the field and the fix. */
describe("bad traffic input, through the real server", () => {
  let server: RunningServer;
  let token: string;
  const home = mkdtempSync(path.join(os.tmpdir(), "sy-traffic-bad-"));
  beforeAll(async () => {
    server = await startServer({ home, host: "127.0.0.1", port: 0, version: "test" });
    token = readToken(home)!;
  });
  afterAll(async () => {
    await server?.close();
  });
  interface Refusal {
    error: string;
    issues?: Array<{ file: string; path: string; message: string; fix: string }>;
  }
  const send = async (route: string, init: RequestInit = {}): Promise<{ status: number; json: Refusal }> => {
    const res = await fetch(`${server.info.url}${route}`, {
      ...init,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    });
    return { status: res.status, json: (await res.json()) as Refusal };
  };
  const post = (body: unknown) =>
    send("/api/services/traffic", { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body) });

  it("a bad report: 400 naming each field and its fix, in the API's one format; nothing is stored", async () => {
    const r = await post(report({ answered: -1 }));
    expect(r.status).toBe(400);
    expect(r.json).toEqual({
      error: "POST /api/services/traffic: pools[0].answered: must be >= 0, got number -1 (fix: use a value >= 0)",
      issues: [
        {
          file: "POST /api/services/traffic",
          path: "pools[0].answered",
          line: 0,
          column: 0,
          message: "must be >= 0, got number -1",
          fix: "use a value >= 0",
        },
      ],
    });
    const cases: Array<[unknown, string]> = [
      ["{not json", 'POST /api/services/traffic: the body is not JSON (fix: send JSON like {"v": 1,'],
      [[1], 'POST /api/services/traffic: expected object, got a list (fix: send JSON like {"v": 1,'],
      [
        { ...report(), v: 2 },
        "POST /api/services/traffic: v: report version 2, this server takes 1 (fix: run a gateway of this server's version",
      ],
      [{ ...report(), gateway: "bad name!" }, "POST /api/services/traffic: gateway: must be 1-128 characters of"],
      [report({ ttft: [1, 2] }), "POST /api/services/traffic: pools[0].ttft: has 2 buckets; ttftLe has 5 bounds"],
      [{ ...report(), extra: 1 }, 'POST /api/services/traffic: extra: unknown key "extra" (fix:'],
      [
        { ...report(), pools: Array.from({ length: 1025 }, (_, i) => ({ ...report().pools[0]!, pool: `p${i}` })) },
        "POST /api/services/traffic: pools: needs at most 1024 item(s), got 1025 (fix: keep at most 1024 item(s))",
      ],
      [
        report({ errors: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`r${i}`, 1])) }),
        "POST /api/services/traffic: pools[0].errors: at most 32 reasons (fix: run a gateway of this server's version",
      ],
    ];
    for (const [body, start] of cases) {
      const res = await post(body);
      expect(res.status, start).toBe(400);
      expect(res.json.error.startsWith(start), res.json.error).toBe(true);
      expect(res.json.error).toMatch(/\(fix: .+\)$/);
      expect(res.json.issues?.[0]?.fix).toBeTruthy();
    }
    // Over the report's own size limit: 413, with the fix.
    const big = await post("x".repeat(300 * 1024));
    expect(big.status).toBe(413);
    expect(big.json.error).toMatch(/over the limit of 262144 \(fix: fewer services or backends per gateway\)/);
    const series = await send("/api/services/traffic?since=1h");
    expect(((series.json as unknown as TrafficSeries).services ?? []).length).toBe(0);
  });

  it("bad queries: 400 naming each parameter and its fix", async () => {
    const q = async (query: string) => {
      const r = await send(`/api/services/traffic?${query}`);
      expect(r.status, query).toBe(400);
      return r.json;
    };
    expect(await q("since=yesterday")).toEqual({
      error:
        'GET /api/services/traffic: since: got "yesterday" (fix: epoch milliseconds, or a duration back from now like 90s, 15m, 2h)',
      issues: [
        {
          file: "GET /api/services/traffic",
          path: "since",
          line: 0,
          column: 0,
          message: 'got "yesterday"',
          fix: "epoch milliseconds, or a duration back from now like 90s, 15m, 2h",
        },
      ],
    });
    expect((await q("since=100&until=50")).error).toBe(
      "GET /api/services/traffic: until: is not after since (50 <= 100) (fix: give an until later than since, or leave until out (now))",
    );
    expect((await q("step=0")).error).toBe(
      'GET /api/services/traffic: step: got "0" (fix: whole seconds from 1 to 86400, or leave step out (about 180 points over the window))',
    );
    expect((await q("service=")).error).toBe(
      "GET /api/services/traffic: service: is empty (fix: give a service name (see `switchyard services`), or leave service out for all)",
    );
    // Every bad parameter at once, one issue each.
    expect((await q("since=x&until=y&step=1.5")).issues?.map((i) => i.path)).toEqual(["since", "until", "step"]);
    const ok = await send("/api/services/traffic?since=90s");
    expect(ok.status).toBe(200);
  });
});
