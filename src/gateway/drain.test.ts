/**
 * Graceful stop (SIGTERM): the gateway stops accepting, lets streams in flight finish up to a deadline, then cuts
 * what is left with an in-band error event. The backend is a slow streaming fixture.
 */
import { request } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { FixtureBackend } from "./testing/fixture-backend.js";
import { chat, post, startHarness, type Harness, type RawAnswer } from "./testing/harness.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("drain", () => {
  let a: FixtureBackend | undefined;
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    await a?.close();
  });

  /** Starts a stream and resolves once it is in flight (wrapped: awaiting a bare promise would wait for its end). */
  async function startStream(url: string): Promise<{ answer: Promise<RawAnswer> }> {
    const answer = post(`${url}/v1/chat/completions`, chat("m", true));
    const until = Date.now() + 5000;
    while (h!.gateway.inFlight() === 0 && Date.now() < until) await sleep(5);
    await sleep(100);
    expect(h!.gateway.inFlight()).toBe(1);
    return { answer };
  }

  it("lets a slow stream in flight finish, and accepts nothing new meanwhile", async () => {
    a = await FixtureBackend.start("a", { chunks: 15, chunkDelayMs: 60 }); // about 0.9 s
    h = await startHarness({ main: [a] });
    const inFlight = await startStream(h.url);
    const draining = h.http.drain(10_000);
    await sleep(50);
    // A new connection is refused: the listener is closed.
    await expect(request(`${h.url}/healthz`)).rejects.toThrow();
    const res = await inFlight.answer;
    expect(res.status).toBe(200);
    expect(res.broken).toBe(false);
    expect(res.body).toContain("a-tok14");
    expect(res.body.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(await draining).toEqual({ cut: 0 });
  });

  it("past the deadline, cuts a stream with an in-band gateway_shutdown error event and no [DONE]", async () => {
    a = await FixtureBackend.start("a", { chunks: 200, chunkDelayMs: 50 }); // about 10 s
    h = await startHarness({ main: [a] });
    const inFlight = await startStream(h.url);
    const began = Date.now();
    const result = await h.http.drain(400);
    expect(result).toEqual({ cut: 1 });
    expect(Date.now() - began).toBeLessThan(5000);
    const res = await inFlight.answer;
    expect(res.status).toBe(200);
    expect(res.body).toContain("a-tok0");
    expect(res.body).not.toContain("[DONE]");
    const events = res.body.trimEnd().split("\n\n");
    const last = JSON.parse(events.at(-1)!.replace(/^data: /, "")) as { error: { code: string } };
    expect(last.error.code).toBe("gateway_shutdown");
    // The backend did nothing wrong.
    expect(h.gateway.backend("a")?.consecutiveFailures).toBe(0);
    const metrics = await h.gateway.metrics.registry.metrics();
    expect(metrics).toContain(
      'switchyard_gateway_requests_total{service="m",backend="a",status="200",result="incomplete"} 1',
    );
    expect(metrics).not.toMatch(/upstream_errors_total\{[^}]*reason="shutdown"/);
  });

  it("while draining, a request that still reaches the gateway gets 503 with connection: close; /healthz says draining", async () => {
    a = await FixtureBackend.start("a", { chunks: 20, chunkDelayMs: 50 });
    h = await startHarness({ main: [a] });
    const inFlight = await startStream(h.url);
    // The gateway's own drain, with the listener left open: what a request on an already open connection meets.
    const draining = h.gateway.drain(10_000);
    const late = await post(`${h.url}/v1/chat/completions`, chat());
    expect(late.status).toBe(503);
    expect(late.headers.connection).toBe("close");
    expect((JSON.parse(late.body) as { error: { code: string } }).error.code).toBe("gateway_shutting_down");
    const health = await request(`${h.url}/healthz`);
    expect(health.statusCode).toBe(503);
    expect(((await health.body.json()) as { status: string }).status).toBe("draining");
    expect((await inFlight.answer).body.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(await draining).toEqual({ cut: 0 });
    expect(a.completions).toBe(1);
  });
});
