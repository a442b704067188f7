import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { FixtureBackend } from "./testing/fixture-backend.js";
import { chat, post, settled, startHarness, type Harness } from "./testing/harness.js";
import {
  BackendDirectory,
  gatewayId,
  parsePrometheusText,
  reportFromMetrics,
  startTrafficReporter,
  trafficLimits,
  trafficReportSchema,
  type TrafficReport,
} from "./report.js";

const id = { gateway: "gw-test", instance: "0123456789abcdef", startedAt: 1000, at: 2000 };

describe("parsePrometheusText", () => {
  it("reads names, escaped label values and special values", () => {
    const text = [
      "# HELP x help",
      "# TYPE x counter",
      'x{a="1",b="quote \\" back\\\\slash \\n nl"} 3',
      "y 4.5",
      'z_bucket{le="+Inf",backend="b"} 7',
      'w{a="x"} +Inf',
      "broken",
      "",
    ].join("\n");
    const s = parsePrometheusText(text);
    expect(s).toEqual([
      { name: "x", labels: { a: "1", b: 'quote " back\\slash \n nl' }, value: 3 },
      { name: "y", labels: {}, value: 4.5 },
      { name: "z_bucket", labels: { le: "+Inf", backend: "b" }, value: 7 },
      { name: "w", labels: { a: "x" }, value: Infinity },
    ]);
  });
});

describe("reportFromMetrics over a real gateway's registry", () => {
  let a: FixtureBackend;
  let b: FixtureBackend;
  let h: Harness;

  beforeAll(async () => {
    a = await FixtureBackend.start("a");
    b = await FixtureBackend.start("b");
    h = await startHarness({ preferred: [a], fallback: [b] }, { ejectAfterFailures: 100, stallTimeoutMs: 300 });
  });
  afterAll(async () => {
    await h.close();
    await a.close();
    await b.close();
  });

  it("counts answered, failed over, cut and refused requests per service and pool, with TTFT buckets", async () => {
    // Two streams answered by the preferred pool.
    for (let i = 0; i < 2; i++) expect((await post(`${h.url}/v1/chat/completions`, chat("m", true))).status).toBe(200);
    // One the preferred pool fails before the first byte (500): the fallback pool answers it.
    a.behaviour.fault = "status500";
    const saved = await post(`${h.url}/v1/chat/completions`, chat("m", true));
    expect(saved.status).toBe(200);
    expect(saved.body).toContain("[DONE]");
    // One cut mid-stream by the fallback after the preferred failed again: incomplete, with an in-band error.
    b.behaviour.fault = "cutMidStream";
    const cut = await post(`${h.url}/v1/chat/completions`, chat("m", true));
    expect(cut.body).not.toMatch(/\[DONE\]\s*$/);
    a.behaviour.fault = "none";
    b.behaviour.fault = "none";
    // An unknown model: refused by the gateway itself.
    expect((await post(`${h.url}/v1/chat/completions`, chat("nope"))).status).toBe(404);
    await settled(h.gateway);

    const r = reportFromMetrics(await h.gateway.metrics.registry.metrics(), id);
    expect(trafficReportSchema.safeParse(r).success).toBe(true);
    const preferred = r.pools.find((p) => p.service === "m" && p.pool === "preferred");
    const fallback = r.pools.find((p) => p.service === "m" && p.pool === "fallback");
    expect(preferred).toMatchObject({ answered: 2, failed: 0, incomplete: 0 });
    expect(preferred!.errors.status_5xx).toBe(2);
    expect(fallback).toMatchObject({ answered: 1, incomplete: 1 });
    expect(Object.values(fallback!.errors).reduce((x, y) => x + y, 0)).toBe(1);
    const svc = r.services.find((s) => s.service === "m")!;
    expect(svc.retries).toBe(2);
    expect(svc.exhausted).toBe(0);
    // Counted per request: the stream the fallback answered is saved (and caught); the one it cut is not.
    expect([svc.saved, svc.caught]).toEqual([1, 1]);
    expect(svc.failovers).toEqual([{ from: "preferred", to: "fallback", n: 2 }]);
    expect(Object.values(r.rejected).reduce((x, y) => x + y, 0)).toBe(1);
    // TTFT: cumulative buckets, +Inf last: every stream that started counts there.
    expect(r.ttftLe.length).toBeGreaterThan(5);
    expect(preferred!.ttft.length).toBe(r.ttftLe.length + 1);
    expect(preferred!.ttft[r.ttftLe.length]).toBe(2);
    expect(fallback!.ttft[r.ttftLe.length]).toBe(2);
  });

  it("counts a request saved once however many attempts failed before it (retries would say 2)", async () => {
    const x = await FixtureBackend.start("x");
    const y = await FixtureBackend.start("y");
    const z = await FixtureBackend.start("z");
    const g = await startHarness({ preferred: [x, y], fallback: [z] }, { ejectAfterFailures: 100 });
    try {
      x.behaviour.fault = "status500";
      y.behaviour.fault = "status500";
      const r1 = await post(`${g.url}/v1/chat/completions`, chat("m", false));
      expect(r1.status).toBe(200);
      await settled(g.gateway);
      const svc = reportFromMetrics(await g.gateway.metrics.registry.metrics(), id).services.find(
        (s) => s.service === "m",
      )!;
      expect(svc.retries).toBe(2);
      expect([svc.saved, svc.caught]).toEqual([1, 0]);
    } finally {
      await g.close();
      await Promise.all([x.close(), y.close(), z.close()]);
    }
  });

  it("keeps a backend's pool after it leaves the set (the directory remembers it)", () => {
    const dir = new BackendDirectory();
    dir.learn(
      parsePrometheusText('switchyard_gateway_backend_state{backend="x",service="s",pool="p",state="healthy"} 1'),
    );
    const r = reportFromMetrics(
      'switchyard_gateway_requests_total{service="s",backend="x",status="200",result="complete"} 5\n' +
        'switchyard_gateway_requests_total{service="s",backend="none",status="503",result="complete"} 2\n' +
        'switchyard_gateway_requests_total{service="s",backend="y",status="502",result="complete"} 1\n',
      id,
      dir,
    );
    expect(r.pools).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ pool: "p", answered: 5 }),
        expect.objectContaining({ pool: "(none)", failed: 2 }),
        expect.objectContaining({ pool: "(unknown)", failed: 1 }),
      ]),
    );
    // 503 without a backend tried nothing; 502 from backend y had tried one.
    expect(r.services[0]!.exhausted).toBe(1);
  });

  it("bounds what it sends: services, reasons", () => {
    const lines: string[] = [];
    for (let i = 0; i < trafficLimits.services + 20; i++)
      lines.push(`switchyard_gateway_retries_total{service="s${i}",reason="connect"} 1`);
    for (let i = 0; i < 50; i++) lines.push(`switchyard_gateway_rejected_total{reason="r${i}"} 1`);
    const r = reportFromMetrics(lines.join("\n"), id);
    expect(r.services.length).toBe(trafficLimits.services);
    expect(Object.keys(r.rejected).length).toBe(trafficLimits.reasons);
    expect(r.rejected.other).toBe(50 - (trafficLimits.reasons - 1));
    expect(trafficReportSchema.safeParse(r).success).toBe(true);
  });

  it("names the gateway host:pid by default, sanitised", () => {
    expect(gatewayId()).toMatch(/^[A-Za-z0-9._:@-]+:\d+$/);
    expect(gatewayId("edge 1/eu")).toBe("edge-1-eu");
  });
});

describe("startTrafficReporter", () => {
  let server: Server | undefined;
  const got: Array<{ auth: string | undefined; report: TrafficReport }> = [];
  let answer = 204;

  async function listen(port = 0): Promise<number> {
    server = createServer((req: IncomingMessage, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString("utf8")));
      req.on("end", () => {
        got.push({ auth: req.headers.authorization, report: JSON.parse(body) as TrafficReport });
        res.writeHead(answer, { "content-type": "application/json" });
        res.end(answer === 204 ? undefined : JSON.stringify({ error: "bad traffic report: pools.0: nope" }));
      });
    });
    await new Promise<void>((r) => server!.listen(port, "127.0.0.1", r));
    return (server!.address() as AddressInfo).port;
  }
  const close = (): Promise<void> =>
    new Promise((r) => {
      if (!server) return r();
      server.closeAllConnections();
      server.close(() => r());
      server = undefined;
    });
  afterEach(async () => {
    got.length = 0;
    answer = 204;
    await close();
  });

  const metrics = (n: number): string =>
    `switchyard_gateway_requests_total{service="s",backend="none",status="503",result="complete"} ${n}\n`;

  it("sends cumulative reports with the bearer token, and a last one when stopped", async () => {
    const port = await listen();
    let n = 1;
    const stop = new AbortController();
    const rep = startTrafficReporter({
      url: `http://127.0.0.1:${port}`,
      token: "tok-0123456789abcdef",
      gateway: "g1",
      metricsText: async () => metrics(n++),
      intervalMs: 200,
      signal: stop.signal,
    });
    while (got.length < 2) await new Promise((r) => setTimeout(r, 20));
    stop.abort();
    await rep.done;
    expect(got.length).toBeGreaterThanOrEqual(3);
    expect(got.every((g) => g.auth === "Bearer tok-0123456789abcdef")).toBe(true);
    const failed = got.map((g) => g.report.pools[0]!.failed);
    expect(failed).toEqual([...failed].sort((x, y) => x - y));
    expect(failed[1]! - failed[0]!).toBe(1);
    expect(new Set(got.map((g) => g.report.instance)).size).toBe(1);
    expect(got[0]!.report.gateway).toBe("g1");
  });

  it("keeps going while the server is away, says so once, and delivers when it is back", async () => {
    const port = await listen();
    await close();
    const warnings: string[] = [];
    const infos: string[] = [];
    const rep = startTrafficReporter({
      url: `http://127.0.0.1:${port}`,
      token: "tok-0123456789abcdef",
      gateway: "g2",
      metricsText: async () => metrics(7),
      intervalMs: 60_000,
      timeoutMs: 1000,
      logger: { warn: (_f, m) => warnings.push(m), info: (_f, m) => infos.push(m) },
    });
    expect(await rep.sendNow()).toBe(false);
    expect(await rep.sendNow()).toBe(false);
    expect(warnings.length).toBe(1);
    expect(warnings[0]).toMatch(/not delivered: the server is unreachable.*serves on/);
    await listen(port);
    expect(await rep.sendNow()).toBe(true);
    expect(infos.some((m) => m.includes("delivered again"))).toBe(true);
    expect(rep.stats()).toMatchObject({ sent: 1, failed: 2 });
    // Cumulative: the one report delivered carries everything counted while the server was away.
    expect(got.map((g) => g.report.pools[0]!.failed)).toEqual([7]);
  });

  it("never has two reports in flight, and reports a refusal with the server's reason", async () => {
    const port = await listen();
    answer = 400;
    const warnings: string[] = [];
    const rep = startTrafficReporter({
      url: `http://127.0.0.1:${port}`,
      token: "tok-0123456789abcdef",
      gateway: "g3",
      metricsText: async () => metrics(1),
      intervalMs: 60_000,
      logger: { warn: (_f, m) => warnings.push(m), info: () => undefined },
    });
    const [x, y] = await Promise.all([rep.sendNow(), rep.sendNow()]);
    expect([x, y]).toEqual([false, false]);
    expect(got.length).toBe(1);
    expect(warnings[0]).toContain("the server answered 400: bad traffic report: pools.0: nope");
  });

  it("a metrics read that fails is not an error of the data plane", async () => {
    const rep = startTrafficReporter({
      url: "http://127.0.0.1:1",
      token: "tok-0123456789abcdef",
      gateway: "g4",
      metricsText: () => Promise.reject(new Error("primary gone")),
      intervalMs: 60_000,
    });
    expect(await rep.sendNow()).toBe(false);
    expect(rep.stats().lastError).toContain("primary gone");
  });
});
